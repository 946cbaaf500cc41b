"""End-to-end scale benchmark: one selection call, and its held-out accuracy, as the pool grows to 100,000.

    python -m bench.scale                                  # n = 100 .. 100,000, k = 4 and 8 (an hour or more)
    python -m bench.scale --ns 100 1000 --ks 4 --methods gradient

Unlike ``bench.scaling`` (one anchor pass held fixed, then the estimate phase timed alone), this runs what a
user runs: for each (n, k, method) a fresh subprocess loads the model, builds the pool and calls
``Engine.select`` (gradient, default parameters; its diagnostic checks included) or
``Engine.retrieve_per_query`` (bm25 / topk-embed per query, for every held-out query), then scores the
result on the held-out queries. Its peak resident memory is the child's ``ru_maxrss`` (os.wait4), model
load included.

Split (one dev seed, default 10): the selection queries (32) and held-out queries (200) are cut first,
label-balanced, and are the same at every n; the pool is the first n of a label-balanced order of the rest,
so a smaller pool is part of every larger one. Dataset ``imdb-tail`` (every IMDB review cut to its last 40
words, about 49,300 left for pools): pools larger than that repeat real examples under distinct ids (said in
every record: ``distinct_inputs``).

Writes bench/results/scale.json (a list of records {dataset, model, n, k, method, seconds, passes,
peak_rss_mb, accuracy, ...}; reruns resume: a record with the same setup and engine source is kept, unless it
holds an error (a timeout, a crash), which runs again; one of another engine source stays beside it),
bench/results/scale.png
and bench/SCALE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/scale.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from iclsel.models.data import Example

from . import data as bench_data
from . import report
from .protocol import (DATASET_SPECS, SEPARATOR, balanced_take, label_options, load_examples, record_key,
                       shuffled_groups)
from .quality import engine_source_hash

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_NS = [100, 1000, 10_000, 100_000]
DEFAULT_KS = [4, 8]
METHODS = ("gradient", "bm25-per-query", "topk-embed-per-query")
TEMPLATE = DATASET_SPECS["imdb"].template  # imdb-tail is IMDB text: the same template
TEMPLATES = {"imdb-tail": TEMPLATE, **{name: spec.template for name, spec in DATASET_SPECS.items()}}
# topk-embed per query embeds every pool demo (one forward row each): above this n it is not run by default
DEFAULT_MAX_EMBED_N = 1000


@dataclass(frozen=True)
class Config:
    dataset: str
    model: str
    n: int
    k: int
    method: str
    seed: int
    select: int
    test: int
    threads: int | None

    def key(self, data_sha: str, engine_source: str) -> str:
        return record_key({**asdict(self), "data": data_sha, "engine": engine_source})


@dataclass(frozen=True)
class ScaleSplit:
    pool: list[Example]
    select: list[Example]
    test: list[Example]
    distinct_inputs: int  # distinct pool texts (fewer than n when real examples repeat)


def scale_split(examples: list[Example], seed: int, n: int, select: int, test: int) -> ScaleSplit:
    """Selection and held-out queries cut first (label-balanced, the same for every n), then a pool of n from a
    label-balanced order of the rest; past the rest's size the pool repeats it under ids "<id>~r<j>"."""
    groups = shuffled_groups(examples, random.Random(seed))
    chosen_select = balanced_take(groups, select)
    chosen_test = balanced_take(groups, test)
    rest = balanced_take(groups, sum(len(g) for g in groups.values()))
    pool = [rest[i % len(rest)] if i < len(rest)
            else Example(f"{rest[i % len(rest)].id}~r{i // len(rest)}", rest[i % len(rest)].input,
                         rest[i % len(rest)].output)
            for i in range(n)]
    return ScaleSplit(pool, chosen_select, chosen_test, len({d.input for d in pool}))


