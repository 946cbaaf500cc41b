"""What does a request parameter give in the natural prompt? A variant of the default against it (dev seeds)

    python -m bench.quality --threads 1 --methods gradient-r2 --variant gradient-r2=gradient:retrieve=2 \\
        --datasets bbc sms imdb --seeds 10 11 12 13 --out-dir R --no-plots
    python -m bench.quality --threads 1 --methods gradient-same-label \\
        --variant gradient-same-label=gradient:moves=same-label --datasets imdb --seeds 10 12 13 --out-dir S --no-plots
    python -m bench.experiments.param_variant --runs R/quality_runs.jsonl S/quality_runs.jsonl

`retrieve` r: the request searches k - r shared demos (the set search alone: auto does not weigh it) and every prompt
continues with its query's r nearest other pool demos by the model's own last hidden state. `moves` same-label: the
search swaps a demo only for one of the same label (auto's gate and check as they ship). `retrieve_by`
topk-sentence: `retrieve`'s neighbours by the sentence model; `--against gradient-r2` compares it with `retrieve` by
the language model's embedding instead of the default (with `--variants gradient-r2s`).

The script copies the variants' records (methods named `gradient-...`) into
bench/experiments/results/param_variant.jsonl beside the shipped default's records of the same dev splits, taken from
quarter_budget.py's (the same engine): its `gradient` record where one ran, else the `gradient-b256` record of a split
whose gate returned a retrieval (the gate decides before the search, so both arms of that experiment returned the
default's prompt there). It prints quarter_budget.py's table per variant: each arm's mean accuracy on the test
queries, the variant minus the default (paired 95% bootstrap interval, seeds and test queries resampled), the picks,
and each arm's selection passes against exact's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..quality import BENCH_DIR
from .dev import JOURNAL, append_new, read_records
from .quarter_budget import DEFAULT, RESULTS as QUARTER_BUDGET, VARIANT as GATED_ARM, print_table

RESULTS = BENCH_DIR / "experiments" / "results" / "param_variant.jsonl"


def default_arm(records: list[dict]) -> dict[tuple[str, int], dict]:
    """Per dev split, the shipped default's record: its own run, else the gated arm's where the gate returned."""
    arm = {(r["dataset"], r["seed"]): r for r in records if r["method"] == GATED_ARM and r["strategy"]["by"] == "gate"}
    arm.update({(r["dataset"], r["seed"]): r for r in records if r["method"] == DEFAULT})
    return {split: {**record, "method": DEFAULT} for split, record in arm.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="quality journals holding the variants' runs")
    parser.add_argument("--journal", type=Path, default=JOURNAL, help="the journal holding exact's runs")
    parser.add_argument("--equivalent-engines", nargs="*", default=[], metavar="HASH",
                        help="engine hashes shown to give the same records (a default split rerun by each, query for "
                             "query): the arms may come from any of them")
    parser.add_argument("--against", metavar="METHOD", default=DEFAULT,
                        help="compare each variant with this one's records (e.g. gradient-r2) instead of the default")
    parser.add_argument("--variants", nargs="*", metavar="METHOD", help="the variants to show (default: every one)")
    args = parser.parse_args(argv)
    shipped = default_arm(read_records(QUARTER_BUDGET))
    variants = [r for path in args.runs for r in read_records(path) if r["method"].startswith(f"{DEFAULT}-")]
    append_new(RESULTS, (kept for record in variants if (record["dataset"], record["seed"]) in shipped
                         for kept in (shipped[(record["dataset"], record["seed"])], record)))
    exact = {r["dataset"]: r["passes"] for r in read_records(args.journal) if r["method"] == "exact"}
    records = read_records(RESULTS)
    for variant in args.variants or sorted({r["method"] for r in records} - {DEFAULT, args.against}):
        print(f"\n{variant}:\n")
        print_table([r for r in records if r["method"] in (args.against, variant)], exact, variant,
                    frozenset(args.equivalent_engines), args.against)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
