"""Scaling benchmark: selection cost as the pool (n) and the number of estimated subsets (S) grow,
with the model calls held fixed.

    python -m bench.scaling                  # n = 100, 1,000, 10,000; S = 1e3 .. 1e6; the anchor modes
    python -m bench.scaling --quick          # smaller: n = 100, 1,000; S up to 1e5; mean-loss anchors only
    python -m bench.scaling --select         # also time engine.select("gradient") end to end for each n

What it measures (engine code paths: models/inference.py ModelRunner, models/estimate.py AnchorEstimator):
  1. the anchor pass, ONCE: scores and the gradient w.r.t. the demo-slot embeddings at one anchor
     subset for Q queries (mean-loss: one shared-prefix forward/backward; per-query: per-query
     margins). Its cost depends on k, the slot width and Q, not on n or S;
  2. for each n: the per-anchor precompute c[s, i] = <G_slot(s), E(demo i)> (one matrix product,
     linear in n), then estimating S random k-subsets (gathers and sums, linear in S), and
     estimating every single swap of the anchor (k * (n - k) subsets: one trust-region round).
Pools larger than the dataset repeat its demos under fresh ids (timing only: the estimate's cost
does not depend on the text). All demos use one slot layout (width W fixed by the largest pool),
so one anchor pass serves every n.

Writes bench/results/scaling.json, bench/results/scaling.png and bench/SCALING.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/scaling.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import torch

from iclsel.models.data import Example

from . import data as bench_data
from . import report
from .protocol import DATASET_SPECS, SEPARATOR, Sizes, label_options, load_examples, make_split

BENCH_DIR = Path(__file__).resolve().parent
TARGET = {"n": 1000, "subsets": 100_000, "seconds": 10.0}


def random_subsets(n: int, k: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, k] rows of k distinct demo indices in [0, n)."""
    subsets = torch.randint(n, (count, k), generator=generator)
    for _ in range(100):
        sorted_rows = subsets.sort(dim=1).values
        bad = (sorted_rows[:, 1:] == sorted_rows[:, :-1]).any(dim=1).nonzero().squeeze(-1)
        if bad.numel() == 0:
            return subsets
        subsets[bad] = torch.randint(n, (bad.numel(), k), generator=generator)
    raise RuntimeError("could not draw distinct subsets")


def single_swaps(anchor: list[int], n: int) -> torch.Tensor:
    """[k * (n - k), k]: the anchor with one slot replaced by a demo outside it (the engine's own
    enumeration, as one trust-region round of the gradient selector estimates it)."""
    from iclsel.models.selectors import _single_swaps

    return _single_swaps(anchor, n)


def build_pool(examples: list[Example], n: int, tokenizer, template: str, max_demo_tokens: int) -> list[Example]:
    """n demos (label-balanced order from the dataset, short enough for the slot cap), repeated under
    fresh ids when the dataset has fewer."""
    from iclsel.models.layout import render_demo

    short = [e for e in examples
             if len(tokenizer(render_demo(template, SEPARATOR, e), add_special_tokens=False)["input_ids"]) <= max_demo_tokens]
    pool = []
    for i in range(n):
        source = short[i % len(short)]
        pool.append(source if i < len(short) else Example(f"{source.id}#{i // len(short)}", source.input, source.output))
    return pool


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def best_of(fn, repeats: int):
    """(value, fastest wall time of ``repeats`` calls): estimates are pure, so repeating is fair and
    the minimum is the least disturbed by other processes on a shared machine."""
    value, best = timed(fn)
    for _ in range(repeats - 1):
        value, seconds = timed(fn)
        best = min(best, seconds)
    return value, best


