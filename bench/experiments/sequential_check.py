"""Does auto choose better when candidates close on the 32 held-out demos are checked on the rest?

    python -m bench.experiments.sequential_check --datasets imdb bbc sms sdg --seeds 10 11 12 13 14 15

Auto checks its four candidates (set, topk-embed, bm25, hybrid) on ``params.validation`` (32) held-out pool
demos; on 32 demos two candidates a few answers apart are a coin toss. The rule measured here ("sequential"):
the candidates within ``CLOSE`` correct answers of the leader on the 32 are also run on every other held-out
demo, and the choice is made on all rows each contender ran (the leader alone: returned at once). Also replayed:
"margin" (the earliest candidate at most one answer below the best on the 32) and "all" (every candidate on every
held-out demo).

Dev seeds only (10 and above). For each dataset and seed with the journal's default gradient run, both per-query
baselines and a hybrid record (hybrid_candidate.py: the hybrid's test queries), it runs the four candidates'
prompts, as auto runs them, on every pool demo outside the searched set (set, topk-embed and bm25 are taken from
validation_size.py's records where those exist) and replays: the choice on the 32 rows auto draws (it must
reproduce the journal's, hybrid included), the sequential choice, and every candidate on every row. A pick's test
accuracy is that strategy's on the seed's test queries. Appends one record per (dataset, seed) to
bench/experiments/results/sequential_check.jsonl (a resume skips what is there) and prints the table.
"""

from __future__ import annotations

import time

import numpy as np

from iclsel.models.inference import PassCounter
from iclsel.models.strategy import HYBRID, Check, Neighbours, choose

from ..quality import BENCH_DIR, default_engine_factory
from . import hybrid_candidate, validation_size
from .dev import (AutoView, append_record, by_dataset, dev_parser, mean_accuracy, pending,
                  paired_difference, parse_dev_args, records_by_split, replay_main, strategy_tests)

RESULTS = BENCH_DIR / "experiments" / "results" / "sequential_check.jsonl"
FIRST = 32  # the rows auto checks every candidate on (params.validation's default)
CLOSE = 3  # a candidate at most this many correct answers below the leader on the first rows is a contender


def measure(engine, view: AutoView, spec, known: dict | None) -> dict:
    """Per candidate, correct [V] and loss [V] on every held-out row (pool order); set, topk-embed and bm25 from
    ``known`` (a validation_size record of this split) when given."""
    measured = known or validation_size.measure(engine, view, spec)
    rows = measured["rows"]
    counter = PassCounter()
    hybrid = hybrid_candidate.hybrid_check(engine, view, spec, Neighbours(engine, view.split.pool, counter), rows,
                                           spec.k // 2, counter)
    checks = {**measured["checks"], HYBRID: {"correct": hybrid.correct.tolist(), "loss": hybrid.loss.tolist()}}
    return {"rows": rows, "outside": len(rows), "drawn": {str(FIRST): view.held_out(FIRST)},
            "checks": {name: checks[name] for name in hybrid_candidate.ORDER}}


def _checks(record: dict, names, keep: list[int]) -> list[Check]:
    return [Check(name, np.array(record["checks"][name]["correct"])[keep],
                  np.array(record["checks"][name]["loss"])[keep]) for name in names]


def replay(record: dict, rule: str) -> tuple[str, int]:
    """(auto's pick, the check rows it ran beyond the first FIRST per candidate) under ``rule``: "first" (every
    candidate on the FIRST drawn rows: auto as it is), "margin" (on those rows, the earliest candidate at most one
    answer below the best), "sequential" or "all" (every candidate on every row)."""
    position = {row: i for i, row in enumerate(record["rows"])}
    first = [position[row] for row in record["drawn"][str(FIRST)]]
    names = list(record["checks"])
    if rule == "all":
        return choose(_checks(record, names, list(range(len(record["rows"])))), record["seed"])[0].strategy, \
            len(names) * (len(record["rows"]) - len(first))
    checks = _checks(record, names, first)
    if rule == "margin":  # the earliest candidate at most one correct answer below the best
        best = max(c.correct.sum() for c in checks)
        return next(c.strategy for c in checks if c.correct.sum() >= best - 1), 0
    leader = choose(checks, record["seed"])[0]
    contenders = [c.strategy for c in checks if leader.correct.sum() - c.correct.sum() <= CLOSE]
    if rule == "first" or len(contenders) == 1:
        return leader.strategy, 0
    every = list(range(len(record["rows"])))
    return choose(_checks(record, contenders, every), record["seed"])[0].strategy, \
        len(contenders) * (len(every) - len(first))


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["imdb", "bbc", "sms", "sdg"], [10, 11, 12, 13, 14, 15])
    return replay_main(parse_dev_args(parser, argv), RESULTS, run, print_table)


def run(args, journal: dict) -> None:
    known = records_by_split(validation_size.RESULTS)
    hybrids = hybrid_candidate.by_split()
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS):
        if (dataset, seed) not in hybrids:
            continue
        gradient = journal[(dataset, seed, "gradient")]
        started = time.perf_counter()
        measured = measure(new_engine(), AutoView.of(split, options, gradient), spec, known.get((dataset, seed)))
        record = {"dataset": dataset, "seed": seed, **measured, "seconds": round(time.perf_counter() - started, 1)}
        append_record(RESULTS, record)
        print(f"{dataset} {seed}: first {replay(record, 'first')[0]}, sequential {replay(record, 'sequential')}, "
              f"all {replay(record, 'all')[0]} (the journal's run + hybrid: "
              f"{hybrid_candidate.replay(gradient, hybrids[(dataset, seed)], tie='order')})", flush=True)


def print_table(records: list[dict], journal: dict) -> None:
    """Per dataset and rule: the picks, auto's mean test accuracy, its difference from the first-rows choice
    (paired per test query, 95% bootstrap interval) and the mean extra check rows per query row."""
    hybrids = hybrid_candidate.by_split()
    print("| dataset | seeds | rule | picks | auto | minus first 32 | extra checks (demos x candidates) |\n|---|---|---|---|---|---|---|")
    for dataset, rows in by_dataset(records):
        tests = [strategy_tests(journal, dataset, rec["seed"], hybrids[(dataset, rec["seed"])])
                 for rec in rows]
        for rec in rows:
            ran = hybrid_candidate.replay(journal[(dataset, rec["seed"], "gradient")], hybrids[(dataset, rec["seed"])],
                                          tie="order")
            if replay(rec, "first")[0] != ran:
                print(f"  {dataset} {rec['seed']}: the first-rows replay picks {replay(rec, 'first')[0]}, the "
                      f"journal's checks {ran}")
        base = [np.array(t[replay(rec, "first")[0]]["correct"], float) for rec, t in zip(rows, tests)]
        for rule in ("first", "margin", "sequential", "all"):
            picked = [replay(rec, rule) for rec in rows]
            got = [np.array(t[p]["correct"], float) for (p, _), t in zip(picked, tests)]
            print(f"| {dataset} | {' '.join(str(rec['seed']) for rec in rows)} | {rule} | "
                  f"{' '.join(p for p, _ in picked)} | {mean_accuracy(got)} | {paired_difference(got, base)} | "
                  f"{np.mean([extra for _, extra in picked]):.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())
