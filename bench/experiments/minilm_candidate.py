"""Would per-query retrieval by a sentence-embedding model earn a place among auto's candidates?

    python -m bench.experiments.minilm_candidate --datasets sdg sms bbc imdb --seeds 10 11 12 13 14 15 16 17

The candidate, `topk-minilm`: each query's k nearest pool demos (best last) by all-MiniLM-L6-v2, a 22M-parameter
sentence-embedding model (strategy "topk-sentence" with the default sentence model), in place of the default
model's own mean-pooled hidden states. (The records were made by an earlier form of these scripts that ran the
model through transformers with the same pooling; on 8 dev splits its neighbours equal topk-sentence's, the
similarities within 5e-7.) Per dev seed (10 and above) whose default gradient run and hybrid record (hybrid_candidate.py) the
records hold, it measures the candidate twice:

    check     on auto's own held-out validation demos (the rows auto drew, each demo's k nearest other pool
              demos, scored as auto scores them; the searched set's check is re-run beside it and must match
              the journal's, or the seed is skipped)
    test      on the seed's test queries (retrieval_variants.py's "minilm" record where it exists)

and replays auto's choice (the most accurate check, an accuracy tie to the earlier of set, topk-embed, hybrid,
topk-minilm) with and without it. A pick's test accuracy is that strategy's on the seed's test queries. Appends
one record per (dataset, seed) to bench/experiments/results/minilm_candidate.jsonl (a resume skips what is there)
and prints the table.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from iclsel.models.inference import PassCounter
from iclsel.models.strategy import HYBRID, SENTENCE, Check, Neighbours

from ..protocol import SEPARATOR
from ..quality import BENCH_DIR, _evaluate, default_engine_factory
from . import hybrid_candidate, retrieval_variants
from .dev import (AutoView, append_record, dev_parser, dev_splits, has_default_run, mean_accuracy,
                  paired_difference, parse_dev_args, read_records, replay_main, seed_kind, set_check_matches,
                  strategy_tests)

RESULTS = BENCH_DIR / "experiments" / "results" / "minilm_candidate.jsonl"
MINILM = "topk-minilm"
ORDER = ("set", "topk-embed", HYBRID, MINILM)  # auto's candidates in the order it would check them


def measure(engine, view: AutoView, spec, options, gradient: dict, tested: dict | None) -> dict | None:
    """The candidate's check on auto's validation rows and its test record; None when the set's re-run check
    does not match the journal's."""
    pool, split = view.split.pool, view.split
    rows = view.held_out(hybrid_candidate.VALIDATION)
    validation = [pool[i] for i in rows]
    gold = torch.tensor([view.options.index(d.output) for d in validation])

    def check(name, demos) -> Check:
        return Check.of(name, engine.scores(demos, validation, view.options, spec.template, SEPARATOR, None,
                                            PassCounter()), gold)

    if not set_check_matches(check("set", [pool[i] for i in view.searched]), gradient):
        return None
    neighbours = Neighbours(engine, pool, PassCounter())
    nearest = neighbours.nearest([d.input for d in validation], SENTENCE, spec.k, itself=rows)
    candidate = check(MINILM, [[pool[i] for i in ids] for ids in nearest])
    if tested is None:
        nearest = neighbours.nearest([q.input for q in split.test], SENTENCE, spec.k)
        tested = _evaluate(engine, [[pool[i] for i in ids] for ids in nearest], split, spec.template, options)
    return {"check": {"accuracy": candidate.accuracy, "loss": float(candidate.loss.mean())},
            "accuracy": tested["accuracy"], "correct": tested["correct"]}


def replay(gradient: dict, hybrid: dict, candidate: dict | None) -> str:
    """Auto's pick from the journal's checks (BM25 dropped, as auto runs now), the hybrid's and, given its record,
    topk-minilm's: the best accuracy, a tie to the earlier in ORDER."""
    checks = [(c["strategy"], c["accuracy"]) for c in gradient["strategy"]["checks"] if c["strategy"] in ORDER]
    checks.append((HYBRID, hybrid["check"]["accuracy"]))
    if candidate is not None:
        checks.append((MINILM, candidate["check"]["accuracy"]))
    return min(checks, key=lambda c: (-c[1], ORDER.index(c[0])))[0]


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["sdg", "sms", "bbc", "imdb"], [10, 11, 12, 13, 14, 15, 16, 17])
    return replay_main(parse_dev_args(parser, argv), RESULTS, run, print_table)


def run(args, journal: dict) -> None:
    done = {(r["dataset"], r["seed"]) for r in read_records(RESULTS)}
    hybrids = hybrid_candidate.by_split()
    minilm_tests = {(r["dataset"], r["seed"]): r for r in read_records(retrieval_variants.RESULTS)
                    if r["variant"] == "minilm"}
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
        if ((dataset, seed) in done or not has_default_run(journal, dataset, seed)
                or (dataset, seed) not in hybrids):
            continue
        gradient = journal[(dataset, seed, "gradient")]
        started = time.perf_counter()
        measured = measure(new_engine(), AutoView.of(split, options, gradient), spec, options, gradient,
                           minilm_tests.get((dataset, seed)))
        if measured is None:
            continue
        record = {"dataset": dataset, "seed": seed, **measured, "seconds": round(time.perf_counter() - started, 1)}
        append_record(RESULTS, record)
        print(f"{dataset} {seed}: {MINILM} check {record['check']['accuracy']:.3f} test {record['accuracy']:.3f}",
              flush=True)


def print_table(records: list[dict], journal: dict) -> None:
    """Per dataset: auto as it is (replayed), auto with topk-minilm, topk-minilm alone against topk-embed per
    query; differences paired per test query with 95% bootstrap intervals (seeds and test queries resampled)."""
    hybrids = hybrid_candidate.by_split()
    print(f"| dataset | seeds | auto | auto + {MINILM} (diff) | picks it | {MINILM} alone | alone - topk-embed pq "
          f"| changed picks |\n|---|---|---|---|---|---|---|---|")
    for dataset in dict.fromkeys(rec["dataset"] for rec in records):
        rows = sorted((rec for rec in records if rec["dataset"] == dataset), key=lambda x: x["seed"])
        auto, replayed, alone, topk, changed, picks = [], [], [], [], [], 0
        for rec in rows:
            gradient, hybrid = journal[(dataset, rec["seed"], "gradient")], hybrids[(dataset, rec["seed"])]
            tests = {**strategy_tests(journal, dataset, rec["seed"], hybrid), MINILM: rec}
            before, after = replay(gradient, hybrid, None), replay(gradient, hybrid, rec)
            picks += after == MINILM
            auto.append(np.array(tests[before]["correct"], float))
            replayed.append(np.array(tests[after]["correct"], float))
            alone.append(np.array(rec["correct"], float))
            topk.append(np.array(tests["topk-embed"]["correct"], float))
            if before != after:
                changed.append(f"{rec['seed']}: {before} {auto[-1].mean():.3f} -> {after} {replayed[-1].mean():.3f}")
        seeds = f"{seed_kind(rows[0]['seed'])} " + " ".join(str(rec["seed"]) for rec in rows)
        print(f"| {dataset} | {seeds} | {mean_accuracy(auto)} | {mean_accuracy(replayed)} "
              f"({paired_difference(replayed, auto)}) | {picks}/{len(rows)} | "
              f"{mean_accuracy(alone)} | {paired_difference(alone, topk)} | {'; '.join(changed) or 'none'} |")


if __name__ == "__main__":
    raise SystemExit(main())