def run(args: argparse.Namespace) -> dict:
    from iclsel.models.estimate import AnchorEstimator
    from iclsel.models.inference import ModelRunner
    from iclsel.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    spec = DATASET_SPECS[args.dataset]
    k = args.k or spec.k
    examples = load_examples(bench_data.ensure(args.dataset, args.data_dir))
    split = make_split(examples, args.seed, Sizes(pool=len(examples) - args.queries - 1, select=args.queries, test=1))
    queries = split.select
    n_max = max(args.pool_sizes)
    pool = build_pool(split.pool, n_max, loaded.tokenizer, spec.template, args.max_demo_tokens)
    options = label_options(examples)

    from iclsel.models.engine import Engine

    engine = Engine(loaded)
    (layout, layout_seconds) = timed(lambda: engine.layout(pool, queries, k, options, spec.template, SEPARATOR))
    embedding = loaded.embedding_matrix
    anchor = list(range(k))  # the first k demos of the (shuffled) pool
    print(f"{args.dataset}: n up to {n_max}, Q={len(queries)}, k={k}, slot frame W={layout.width}, "
          f"layout {layout_seconds:.1f}s")

    result = {"dataset": args.dataset, "k": k, "queries": len(queries), "frame_width": layout.width,
              "hidden": int(embedding.shape[1]), "options": layout.n_options, "layout_seconds_n_max": layout_seconds,
              "anchor": {}, "by_n": [], "quick": args.quick, "target": TARGET, "repeats": args.repeats}
    for mode in args.modes:
        runner = ModelRunner(loaded.model, layout, batch_size=8)
        tensors, seconds = timed(lambda: runner.anchor(mode, anchor, list(range(len(queries)))))
        result["anchor"][mode] = {"seconds": seconds, "passes": runner.counter.as_dict()}
        print(f"anchor pass ({mode}): {seconds:.1f}s, passes {runner.counter.as_dict()}")

        generator = torch.Generator().manual_seed(args.seed)
        for n in args.pool_sizes:
            demo_ids = layout.demo_ids[:n]
            estimator, precompute = best_of(lambda: AnchorEstimator(anchor, tensors, demo_ids, embedding, layout.gold),
                                            args.repeats)
            row = {"mode": mode, "n": n, "precompute_seconds": precompute, "subsets": []}
            swaps = single_swaps(anchor, n)
            _, swap_seconds = best_of(lambda: estimator.estimate(swaps), args.repeats)
            row["single_swaps"] = {"count": int(swaps.shape[0]), "seconds": swap_seconds}
            for count in args.subsets:
                subsets = random_subsets(n, k, count, generator)
                estimate, seconds = best_of(lambda: estimator.estimate(subsets), args.repeats)
                row["subsets"].append({"count": count, "seconds": seconds, "us_per_subset": 1e6 * seconds / count,
                                       "finite": bool(torch.isfinite(estimate.loss).all())})
            result["by_n"].append(row)
            biggest = row["subsets"][-1]
            print(f"  {mode} n={n}: precompute {precompute:.3f}s; {row['single_swaps']['count']} single swaps "
                  f"{swap_seconds:.3f}s; {biggest['count']} subsets {biggest['seconds']:.3f}s "
                  f"({biggest['us_per_subset']:.2f} us/subset)")
        tensors = None  # freed before the next mode's anchor pass (the estimators' lambdas read it, so no del)

    if args.select:
        result["select"] = []
        for n in args.pool_sizes:
            from iclsel.models.engine import SelectionRequest

            fresh = Engine(loaded)
            request = SelectionRequest(pool=pool[:n], queries=queries, k=k, method="gradient", options=options,
                                       template=spec.template, separator=SEPARATOR, seed=args.seed,
                                       params={"evaluate_selected": False, "rounds": args.select_rounds})
            out, seconds = timed(lambda: fresh.select(request))
            entry = {"n": n, "seconds": seconds, "timings": out["timings"], "passes": out["passes"],
                     "explored_subsets": out.get("explored_subsets")}
            result["select"].append(entry)
            print(f"  select gradient n={n}: {seconds:.1f}s, timings {out['timings']}, "
                  f"passes {out['passes']['forward_equivalent']}")

    target_rows = [r for r in result["by_n"] if r["n"] == TARGET["n"]]
    result["target_check"] = []
    for row in target_rows:
        hits = [s for s in row["subsets"] if s["count"] == TARGET["subsets"]]
        if hits:
            total = row["precompute_seconds"] + hits[0]["seconds"]
            result["target_check"].append({"mode": row["mode"], "seconds": total, "met": total < TARGET["seconds"]})
    return result


