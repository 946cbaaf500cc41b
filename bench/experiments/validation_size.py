"""Does auto choose better with more held-out demos? Auto validates set, topk-embed and bm25 on
``params.validation`` (32) pool demos outside the searched set; a 32-demo check is noisy (accuracies tie often,
and the loss then decides).

    python -m bench.experiments.validation_size --datasets sms bbc --seeds 10 11 12 13 14 15

Dev seeds only (10 and above). From the quality benchmark's journal (bench/results/quality_runs.jsonl) it takes
each default `gradient` record's searched set, runs the three strategies' prompts, as auto runs them, on every
pool demo outside the set, and replays auto's choice at each validation size on the rows auto would draw at that
size (held_out's label-balanced draws are nested: the rows at 32 begin the rows at 64). The size-32 replay must
reproduce the journal's choice. A choice's test accuracy is that strategy's on the seed's test queries (the
searched set's, or the per-query baselines'). Appends one record per (dataset, seed) to
bench/experiments/results/validation_size.jsonl (a resume skips what is there) and prints the table.
"""

from __future__ import annotations

import numpy as np
import torch

from iclsel.models.inference import PassCounter
from iclsel.models.strategy import PER_QUERY, Check, Neighbours, choose

from ..protocol import SEPARATOR
from ..quality import BENCH_DIR, default_engine_factory
from .dev import (AutoView, append_measured, by_dataset, dev_parser, mean_accuracy, pending,
                  paired_difference, parse_dev_args, replay_main, strategy_tests)

RESULTS = BENCH_DIR / "experiments" / "results" / "validation_size.jsonl"
SIZES = (32, 64, None)  # None: every pool demo outside the set


def measure(engine, view: AutoView, spec) -> dict:
    """Per strategy, correct [V] and loss [V] on every held-out row (pool order), and the rows auto draws at
    each size."""
    pool = view.split.pool
    rows = view.held_out(None)
    validation = [pool[i] for i in rows]
    gold = torch.tensor([view.options.index(d.output) for d in validation])
    counter = PassCounter()
    neighbours = Neighbours(engine, pool, counter)
    prompts = {"set": [pool[i] for i in view.searched]}
    for by in PER_QUERY:
        nearest = neighbours.nearest([d.input for d in validation], by, spec.k, itself=rows)
        prompts[by] = [[pool[i] for i in ids] for ids in nearest]
    checks = {}
    for name, demos in prompts.items():
        check = Check.of(name, engine.scores(demos, validation, view.options, spec.template, SEPARATOR, None,
                                             counter), gold)
        checks[name] = {"correct": check.correct.tolist(), "loss": check.loss.tolist()}
    return {"rows": rows, "checks": checks, "outside": len(rows),
            "drawn": {str(size): view.held_out(size) for size in SIZES if size is not None}}


def choice(record: dict, size: int | None) -> str:
    """Auto's choice on the rows it would draw at ``size`` (None: every held-out row)."""
    position = {row: i for i, row in enumerate(record["rows"])}
    keep = [position[row] for row in (record["rows"] if size is None else record["drawn"][str(size)])]
    checks = [Check(name, np.array(c["correct"])[keep], np.array(c["loss"])[keep])
              for name, c in record["checks"].items()]
    return choose(checks, record["seed"])[0].strategy


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["sms", "bbc", "sdg"], [10, 11, 12, 13, 14, 15])
    return replay_main(parse_dev_args(parser, argv), RESULTS, run, print_table)


def run(args, journal: dict) -> None:
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS):
        gradient = journal[(dataset, seed, "gradient")]
        record = append_measured(RESULTS, {"dataset": dataset, "seed": seed},
                                 lambda: measure(new_engine(), AutoView.of(split, options, gradient), spec))
        print(f"{dataset} {seed}: " + ", ".join(f"{size or 'all'} -> {choice(record, size)}" for size in SIZES)
              + f" (the run chose {gradient['strategy']['chosen']})", flush=True)


def print_table(records: list[dict], journal: dict) -> None:
    """Per dataset and size: auto's mean test accuracy when it chooses on that many held-out demos, its
    difference from the size-32 choice (paired per test query, 95% bootstrap interval) and the choices made."""
    print("| dataset | seeds | held-out demos | choices | auto | minus size 32 |\n|---|---|---|---|---|---|")
    for dataset, rows in by_dataset(records):
        tests = [strategy_tests(journal, dataset, rec["seed"]) for rec in rows]
        for rec in rows:
            ran = journal[(dataset, rec["seed"], "gradient")]["strategy"]["chosen"]
            if choice(rec, 32) != ran:
                print(f"  {dataset} {rec['seed']}: the size-32 replay picks {choice(rec, 32)}, the run {ran}")
        base = [np.array(t[choice(rec, 32)]["correct"], float) for rec, t in zip(rows, tests)]
        for size in SIZES:
            picked = [choice(rec, size) for rec in rows]
            got = [np.array(t[p]["correct"], float) for p, t in zip(picked, tests)]
            outside = "/".join(sorted({str(rec["outside"]) for rec in rows})) if size is None else str(size)
            print(f"| {dataset} | {' '.join(str(rec['seed']) for rec in rows)} | {outside} | "
                  f"{' '.join(p[:3] for p in picked)} | {mean_accuracy(got)} | {paired_difference(got, base)} |")


if __name__ == "__main__":
    raise SystemExit(main())
