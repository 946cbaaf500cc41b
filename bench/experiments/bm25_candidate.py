"""Does auto need BM25 among its candidates?

    python -m bench.experiments.bm25_candidate --datasets imdb bbc sms sdg --seeds 10 11 12 13 14 15

Auto checked four candidates (set, topk-embed, bm25, hybrid) on 32 held-out pool demos and returned the most
accurate, a tie going to the earlier; it now checks three (iclsel/contract.py DEFAULT_COMPARE). Every extra
candidate is one more chance for a lucky check to win a coin toss. Replayed here from the records of the
four-candidate runs (no model runs): the quality benchmark's journal (the default gradient run's checks and the
per-query baselines' test records; its dev-seed runs are four-candidate ones) and hybrid_candidate.py's records
(the hybrid's check and test record), auto's pick with and without BM25. A pick's test accuracy is that
strategy's on the seed's test queries. Dev seeds only (10 and above). Prints the table; writes nothing.
"""

from __future__ import annotations

import numpy as np

from . import hybrid_candidate
from .dev import (dev_parser, journal_records, mean_accuracy, paired_difference, parse_dev_args, seed_kind,
                  strategy_tests)

DROPPED = ("bm25",)


def main(argv: list[str] | None = None) -> int:
    args = parse_dev_args(dev_parser(__doc__.splitlines()[0], ["imdb", "bbc", "sms", "sdg"],
                                     [10, 11, 12, 13, 14, 15]), argv)
    print_table(args, journal_records(args.journal), hybrid_candidate.by_split())
    return 0


def print_table(args, journal: dict, hybrids: dict) -> None:
    """Per dataset: auto's test accuracy with its four candidates and without BM25, the paired difference with
    a 95% bootstrap interval (seeds and test queries resampled), and the seeds whose pick changed."""
    print("| dataset | seeds | auto (4 candidates) | without bm25 (difference) | picks changed (today -> without) |\n"
          "|---|---|---|---|---|")
    for dataset in args.datasets:
        seeds = [s for s in args.seeds if (dataset, s, "gradient") in journal and (dataset, s) in hybrids]
        today, without, changed = [], [], []
        for seed in seeds:
            gradient, hybrid = journal[(dataset, seed, "gradient")], hybrids[(dataset, seed)]
            tests = strategy_tests(journal, dataset, seed, hybrid)
            picks = [hybrid_candidate.replay(gradient, hybrid, tie="order", drop=drop) for drop in ((), DROPPED)]
            today.append(np.array(tests[picks[0]]["correct"], float))
            without.append(np.array(tests[picks[1]]["correct"], float))
            if picks[0] != picks[1]:
                changed.append(f"{seed}: {picks[0]} {today[-1].mean():.3f} -> {picks[1]} {without[-1].mean():.3f}")
        if seeds:
            print(f"| {dataset} | {seed_kind(seeds[0])} {' '.join(map(str, seeds))} | {mean_accuracy(today)} | "
                  f"{mean_accuracy(without)} ({paired_difference(without, today)}) | {'; '.join(changed) or 'none'} |")


if __name__ == "__main__":
    raise SystemExit(main())
