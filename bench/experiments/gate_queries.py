"""Does the gate need every query? (dev seeds, replayed)

    python -m bench.experiments.gate_queries --seeds 10 ... 21 --gate-queries 16 --draws 20

The gate runs the search's start and both retrievals on every query: three prompts per query, most of a cached
selection's time when a request brings many long queries. The replay decides the gate on a random draw of
``--gate-queries`` of the selection queries (strategy.gate_rows: the engine's own draw, then ``--draws`` - 1 more,
seeded apart) instead of all of them, from sentence_gate.py's records of each query's answers, and compares auto
with it against auto with the gate as it ships (sentence_gate.gated: a skip returns the per-query baseline's test
record, a search the five-candidate replay's pick). It runs nothing.
"""

from __future__ import annotations

import argparse

import numpy as np

from iclsel.models.strategy import gate_rows

from . import sentence_gate
from .dev import by_dataset, dev_parser, journal_records, mean_accuracy, paired_difference, parse_dev_args, \
    read_records, seed_kind


def drawn(record: dict, size: int, draw: int) -> dict:
    """The record as the gate sees it on a draw of ``size`` of its queries (draw 0: the engine's)."""
    queries = len(record["correct"]["start"])
    rows = gate_rows(queries, size, record["seed"] + 1000 * draw)
    return {**record, "embedded": record["embedded"] - queries + len(rows),
            "correct": {name: [answers[i] for i in rows] for name, answers in record["correct"].items()}}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "imdb"], list(range(10, 22)))
    parser.add_argument("--gate-queries", type=int, default=16, help="the queries the gate decides on")
    parser.add_argument("--draws", type=int, default=20, help="random draws of them per split")
    args = parse_dev_args(parser, argv)
    records = [r for r in read_records(sentence_gate.RESULTS) if r["dataset"] in args.datasets
               and r["seed"] in args.seeds]
    print_table(records, journal_records(args.journal), args)
    return 0


def print_table(records: list[dict], journal: dict, args: argparse.Namespace) -> None:
    """Per dataset: auto with the gate as it ships, with the gate on the engine's draw of the queries (its
    difference, paired per test query) and over every draw (the mean, the range of the per-draw means and the share
    of (seed, draw) whose decision, search or the returned retrieval, is the full gate's)."""
    print(f"| dataset | seeds | gate on | auto with the gate | on the engine's draw | minus the full gate | "
          f"over {args.draws} draws: mean (range) | same decision |\n|---|---|---|---|---|---|---|---|")
    for dataset, rows in by_dataset(records):
        full, engine_draw, per_draw = [], [], [[] for _ in range(args.draws)]
        agree = total = 0
        for rec, split in zip(rows, sentence_gate.gated_splits(dataset, rows, journal)):
            whole = split.auto(rec)
            full.append(np.array(whole["correct"], float))
            for draw in range(args.draws):
                mine = split.auto(drawn(rec, args.gate_queries, draw))
                per_draw[draw].append(np.array(mine["correct"], float))
                agree += mine["strategy"] == whole["strategy"]
                total += 1
            engine_draw.append(per_draw[0][-1])
        means = [np.mean([c.mean() for c in draw]) for draw in per_draw]
        print(f"| {dataset} | {seed_kind(rows[0]['seed'])} {rows[0]['seed']}-{rows[-1]['seed']} ({len(rows)}) "
              f"| {args.gate_queries} of {len(rows[0]['correct']['start'])} | {mean_accuracy(full)} "
              f"| {mean_accuracy(engine_draw)} | {paired_difference(engine_draw, full)} "
              f"| {np.mean(means):.3f} ({min(means):.3f}-{max(means):.3f}) | {agree / total:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