def write_outputs(result: dict, args: argparse.Namespace) -> None:
    out_dir: Path = args.out_dir
    report.write_json(out_dir / "scaling.json", result)
    machine = result["machine"]
    lines = ["# iclsel scaling benchmark", "", "This file is regenerated by `bench/scaling.py`; do not edit by hand.", ""]
    if result["quick"]:
        lines += [f"> **QUICK RUN**: pool sizes {args.pool_sizes}, subset counts {args.subsets}, anchor modes "
                  f"{args.modes}; not the full benchmark.", ""]
    lines += ["Command:", "", "    " + result["command"], ""]
    lines.append(f"Machine: {machine['cpu']}, {machine['cores']} cores (torch {machine['torch']}, "
                 f"{machine['torch_threads']} threads); date {machine['date']}; commit {machine['commit']}; "
                 f"{report.load_text(machine)}.")
    lines.append(f"Model {result['model']}; dataset {result['dataset']}; Q = {result['queries']} queries, k = {result['k']}, "
                 f"slot frame W = {result.get('frame_width', result.get('slot_width'))} tokens, hidden size {result['hidden']}, {result['options']} options.")
    lines.append("")
    lines.append("Model calls are held fixed: one anchor pass per mode, whatever n and S (table 1). Everything "
                 "after it is estimation without the model (table 2): the per-anchor precompute "
                 "(linear in n) and the subset estimates (linear in S), each the fastest of "
                 f"{result['repeats']} calls. Pools larger than the dataset repeat "
                 "its demos under fresh ids (timing only).")
    lines += ["", "| anchor mode | anchor pass s | passes (fwd-eq) | forward rows | backward rows |", "|---|---|---|---|---|"]
    for mode, info in result["anchor"].items():
        p = info["passes"]
        lines.append(f"| {mode} | {info['seconds']:.1f} | {p['forward_equivalent']} | {p['forward']} | {p['backward']} |")
    counts = sorted({s["count"] for row in result["by_n"] for s in row["subsets"]})
    lines += ["", "| mode | n | precompute s | single swaps (count: s) | " + " | ".join(f"S={c:,} s" for c in counts) + " |",
              "|" + "---|" * (4 + len(counts))]
    for row in result["by_n"]:
        by_count = {s["count"]: s["seconds"] for s in row["subsets"]}
        cells = [f"{by_count[c]:.3f}" if c in by_count else "" for c in counts]
        lines.append(f"| {row['mode']} | {row['n']:,} | {row['precompute_seconds']:.3f} | "
                     f"{row['single_swaps']['count']:,}: {row['single_swaps']['seconds']:.3f} | " + " | ".join(cells) + " |")
    lines.append("")
    for check in result.get("target_check", []):
        verdict = "met" if check["met"] else "NOT met"
        lines.append(f"Target ({TARGET['subsets']:,} subsets for n = {TARGET['n']:,} in under {TARGET['seconds']:.0f} s "
                     f"after the anchor pass, precompute included), {check['mode']} anchors: "
                     f"{check['seconds']:.2f} s, {verdict}.")
    if not result.get("target_check"):
        lines.append(f"Target ({TARGET['subsets']:,} subsets for n = {TARGET['n']:,}) not measured by this command.")
    if result.get("select"):
        lines += ["", "End to end: `engine.select(method=\"gradient\")` per pool size (fresh cache; the model passes "
                  "do not grow with n):", "", "| n | total s | passes (fwd-eq) | explored subsets | timings (s) |", "|---|---|---|---|---|"]
        for entry in result["select"]:
            timings = ", ".join(f"{k} {v:.2f}" for k, v in entry["timings"].items())
            lines.append(f"| {entry['n']:,} | {entry['seconds']:.1f} | {entry['passes']['forward_equivalent']} | "
                         f"{entry['explored_subsets']} | {timings} |")
    lines += ["", "![scaling](results/scaling.png)", ""]
    path = args.results_md
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in result["by_n"]:
        xs = [s["count"] for s in row["subsets"]]
        axes[0].plot(xs, [s["seconds"] for s in row["subsets"]], "o-", label=f"{row['mode']}, n={row['n']:,}")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("estimated subsets S")
    axes[0].set_ylabel("seconds (no model calls)")
    axes[0].set_title("estimate phase vs S" + (" (QUICK)" if result["quick"] else ""))
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3, which="both")
    for mode in result["anchor"]:
        rows = [r for r in result["by_n"] if r["mode"] == mode]
        axes[1].plot([r["n"] for r in rows], [r["precompute_seconds"] for r in rows], "o-", label=f"precompute ({mode})")
        axes[1].axhline(result["anchor"][mode]["seconds"], linestyle="--", color="gray")
        axes[1].annotate(f"anchor pass ({mode}), fixed", (rows[0]["n"], result["anchor"][mode]["seconds"]), fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("pool size n")
    axes[1].set_ylabel("seconds")
    axes[1].set_title("per-anchor precompute vs n")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out_dir / "scaling.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="default")
    parser.add_argument("--dataset", choices=sorted(DATASET_SPECS), default="imdb")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--k", type=int)
    parser.add_argument("--pool-sizes", type=int, nargs="+")
    parser.add_argument("--subsets", type=int, nargs="+")
    parser.add_argument("--modes", nargs="+", choices=["label-groups", "mean-loss", "per-query"])
    parser.add_argument("--max-demo-tokens", type=int, default=96, help="slot cap: demos longer than this are skipped")
    parser.add_argument("--select", action="store_true", help="also time engine.select(gradient) for each n")
    parser.add_argument("--select-rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="estimate timings: fastest of this many calls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--results-md", type=Path, default=BENCH_DIR / "SCALING.md")
    parser.add_argument("--data-dir", type=Path, default=bench_data.DATA_DIR)
    args = parser.parse_args(argv)
    args.pool_sizes = args.pool_sizes or ([100, 1000] if args.quick else [100, 1000, 10000])
    args.subsets = args.subsets or ([1000, 10_000, 100_000] if args.quick else [1000, 10_000, 100_000, 1_000_000])
    args.modes = args.modes or (["mean-loss"] if args.quick else ["mean-loss", "per-query"])
    shown = argv if argv is not None else sys.argv[1:]
    result = run(args)
    result["command"] = "python -m bench.scaling" + ("" if not shown else " " + shlex.join(shown))
    result["model"] = args.model
    result["machine"] = report.machine_info()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(result, args)
    for check in result.get("target_check", []):
        print(f"target {check['mode']}: {check['seconds']:.2f}s ({'met' if check['met'] else 'NOT met'})")
    print(f"wrote {args.out_dir / 'scaling.json'}, {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
