"""Re-score the quality benchmark's selections in the pool-width layout (what `select` runs and returns
with params.prompt_width "pool", its default before commit 2a024e3), with no re-selection.

    python -m bench.rescore --datasets bbc imdb --seeds 0 1 2 [--threads 2]

`bench.quality` scores every prompt with slots as wide as that prompt's own widest demo. `select`
chooses (and returns, as `prompt.token_ids`) a layout with slots as wide as the POOL's widest demo, so a
set can be scored in a layout it was not chosen in. This re-scores the journal's records with every
method's demos in the pool-width layout (`Engine.evaluate(..., layout_pool=pool)`): the fixed sets and
random draws as recorded, the per-query retrievals recomputed (they are deterministic). Same held-out
test queries, same labels; only the filler padding differs. Nothing is re-selected or tuned.

Writes bench/results/rescore_runs.jsonl (journal; resumes), bench/results/quality_pool_layout.json
and bench/RESCORE.md (both layouts side by side).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: python bench/rescore.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from . import data as bench_data
from . import report
from .protocol import DATASET_SPECS, SEPARATOR, Sizes, label_options, load_examples, make_split, sizes_dict
from .quality import FULL_SIZES, RESULTS_DIR, EngineFactory, append_journal, read_journal

BENCH_DIR = Path(__file__).resolve().parent


def latest_records(journal_path: Path, dataset: str, seed: int, sizes: Sizes, quick: bool) -> dict[str, dict]:
    """method -> the newest record of (dataset, seed) at these sizes."""
    chosen: dict[str, dict] = {}
    for record in read_journal(journal_path).values():  # file order: later lines win
        if (record.get("dataset"), record.get("seed"), record.get("quick")) != (dataset, seed, quick):
            continue
        if record.get("sizes") == sizes_dict(sizes):
            chosen[record["method"]] = record
    return chosen


def demo_sets(engine, record: dict, split, k: int) -> list:
    """The demos each evaluation uses: one list per random draw, or [per-query lists], or [one set]."""
    by_id = {d.id: d for d in split.pool}
    if record["kind"] == "per-query":
        return [engine.retrieve_per_query(split.pool, split.test, k, record["engine_method"])]
    runs = record.get("draws") or [record]
    return [[by_id[i] for i in run["selected"]] for run in runs]


def rescore(args: argparse.Namespace, new_engine: EngineFactory, log=print) -> dict:
    out_path = args.out_dir / "rescore_runs.jsonl"
    done = read_journal(out_path)
    table: dict[str, dict[str, dict]] = {}
    missing: list[str] = []  # --report-only: recorded selections not re-scored yet
    for dataset in args.datasets:
        examples = load_examples(bench_data.ensure(dataset, args.data_dir))
        options, spec = label_options(examples), DATASET_SPECS[dataset]
        for seed in args.seeds:
            split = make_split(examples, seed, args.sizes)
            records = latest_records(args.out_dir / "quality_runs.jsonl", dataset, seed, args.sizes, args.quick)
            for method, record in sorted(records.items()):
                key = f"{record['key']}:pool-layout"  # the record's key covers data, split, sizes, model, params
                if key not in done and args.report_only:
                    missing.append(f"{dataset}/{seed}/{method}")
                    continue
                if key not in done:
                    engine = new_engine()
                    start = time.perf_counter()
                    runs = [engine.evaluate(demos, split.test, options, spec.template, SEPARATOR, layout_pool=split.pool)
                            for demos in demo_sets(engine, record, split, record["k"])]
                    done[key] = {"key": key, "source_key": record["key"], "dataset": dataset, "seed": seed,
                                 "method": method, "engine_source": record.get("engine_source"),
                                 "accuracy": report._mean([r["accuracy"] for r in runs]),
                                 "macro_f1": report._mean([r["macro_f1"] for r in runs]),
                                 "own_layout_accuracy": record["accuracy"], "own_layout_macro_f1": record["macro_f1"],
                                 "prediction_counts": dict(sum((Counter(r["predictions"]) for r in runs), Counter())),
                                 "seconds": time.perf_counter() - start}
                    append_journal(out_path, done[key])
                row = done[key]
                log(f"{dataset} seed {seed} {method}: pool layout acc {row['accuracy']:.3f} "
                      f"(own layout {row['own_layout_accuracy']:.3f})")
                table.setdefault(dataset, {}).setdefault(method, {"seeds": []})["seeds"].append(row)
    for by_method in table.values():
        for entry in by_method.values():
            rows = entry["seeds"]
            for name in ("accuracy", "macro_f1", "own_layout_accuracy", "own_layout_macro_f1"):
                values = [r[name] for r in rows]
                entry[f"{name}_mean"] = report._mean(values)
                entry[f"{name}_std"] = report._std(values)
    report.write_json(args.out_dir / "quality_pool_layout.json", table)
    write_markdown(args.results_md, table, args, missing)
    log(f"wrote {args.results_md}")
    return table


def write_markdown(path: Path, table: dict, args: argparse.Namespace, missing: list[str]) -> None:
    machine = report.machine_info()
    lines = ["# Quality benchmark re-scored in the selection layout", "",
             "This file is regenerated by `bench/rescore.py`; do not edit by hand.", "", "Command:", "",
             f"    {args.command}", "",
             f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", "The same selections and held-out test queries as `RESULTS.md`, scored with slots as wide as the "
             "pool's widest demo (what `select` runs and returns with params.prompt_width \"pool\") instead of each prompt's own widest "
             "demo. Mean (std) over the seeds listed.", ""]
    if missing:
        lines += [f"Incomplete: not re-scored yet: {', '.join(missing)}.", ""]
    for dataset, by_method in table.items():
        lines += [f"## {dataset}", "",
                  "| method | seeds | accuracy, pool layout | accuracy, own layout (RESULTS.md) | macro-F1, pool layout | macro-F1, own layout |",
                  "|---|---|---|---|---|---|"]
        ranked = sorted(by_method.items(), key=lambda item: -item[1]["accuracy_mean"])
        for method, e in ranked:
            seeds = " ".join(str(r["seed"]) for r in e["seeds"])
            lines.append(f"| {method} | {seeds} | {report._fmt_mean_std(e['accuracy_mean'], e['accuracy_std'])} | "
                         f"{report._fmt_mean_std(e['own_layout_accuracy_mean'], e['own_layout_accuracy_std'])} | "
                         f"{report._fmt(e['macro_f1_mean'])} | {report._fmt(e['own_layout_macro_f1_mean'])} |")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASET_SPECS), default=["imdb", "bbc"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data-dir", type=Path, default=bench_data.DATA_DIR)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=BENCH_DIR / "RESCORE.md")
    parser.add_argument("--quick", action="store_true", help="re-score the --quick run's records (their sizes)")
    parser.add_argument("--report-only", action="store_true", help="tabulate what is re-scored; evaluate nothing")
    for name in ("pool", "select", "test"):
        parser.add_argument(f"--{name}-size", type=int, default=getattr(FULL_SIZES, name))
    args = parser.parse_args(argv)
    args.sizes = Sizes(pool=args.pool_size, select=args.select_size, test=args.test_size)
    args.command = "python -m bench.rescore " + shlex.join(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    from iclsel.models.engine import Engine
    from iclsel.models.loading import load_model

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    rescore(args, lambda: Engine(loaded), log=lambda message: print(message, flush=True))


if __name__ == "__main__":
    main()
