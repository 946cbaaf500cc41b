"""Does a variant of the default's search do as well? auto with a variant's search against auto with the default's,
on dev seeds: a smaller budget (bench/experiments/README.md, the search's budget), random candidate order (FINDINGS,
does the gradient earn its passes).

The runs are the quality benchmark's, with the variant's params (budget: forward-equivalents, 5 exact runs on every
selection query, 32 rows per run on bbc, sms and imdb, 100 on sdg):

    python -m bench.quality --datasets bbc --seeds 10 11 12 13 14 15 --methods gradient-b5 \\
        --variant gradient-b5=gradient:budget=160 --out-dir /tmp/budget --no-plots
    python -m bench.quality --datasets bbc --seeds 10 11 12 13 14 15 --methods gradient-random \\
        --variant gradient-random=gradient:order=random --out-dir /tmp/order --no-plots
    python -m bench.experiments.search_variant --runs /tmp/budget/quality_runs.jsonl /tmp/order/quality_runs.jsonl

The second command copies the variants' records into bench/experiments/results/search_variant.jsonl and prints,
per dataset and variant: auto with the default search (the journal's dev run, replayed under the current rules: the
set, topk-embed and the hybrid from hybrid_candidate's records, accuracy ties to the earlier; nothing re-runs), auto
with the variant's, their paired difference with a 95% bootstrap interval (seeds and test queries resampled), the
strategies each picked, and the selection passes of both against exact's (64 random subsets, each run on every
selection query).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..quality import BENCH_DIR
from .dev import (JOURNAL, append_new, journal_records, mean_accuracy, paired_difference, read_records,
                  strategy_tests)
from .hybrid_candidate import RETIRED, by_split, replay

RESULTS = BENCH_DIR / "experiments" / "results" / "search_variant.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="quality journals holding the variant's runs")
    parser.add_argument("--journal", type=Path, default=JOURNAL)
    args = parser.parse_args(argv)
    append_new(RESULTS, (record for path in args.runs for record in read_records(path) if record["seed"] >= 10))
    print_table(read_records(RESULTS), journal_records(args.journal))
    return 0


def print_table(records: list[dict], journal: dict) -> None:
    hybrids = by_split()
    print("| dataset | variant | seeds | auto, default search | auto, variant (diff) | picks default / variant "
          "| passes / exact's: default, variant |\n|---|---|---|---|---|---|---|")
    for dataset, method in dict.fromkeys((r["dataset"], r["method"]) for r in records):
        rows = sorted((r for r in records if (r["dataset"], r["method"]) == (dataset, method)
                       and (dataset, r["seed"]) in hybrids), key=lambda r: r["seed"])
        exact = next(r["passes"] for (d, _, m), r in journal.items() if (d, m) == (dataset, "exact"))
        default, variant, picks, ratios = [], [], [], []
        for rec in rows:
            gradient, hybrid = journal[(dataset, rec["seed"], "gradient")], hybrids[(dataset, rec["seed"])]
            pick = replay(gradient, hybrid, tie="order", drop=RETIRED)
            tests = strategy_tests(journal, dataset, rec["seed"], hybrid)
            default.append(np.array(tests[pick]["correct"], float))
            variant.append(np.array(rec["correct"], float))
            picks.append(f"{pick}/{rec['strategy']['chosen']}")
            # the journal's run checked the retired retrievals where auto now checks the hybrid: the same rows
            ratios.append((gradient["passes"] / exact, rec["passes"] / exact))
        seeds = " ".join(str(r["seed"]) for r in rows)
        print(f"| {dataset} | {method} | {seeds} | {mean_accuracy(default)} | {mean_accuracy(variant)} ({paired_difference(variant, default)}) "
              f"| {', '.join(picks)} | {np.mean([a for a, _ in ratios]):.2f}, {np.mean([b for _, b in ratios]):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
