"""Per-query retrieval: the k nearest demos in similarity order against vote order (dev seeds).

    python -m bench.experiments.vote_order --datasets bbc sms sdg imdb --seeds 10 11 12 13 14 15 16 17

Each test query's k nearest pool demos (the per-query baselines' retrieval) run twice on the test queries: in
similarity order (the nearest last: the baselines, and auto before `params.neighbour_order`) and in vote order
(iclsel/contract.py majority_last: the same demos, the label most of them carry last). Appends one record per
split to bench/experiments/results/vote_order.jsonl (each order's correct [T] per retrieval, and how many test
queries' demos it reordered) and prints vote minus similarity per dataset, paired per test query with 95% bootstrap
intervals (seeds and test queries resampled).
"""

from __future__ import annotations

import numpy as np
import torch

from iclsel.models.inference import PassCounter
from iclsel.models.layout import resolve_options
from iclsel.contract import majority_last
from iclsel.models.strategy import SENTENCE, Check, Neighbours

from ..protocol import SEPARATOR
from ..quality import BENCH_DIR, default_engine_factory
from .dev import (append_measured, by_dataset, dev_parser, mean_accuracy, paired_difference, parse_dev_args,
                  pending, replay_main)

RESULTS = BENCH_DIR / "experiments" / "results" / "vote_order.jsonl"
ORDERS = ("similarity", "vote")


def measure(engine, split, spec, options, retrievals: list[str], orders: tuple[str, ...] = ORDERS) -> dict:
    """Per retrieval and order (of ``orders``), correct [T] of the per-query prompts on the test queries."""
    neighbours = Neighbours(engine, split.pool, PassCounter())
    resolved = resolve_options(split.pool, split.test, options)
    gold = torch.tensor([resolved.index(q.output) for q in split.test])
    labels = [d.output for d in split.pool]
    record = {}
    for by in retrievals:
        nearest = neighbours.nearest([q.input for q in split.test], by, spec.k)  # similarity order
        ordered = {"similarity": nearest, "vote": [majority_last(ids, labels) for ids in nearest]}
        for order in orders:
            rows = ordered[order]
            scores = engine.scores([[split.pool[i] for i in ids] for ids in rows], split.test, resolved,
                                   spec.template, SEPARATOR, None, PassCounter())
            record[f"{by}/{order}"] = Check.of(by, scores, gold).correct.astype(int).tolist()
        record[f"{by}/reordered"] = sum(a != b for a, b in zip(ordered["similarity"], ordered["vote"]))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "sdg", "imdb"], list(range(10, 18)))
    parser.add_argument("--retrievals", nargs="+", default=[SENTENCE, "topk-embed"], choices=[SENTENCE, "topk-embed"])
    args = parse_dev_args(parser, argv)
    return replay_main(args, RESULTS, lambda a, journal: run(a), lambda records, journal: print_table(
        [r for r in records if r["dataset"] in args.datasets and r["seed"] in args.seeds]))


def run(args) -> None:
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, {}, RESULTS, needs_default_run=False):
        record = append_measured(RESULTS, {"dataset": dataset, "seed": seed},
                                 lambda: measure(new_engine(), split, spec, options, args.retrievals))
        print(f"{dataset} {seed}: " + ", ".join(f"{key} {np.mean(value):.3f}" for key, value in record.items()
                                                 if isinstance(value, list)), flush=True)


def print_table(records: list[dict]) -> None:
    print("| dataset | retrieval | seeds | similarity order | vote order | vote minus similarity | reordered |\n"
          "|---|---|---|---|---|---|---|")
    for dataset, rows in by_dataset(records):
        for by in (SENTENCE, "topk-embed"):
            measured = [rec for rec in rows if f"{by}/vote" in rec]
            if not measured:
                continue
            similarity, vote = ([np.array(rec[f"{by}/{order}"], float) for rec in measured] for order in ORDERS)
            reordered = np.mean([rec[f"{by}/reordered"] / len(rec[f"{by}/vote"]) for rec in measured])
            seeds = ", ".join(str(rec["seed"]) for rec in measured)
            print(f"| {dataset} | {by} | {seeds} | {mean_accuracy(similarity)} | {mean_accuracy(vote)} | "
                  f"{paired_difference(vote, similarity)} | {reordered:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
