"""What the dev-seed experiments on auto's choice share: the quality benchmark's journal, the protocol's splits
of dev seeds, and auto's view of a split (its searched set and the held-out pool demos it validates on)."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from iclsel.models.layout import resolve_options
from iclsel.models.strategy import HYBRID, held_out

from .. import data as bench_data
from .. import report
from ..protocol import DATASET_SPECS, DatasetSpec, Split, label_options, load_examples, make_split
from ..quality import BENCH_DIR, FULL_SIZES

JOURNAL = BENCH_DIR / "results" / "quality_runs.jsonl"
BASELINES = {"topk-embed": "topk-embed-per-query", "bm25": "bm25-per-query"}  # auto's strategy -> baseline
EMBEDS_TARGETS = ("topk-embed", HYBRID)  # answers whose neighbours the language model's embeddings find: they embed
# the queries and targets (the sentence model's answers do not count as passes)


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def records_by_split(path: Path) -> dict[tuple[str, int], dict]:
    """(dataset, seed) -> the last of ``path``'s records for that split."""
    return {(r["dataset"], r["seed"]): r for r in read_records(path)}


def append_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def append_new(path: Path, records: Iterable[dict]) -> None:
    """Append to ``path`` each of ``records`` whose (dataset, seed, method) it does not hold yet (a rerun of a
    script copies nothing twice)."""
    held = {(r["dataset"], r["seed"], r["method"]) for r in read_records(path)}
    for record in records:
        key = (record["dataset"], record["seed"], record["method"])
        if key not in held:
            append_record(path, record)
            held.add(key)


def default_config(record: dict) -> bool:
    """The journal's record ran the default configuration: summed option scores, no params, full sizes."""
    return record.get("option_score", "sum") == "sum" and not record.get("params") and not record.get("quick")


def journal_records(path: Path = JOURNAL) -> dict[tuple[str, int, str], dict]:
    """(dataset, seed, method) -> the journal's record of the default configuration whose choice the replays can
    read: a run the gate answered (strategy.by "gate") checked no candidate, so the split's earlier run stands for
    it."""
    return {(r["dataset"], r["seed"], r["method"]): r for r in read_records(path)
            if default_config(r) and (r.get("strategy") or {}).get("by") != "gate"}


def dev_splits(datasets: list[str], seeds: list[int]) -> Iterator[tuple[str, DatasetSpec, list[str], int, Split]]:
    """(dataset, spec, options, seed, split) for each dataset and seed, as the quality benchmark splits them."""
    for dataset in datasets:
        spec = DATASET_SPECS[dataset]
        examples = load_examples(bench_data.ensure(dataset, bench_data.DATA_DIR))
        options = label_options(examples)
        for seed in seeds:
            yield dataset, spec, options, seed, make_split(examples, seed, spec.sizes or FULL_SIZES)


def append_measured(results: Path, key: dict, measure: Callable[[], dict | None], label: str | None = None
                    ) -> dict | None:
    """Run one split's ``measure`` and append its record (``key``, what it measured, the seconds it took) to
    ``results``; given a ``label``, print the candidate's check and test accuracy. A split it cannot measure (None)
    leaves no record. Returns the record."""
    started = time.perf_counter()
    measured = measure()
    if measured is None:
        return None
    record = {**key, **measured, "seconds": round(time.perf_counter() - started, 1)}
    append_record(results, record)
    if label is not None:
        print(f"{' '.join(f'{v}' for v in key.values())}: {label} check {record['check']['accuracy']:.3f} "
              f"test {record['accuracy']:.3f}", flush=True)
    return record


def pending(args: argparse.Namespace, journal: dict, results: Path, needs_default_run: bool = True
            ) -> Iterator[tuple[str, DatasetSpec, list[str], int, Split]]:
    """The dev splits of --datasets and --seeds that ``results`` has no record of (and, with needs_default_run,
    whose default run the journal holds: has_default_run)."""
    done = {(r["dataset"], r["seed"]) for r in read_records(results)}
    for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
        if (dataset, seed) not in done and (not needs_default_run or has_default_run(journal, dataset, seed)):
            yield dataset, spec, options, seed, split


def has_default_run(journal: dict, dataset: str, seed: int) -> bool:
    """The journal holds the default gradient run (naming its searched set) and both per-query baselines of this
    split."""
    return (all((dataset, seed, m) in journal for m in ("gradient", *BASELINES.values()))
            and searched_ids(journal[(dataset, seed, "gradient")]) is not None)


def strategy_tests(journal: dict, dataset: str, seed: int, hybrid: dict | None = None
                   ) -> dict[str, dict]:
    """The test-query record of each strategy auto considered in the journal's gradient run: the searched set's
    (the run's own when the set was chosen), the per-query baselines' and, given its record (hybrid_candidate.py),
    the hybrid's."""
    gradient = journal[(dataset, seed, "gradient")]
    tests = {name: journal[(dataset, seed, method)] for name, method in BASELINES.items()}
    if gradient["strategy"]["chosen"] == "set" or "searched_set" in gradient:  # older records lack the latter
        tests["set"] = gradient if gradient["strategy"]["chosen"] == "set" else gradient["searched_set"]
    if hybrid is not None:
        tests[HYBRID] = hybrid
    return tests


def searched_ids(gradient: dict) -> list[str] | None:
    """The searched set of a journal's gradient run: strategy.searched, or (older records, which name it only when
    it was returned) the selected demos when the set won; None when the record does not say."""
    searched = gradient["strategy"].get("searched")
    if not searched and gradient["strategy"]["chosen"] == "set":
        searched = gradient["selected"]
    return searched or None


