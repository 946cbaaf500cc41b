"""Can auto fit a quarter of exact's passes on IMDB with a shorter search? (IMDB dev seeds 10-13)

    python -m bench.quality --threads 1 --methods gradient --datasets imdb --seeds 10 11 12 13 --out-dir A --no-plots
    python -m bench.quality --threads 1 --methods gradient-b256 --variant gradient-b256=gradient:budget=256 \\
        --datasets imdb --seeds 10 11 12 13 --out-dir B --no-plots
    python -m bench.experiments.quarter_budget --runs A/quality_runs.jsonl B/quality_runs.jsonl

Pairs each dev split's default run (`gradient`) with the variant's (the search's budget 256: its start, the anchor
pass and one batch of proposals), both run with the same engine, copies both records into
bench/experiments/results/quarter_budget.jsonl, and prints per dataset: each arm's mean accuracy on the test
queries, the variant minus the default (paired 95% bootstrap interval, seeds and test queries resampled), the picks
that differ, and each arm's selection passes against exact's (the journal's exact record of the dataset).

    python -m bench.experiments.quarter_budget --one-batch-runs C/quality_runs.jsonl

copies the `gradient` records of C, run by an engine whose auto searched one batch (rounds 1, patience 0: the
search budget 256 ran on 32 queries), as `gradient-one-batch`, with the shipped default's records of the same
splits from the journal, and prints the same table for them (test seeds: the engines differ in that alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..quality import BENCH_DIR
from .dev import (JOURNAL, append_new, by_dataset, default_config, mean_accuracy, paired_difference,
                  read_records, seed_kind)

RESULTS = BENCH_DIR / "experiments" / "results" / "quarter_budget.jsonl"
DEFAULT, VARIANT, ONE_BATCH = "gradient", "gradient-b256", "gradient-one-batch"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="quality journals holding both arms' runs")
    parser.add_argument("--journal", type=Path, default=JOURNAL, help="the journal holding exact's runs")
    parser.add_argument("--one-batch-runs", type=Path, nargs="*", default=[],
                        help="quality journals holding the one-batch engine's `gradient` runs (test seeds)")
    args = parser.parse_args(argv)
    journal = read_records(args.journal)
    shipped = {(r["dataset"], r["seed"]): r for r in journal if r["method"] == DEFAULT and default_config(r)}
    append_new(RESULTS, (record for path in args.runs for record in read_records(path)
                         if record["method"] in (DEFAULT, VARIANT)))
    append_new(RESULTS, (kept for path in args.one_batch_runs for record in read_records(path)
                         if record["method"] == DEFAULT
                         for kept in (shipped[(record["dataset"], record["seed"])], {**record, "method": ONE_BATCH})))
    exact = {r["dataset"]: r["passes"] for r in journal if r["method"] == "exact"}
    records = read_records(RESULTS)
    print_table([r for r in records if seed_kind(r["seed"]) == "dev"], exact, VARIANT)
    tested = [r for r in records if seed_kind(r["seed"]) == "test"]
    if tested:
        print()
        print_table(tested, exact, ONE_BATCH)
    return 0


def print_table(records: list[dict], exact: dict[str, int], variant_name: str,
                equivalent: frozenset[str] = frozenset(), baseline: str = DEFAULT) -> None:
    """The arms paired per split, ``variant_name`` against ``baseline`` (the default unless named); their engines
    must be the same, or both among ``equivalent`` (engine hashes shown to give the same records)."""
    name = "default" if baseline == DEFAULT else baseline
    print(f"| dataset | seeds | {name} | {variant_name} | difference [95% CI] | changed picks | "
          f"passes / exact's ({name}, variant) |\n|---|---|---|---|---|---|---|")
    arms = {(r["dataset"], r["seed"], r["method"]): r for r in records}
    for dataset, rows in by_dataset([r for r in records if r["method"] == baseline]):
        pairs = [(d, arms[(dataset, d["seed"], variant_name)]) for d in rows
                 if (dataset, d["seed"], variant_name) in arms]
        for default, variant in pairs:  # the one-batch arm's engine differs from the shipped one in its search
            engines = {default["engine_source"], variant["engine_source"]}
            assert variant_name == ONE_BATCH or len(engines) == 1 or engines <= equivalent, \
                "the arms ran different engines"
        ours = [np.array(d["correct"], float) for d, _ in pairs]
        theirs = [np.array(v["correct"], float) for _, v in pairs]
        changed = [f"{d['seed']}: {pick(d)} {d['accuracy']:.3f} -> {pick(v)} {v['accuracy']:.3f}"
                   for d, v in pairs if pick(d) != pick(v)]
        passes = [np.mean([arm["passes"] for arm in arm_records]) / exact[dataset]
                  for arm_records in zip(*pairs)]
        print(f"| {dataset} | {' '.join(str(d['seed']) for d, _ in pairs)} | {mean_accuracy(ours)} | "
              f"{mean_accuracy(theirs)} | {paired_difference(theirs, ours)} | {'; '.join(changed) or 'none'} | "
              f"{passes[0]:.2f}, {passes[1]:.2f} |")
    print("\nPer seed (accuracy, passes, the search's moves and batches):")
    for (dataset, seed, method), r in sorted(arms.items()):
        notes = r.get("notes") or {}
        print(f"  {dataset} {seed} {method}: {pick(r)} {r['accuracy']:.3f}, {r['passes']} passes, "
              f"moves {notes.get('moves')}, batches {notes.get('batches')}")


def pick(record: dict) -> str:
    """The prompt a record returned: strategy.chosen, and with params.retrieve the neighbours after the set."""
    params = record.get("params") or {}
    by = f" by {params['retrieve_by']}" if "retrieve_by" in params else ""
    return record["strategy"]["chosen"] + (f" + {params['retrieve']} retrieved{by}" if params.get("retrieve") else "")


if __name__ == "__main__":
    raise SystemExit(main())
