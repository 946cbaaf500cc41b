"""Summed against length-normalised scores of multi-token options (request.option_score), from the journal.

    python -m bench.option_score            # sdg: dev seeds 10-17 (the decision) and test seeds 0-7 (report)

Pairs each method's records scored with option_score "mean" and "sum" on the same dataset, seed and test queries
(the latest record of each in results/quality_runs.jsonl, full protocol, default params) and reports the mean
accuracy of both and the paired difference with a 95% bootstrap interval (seeds and test queries resampled).
Writes results/option_score.json and prints a markdown table. Runs no model: the records come from
`python -m bench.quality --datasets sdg --seeds S --methods M --option-score {sum,mean}`.
"""

from __future__ import annotations

import argparse
from statistics import mean

import numpy as np

from .quality import RESULTS_DIR, read_journal
from .report import _bootstrap_mean, write_json

METHODS = ("gradient", "topk-embed-per-query", "bm25-per-query")
SEED_SETS = {"dev": list(range(10, 18)), "test": list(range(8))}


def latest(journal: dict[str, dict], dataset: str) -> dict[tuple, dict]:
    """(seed, method, option_score) -> the journal's last full-protocol, default-params record."""
    found = {}
    for record in journal.values():  # journal order: a later record of the same key wins
        if record.get("dataset") == dataset and not record.get("quick") and not record.get("params"):
            found[(record["seed"], record["method"], record.get("option_score", "sum"))] = record
    return found


def compare(found: dict[tuple, dict], method: str, seeds: list[int]) -> dict | None:
    pairs = [(found[(s, method, "mean")], found[(s, method, "sum")]) for s in seeds
             if (s, method, "mean") in found and (s, method, "sum") in found]
    if not pairs:
        return None
    gaps = [[a - b for a, b in zip(m["correct"], s["correct"])] for m, s in pairs]
    return {"seeds": [m["seed"] for m, _ in pairs], "mean": mean(m["accuracy"] for m, _ in pairs),
            "sum": mean(s["accuracy"] for _, s in pairs),
            "diff": mean(m["accuracy"] - s["accuracy"] for m, s in pairs),
            "diff_ci95": _bootstrap_mean(gaps, np.random.default_rng(0))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="sdg")
    args = parser.parse_args(argv)
    found = latest(read_journal(RESULTS_DIR / "quality_runs.jsonl"), args.dataset)
    out = {name: {method: compare(found, method, seeds) for method in METHODS} for name, seeds in SEED_SETS.items()}
    write_json(RESULTS_DIR / "option_score.json", {"dataset": args.dataset, **out})
    print("| seeds | method | sum | mean | mean - sum [95% CI] |\n|---|---|---|---|---|")
    for name, rows in out.items():
        for method, row in rows.items():
            if row:
                low, high = row["diff_ci95"]
                print(f"| {name} {row['seeds'][0]}-{row['seeds'][-1]} | {method} | {row['sum']:.3f} | {row['mean']:.3f} "
                      f"| {row['diff']:+.3f} [{low:+.3f}, {high:+.3f}] |")
    return out


if __name__ == "__main__":
    main()