@dataclass
class AutoView:
    """A split as auto saw it in the journal's gradient run."""
    split: Split
    options: list[str]  # auto's resolved options
    pool_gold: np.ndarray  # [n] option index of each pool demo's label (-1: not an option)
    searched: list[int]  # pool indices of the searched set, in prompt order
    seed: int

    @classmethod
    def of(cls, split: Split, options: list[str], gradient: dict) -> "AutoView":
        pool = split.pool
        resolved = resolve_options(pool, split.select, options)
        index = {d.id: i for i, d in enumerate(pool)}
        return cls(split, resolved, np.array([resolved.index(d.output) if d.output in resolved else -1 for d in pool]),
                   [index[i] for i in searched_ids(gradient)], gradient["seed"])

    def held_out(self, size: int | None) -> list[int]:
        """The pool rows auto validates on at this size (None: every pool demo outside the set)."""
        return held_out(self.pool_gold, self.searched, size or len(self.split.pool), self.seed)


def dev_parser(description: str, datasets: list[str], seeds: list[int]) -> argparse.ArgumentParser:
    """The arguments every replay of auto's choice takes (--datasets, --seeds, --journal, --threads,
    --table-only); ``parse_dev_args`` refuses test seeds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--datasets", nargs="+", default=datasets, choices=sorted(DATASET_SPECS))
    parser.add_argument("--seeds", nargs="+", type=int, default=seeds)
    parser.add_argument("--journal", type=Path, default=JOURNAL, help="the quality benchmark's journal")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="run nothing: print the table of the records")
    parser.add_argument("--report-test-seeds", action="store_true", help=(
        "allow test seeds (0-9): only to report what a default decided on dev seeds gives, never to decide"))
    return parser


def parse_dev_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if min(args.seeds) < 10 and not args.report_test_seeds:
        parser.error("dev seeds only (10 and above), unless --report-test-seeds")
    return args


def set_check_matches(check, gradient: dict) -> bool:
    """The searched set's check re-run here equals the journal's run (the same rows, scored the same way); says
    so when it does not."""
    recorded = {c["strategy"]: c for c in gradient["strategy"]["checks"]}["set"]
    loss = float(check.loss.mean())
    if check.accuracy == recorded["accuracy"] and abs(loss - recorded["loss"]) <= 1e-3:
        return True
    print(f"  set check {check.accuracy:.3f}/{loss:.4f} != journal's {recorded['accuracy']:.3f}/"
          f"{recorded['loss']:.4f}: skipped", flush=True)
    return False


def by_dataset(records: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    """(dataset, its records by seed) for each dataset, in the order the records first name them."""
    for dataset in dict.fromkeys(rec["dataset"] for rec in records):
        yield dataset, sorted((rec for rec in records if rec["dataset"] == dataset), key=lambda x: x["seed"])


def mean_accuracy(correct: list[np.ndarray]) -> str:
    """The mean over seeds of each seed's accuracy (correct: per seed, 1.0 per right test query)."""
    return f"{np.mean([c.mean() for c in correct]):.3f}"


def paired_difference(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    """Mean of a - b over seeds with the paired 95% bootstrap interval (seeds and test queries resampled)."""
    gaps = [np.subtract(x, y) for x, y in zip(a, b)]
    low, high = report._bootstrap_mean(gaps, np.random.default_rng(0))
    return f"{np.mean([g.mean() for g in gaps]):+.3f} [{low:+.3f}, {high:+.3f}]"


def seed_kind(seed: int) -> str:
    return "dev" if seed >= 10 else "test"


def replay_main(args: argparse.Namespace, results: Path, run, table) -> int:
    """A replay's main: run(args, journal) what is missing (unless --table-only), then table(records, journal)."""
    journal = journal_records(args.journal)
    if not args.table_only:
        run(args, journal)
    table(read_records(results), journal)
    return 0


def print_replayed_against_baselines(label: str, replayed: dict[str, list[dict]], journal: dict) -> None:
    """A replayed default (``replayed``: per dataset, per seed the record of its pick: seed, strategy, accuracy,
    correct, passes) against the best baseline of the journal on the same seeds and test queries, as bench.quality
    compares the default (report.paired_comparison), with its picks and its passes against exact's."""
    print(f"\n| dataset | seeds | {label} | best baseline | difference [95% CI] | wins / ties / losses | picks "
          f"| passes / exact's |\n|---|---|---|---|---|---|---|---|")
    for dataset, mine in replayed.items():
        by_method = {"gradient": mine, **{name: [journal[(dataset, rec["seed"], name)] for rec in mine
                                                 if (dataset, rec["seed"], name) in journal]
                                          for name in report.BASELINES}}
        c = report.paired_comparison(by_method)
        baseline = np.mean([r["accuracy"] for r in by_method[c["best_baseline"]] if r["seed"] in c["seeds"]])
        exact = [r["passes"] for (d, _, name), r in journal.items() if d == dataset and name == "exact"]
        picks = Counter(r["strategy"] for r in mine)
        passes = np.mean([r["passes"] for r in mine])
        ratio = f"{passes:.0f} / {np.mean(exact):.0f} = {passes / np.mean(exact):.2f}" if exact else "n/a"
        low, high = c["diff_ci95"]
        print(f"| {dataset} | {seed_kind(mine[0]['seed'])} {' '.join(str(r['seed']) for r in mine)} "
              f"| {np.mean([r['accuracy'] for r in mine]):.3f} | {c['best_baseline']} {baseline:.3f} "
              f"| {c['diff_mean']:+.3f} [{low:+.3f}, {high:+.3f}] | {c['wins']} / {c['ties']} / {c['losses']} "
              f"| {', '.join(f'{k} {v}' for k, v in picks.most_common())} | {ratio} |")