def _vm_hwm_mb() -> float | None:
    """This process's peak resident memory so far (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(config: Config, data_path: Path) -> dict:
    """One (n, k, method): load, select (or retrieve per query), score on the held-out queries."""
    import torch

    from iclsel.models.cache import MemoryCache
    from iclsel.models.engine import Engine, SelectionRequest
    from iclsel.models.loading import load_model

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    loaded = load_model(config.model)
    examples = load_examples(data_path)
    split = scale_split(examples, config.seed, config.n, config.select, config.test)
    options = label_options(examples)
    template = TEMPLATES[config.dataset]
    engine = Engine(loaded, cache=MemoryCache())
    setup_seconds = time.perf_counter() - started
    rss_before = _vm_hwm_mb()
    record: dict = {"distinct_inputs": split.distinct_inputs, "repeats_examples": split.distinct_inputs < config.n,
                    "setup_seconds": setup_seconds, "rss_after_load_mb": rss_before,
                    "model_fingerprint": loaded.fingerprint, "torch_threads": torch.get_num_threads()}
    context = None  # per held-out query, demos after the shared ones
    if config.method == "gradient":
        request = SelectionRequest(pool=split.pool, queries=split.select, k=config.k, method="gradient",
                                   options=options, template=template, separator=SEPARATOR, seed=config.seed,
                                   params={"evaluate_selected": False},
                                   targets=[t.input for t in split.test])  # inputs only: auto's neighbours for them
        start = time.perf_counter()
        result = engine.select(request)
        seconds = time.perf_counter() - start
        passes = result["passes"]
        by_id = {d.id: d for d in split.pool}
        demos = [by_id[d["id"]] for d in result["selected"]]
        if result.get("retrieved"):  # auto returned per-query demos (topk-embed) or the hybrid's: the targets' own
            context = [[by_id[i] for i in ids] for ids in result["retrieved"]["targets"]]
        strategy = result.get("strategy") or {}
        record.update({"seconds": seconds, "passes": passes["forward_equivalent"],
                       "passes_selection": passes["selection_forward_equivalent"],
                       "passes_diagnostics": passes["diagnostics_forward_equivalent"],
                       "seconds_diagnostics": (result.get("timings") or {}).get("checks", 0.0),
                       "timings": result.get("timings"), "selected": [d.id for d in demos],
                       "notes": result.get("notes"), "strategy": strategy})
        if strategy.get("searched") and strategy.get("chosen") != "set":  # what the set would have scored
            lost = engine.evaluate([by_id[i] for i in strategy["searched"]], split.test, options=options,
                                   template=template, separator=SEPARATOR)
            record["searched_set_accuracy"] = lost["accuracy"]
    else:
        method = config.method.removesuffix("-per-query")
        start = time.perf_counter()
        demos = engine.retrieve_per_query(split.pool, split.test, config.k, method)
        seconds = time.perf_counter() - start
        # bm25 runs no model; topk-embed embeds every pool demo and every held-out query, one row each
        passes = 0 if method == "bm25" else config.n + len(split.test)
        record.update({"seconds": seconds, "passes": passes, "passes_selection": passes,
                       "distinct_demos": len({d.id for row in demos for d in row}),
                       "duplicate_texts_in_prompts": sum(len({d.input for d in row}) < len(row) for row in demos)})
    record["rss_after_selection_mb"] = _vm_hwm_mb()
    ev = engine.evaluate(demos, split.test, options=options, template=template, separator=SEPARATOR, context=context)
    record.update({"accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"], "eval_seconds": ev["seconds"]})
    return record


def run_config(config: Config, data_path: Path, timeout: float) -> dict:
    """Run ``config`` in a fresh subprocess; its record plus peak_rss_mb (the child's ru_maxrss)."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"iclsel-scale-{os.getpid()}-{time.time_ns()}.json"
    command = [sys.executable, "-m", "bench.scale", "--child", json.dumps(asdict(config)), "--child-out", str(out),
               "--data-dir", str(data_path.parent)]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=BENCH_DIR.parent)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            out.unlink(missing_ok=True)
            return {"error": f"timed out after {timeout:.0f} s", "peak_rss_mb": usage.ru_maxrss / 1024}
        time.sleep(0.5)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0 or not out.exists():
        return {"error": f"child exited {child.returncode}", "peak_rss_mb": usage.ru_maxrss / 1024}
    record = json.loads(out.read_text())
    out.unlink()
    record.update({"peak_rss_mb": usage.ru_maxrss / 1024, "process_seconds": wall})
    return record


def write_plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    datasets = sorted({r["dataset"] for r in records})
    for dataset in datasets:  # each dataset's series apart; the first's markers filled, the others' open
        subset = [r for r in records if r["dataset"] == dataset]
        fill = {} if dataset == datasets[0] else {"markerfacecolor": "none"}
        for (method, k), style in _series(subset).items():
            rows = sorted((r for r in subset if series(r) == method and r["k"] == k and "error" not in r),
                          key=lambda r: r["n"])
            if not rows:
                continue
            ns = [r["n"] for r in rows]
            label = f"{method}, k={k}" if len(datasets) == 1 else f"{dataset}: {method}, k={k}"
            axes[0].plot(ns, [r["seconds"] for r in rows], style, label=label, **fill)
            axes[1].plot(ns, [r["peak_rss_mb"] / 1024 for r in rows], style, label=label, **fill)
            axes[2].plot(ns, [r["accuracy"] for r in rows], style, label=label, **fill)
    n_grid = sorted({r["n"] for r in records})
    if n_grid:
        ref = [r for r in records if series(r) == "gradient" and r["n"] == n_grid[0] and "error" not in r
               and r["dataset"] == datasets[0]]
        if ref:  # a line of slope 1 through gradient's smallest-n cost: faster than linear shows above it
            base = min(r["seconds"] for r in ref)
            axes[0].plot(n_grid, [base * n / n_grid[0] for n in n_grid], ":", color="grey", label="linear in n")
    for ax, title in zip(axes, ("selection call, seconds (log)", "peak RSS of the run, GB", "held-out accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("pool size n")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].axhline(4.0, color="red", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _series(records: list[dict]) -> dict[tuple[str, int], str]:
    styles = {"gradient": "-o", "bm25-per-query": "-s", "topk-embed-per-query": "-^"}
    # k = 4 solid, other k dashed: a format string takes one line style (":x" stays dotted)
    return {(series(r), r["k"]): (style if r["k"] == 4 or style.startswith(":") else "--" + style[1:])
            for r in records for style in [styles.get(series(r), ":x")]}


def write_markdown(records: list[dict], path: Path, command: str, skipped: list[str], machine: dict) -> None:
    lines = ["# End-to-end scale benchmark", "", "Regenerated by `python -m bench.scale`; do not edit by hand.", "",
             "Commands that produced the records: " + ", ".join(
                 f"`{c}`" for c in dict.fromkeys(r.get("command", command) for r in records)), "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}; written "
             f"{machine['date']}; commit {machine['commit']}; {report.load_text(machine)}.", "",
             "One call per row, each in its own process (model load not counted in `seconds`; it is in the peak "
             "RSS). `seconds`: wall time of `Engine.select` for gradient (default parameters, its 4 diagnostic "
             "exact runs included) or of `Engine.retrieve_per_query` for all 200 held-out queries; `passes`: "
             "forward-equivalents of that call (gradient: selection + diagnostics). Accuracy: the 200 held-out "
             "queries, label-balanced, the same at every n. `returned`: the prompt gradient's `auto` returned (where "
             "it was not the searched set, the set's own accuracy on the same queries follows, for the diagnosis of "
             "the choice only).", "",
             "`engine`: the first 8 characters of the engine source hash the row ran with (`bench.quality."
             "engine_source_hash`); `load`: the 1-minute load average when it finished.", "",
             "| dataset | n | distinct texts | k | method | seconds | passes | peak RSS MB | accuracy | macro-F1 | returned | engine | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["dataset"], r["k"], series(r), r["n"])):
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['n']:,} | | {r['k']} | {series(r)} | {r['error']} | | "
                         f"{r.get('peak_rss_mb', 0):.0f} | | | | {_engine(r)} | {r.get('load_average_1m', '')} |")
            continue
        lines.append(f"| {r['dataset']} | {r['n']:,} | {r['distinct_inputs']:,} | {r['k']} | {series(r)} | "
                     f"{r['seconds']:.1f} | {r['passes']} | {r['peak_rss_mb']:.0f} | {r['accuracy']:.3f} | "
                     f"{r['macro_f1']:.3f} | {_returned(r)} | {_engine(r)} | {r.get('load_average_1m', '')} |")
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += ["", "![scale](results/scale.png)", ""]
    path.write_text("\n".join(lines))


def _returned(record: dict) -> str:
    """The prompt a gradient row returned: its strategy, with the searched set's accuracy where another won."""
    chosen = (record.get("strategy") or {}).get("chosen")
    if chosen is None:
        return "per query" if record["method"].endswith("-per-query") else "set"
    lost = record.get("searched_set_accuracy")
    return chosen if lost is None else f"{chosen} (set {lost:.3f})"


def _engine(record: dict) -> str:
    """The row's engine source hash, short; "unrecorded" for records from before the field existed."""
    return record["engine_source"][:8] if record.get("engine_source") else "unrecorded"


def _config_of(record: dict) -> Config:
    return Config(**{f.name: record.get(f.name) for f in fields(Config)})


def series(record: dict) -> str:
    """The name a record is shown under: its method, and a record run under another condition (its "condition",
    added by hand to the record) is a series of its own."""
    return record["method"] + (f" ({record['condition']})" if record.get("condition") else "")


def publish(records: list[dict], args: argparse.Namespace, command: str, skipped: list[str]) -> None:
    write_plot(records, args.out.with_suffix(".png"))
    write_markdown(records, args.markdown, command, skipped, report.machine_info())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imdb-tail", choices=sorted(TEMPLATES))
    parser.add_argument("--model", default="default")
    parser.add_argument("--ns", nargs="+", type=int, default=DEFAULT_NS)
    parser.add_argument("--ks", nargs="+", type=int, default=DEFAULT_KS)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=10, help="a dev seed (the split's shuffle and the search's)")
    parser.add_argument("--select-size", type=int, default=32)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1: on 2 cores shared with other jobs, 2 threads ran 3x slower)")
    parser.add_argument("--max-embed-n", type=int, default=DEFAULT_MAX_EMBED_N,
                        help="largest n at which topk-embed-per-query runs (it embeds every pool demo)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scale.json")
    parser.add_argument("--markdown", type=Path, default=BENCH_DIR / "SCALE.md")
    parser.add_argument("--data-dir", type=Path, default=bench_data.DATA_DIR)
    parser.add_argument("--fresh", action="store_true", help="re-run records already in --out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one run, in its own process
        config = Config(**json.loads(args.child))
        record = run_child(config, args.data_dir / f"{config.dataset}.jsonl")
        args.child_out.write_text(json.dumps(record))
        return 0

    data_path = bench_data.ensure(args.dataset, args.data_dir)
    data_sha = bench_data.sha256_file(data_path)
    engine_source = engine_source_hash()
    records = [] if args.fresh or not args.out.exists() else json.loads(args.out.read_text())
    done = {r.get("key") for r in records if "error" not in r}  # a run that failed runs again
    shown = list(argv if argv is not None else sys.argv[1:])
    command = "python -m bench.scale" + ("" if not shown else " " + shlex.join(shown))
    skipped = []
    for n in args.ns:
        for k in args.ks:
            for method in args.methods:
                if method == "topk-embed-per-query" and n > args.max_embed_n:
                    skipped.append(f"topk-embed-per-query at n={n:,}, k={k} (above --max-embed-n "
                                   f"{args.max_embed_n:,}: it embeds all n demos)")
                    continue
                config = Config(args.dataset, args.model, n, k, method, args.seed, args.select_size,
                                args.test_size, args.threads)
                key = config.key(data_sha, engine_source)
                if key in done:
                    print(f"n={n} k={k} {method}: kept from {args.out.name}", flush=True)
                    continue
                record = {"key": key, **asdict(config), "data_sha256": data_sha, "command": command,
                          "engine_source": engine_source,
                          **run_config(config, data_path, args.timeout),
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_average_1m": round(os.getloadavg()[0], 2)}
                # current state, not a diary: the new record replaces any earlier one of the same config
                records = [r for r in records if r.get("key") != key and _config_of(r) != config] + [record]
                done.add(key)
                report.write_json(args.out, records)
                if "error" in record:
                    print(f"n={n} k={k} {method}: {record['error']}", flush=True)
                else:
                    print(f"n={n} k={k} {method}: {record['seconds']:.1f} s, {record['passes']} passes, "
                          f"peak RSS {record['peak_rss_mb']:.0f} MB, accuracy {record['accuracy']:.3f}", flush=True)
                publish(records, args, command, skipped)
    publish(records, args, command, skipped)
    print(f"wrote {args.out}, {args.out.with_suffix('.png')}, {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
