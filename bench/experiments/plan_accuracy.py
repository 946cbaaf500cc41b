"""Does a dry run's plan hold for the default request? Its passes and seconds against the selection's own.

    python -m bench.experiments.plan_accuracy --datasets imdb bbc sms sdg --seeds 10 11

A user with a budget asks first what a selection will cost (``dry_run``: Engine.plan) and then runs it. Per dev split
(the quality benchmark's pool and selection queries, its test inputs as targets) the default request as a user sends
it (method gradient, default params: the gate, the search, the check and the returned prompt's exact run on the
queries) is planned on a fresh engine and then selected on another (the plan's calibration warms nothing the
selection uses). One record per split and engine (its source hash, bench.quality.engine_source_hash: a changed engine
measures again) in bench/experiments/results/plan_accuracy.jsonl: the plan, the passes the selection reports
(``passes.forward_equivalent``: selection and diagnostics, what the plan counts), its wall time and phases' seconds,
the prompt it returned and whether the gate returned it. The table: passes inside [low, high], seconds spent over
seconds planned.
"""

from __future__ import annotations

import time

import numpy as np

from iclsel.models.engine import SelectionRequest

from ..protocol import SEPARATOR
from ..quality import BENCH_DIR, default_engine_factory, engine_source_hash
from .dev import append_record, dev_parser, dev_splits, parse_dev_args, read_records

RESULTS = BENCH_DIR / "experiments" / "results" / "plan_accuracy.jsonl"


def request_of(split, spec, options, seed: int) -> SelectionRequest:
    """The default request on this split, as a user sends it (no params)."""
    return SelectionRequest(pool=split.pool, queries=split.select, k=spec.k, method="gradient", options=options,
                            template=spec.template, separator=SEPARATOR, seed=seed,
                            targets=[t.input for t in split.test])


def planned(new_engine, request: SelectionRequest) -> dict:
    """A dry run of ``request`` on a fresh engine: its plan, less the dry_run flag, and how long it took."""
    started = time.perf_counter()
    plan = new_engine().plan(request)
    return {"plan": {k: v for k, v in plan.to_dict().items() if k != "dry_run"},
            "plan_seconds": round(time.perf_counter() - started, 2)}


def measure(new_engine, split, spec, options, seed: int) -> dict:
    request = request_of(split, spec, options, seed)
    plan = planned(new_engine, request)
    engine = new_engine()
    started = time.perf_counter()
    result = engine.select(request)
    seconds = time.perf_counter() - started
    strategy = result.get("strategy") or {}
    return {**plan, "passes": result["passes"]["forward_equivalent"], "seconds": round(seconds, 1),
            "timings": result.get("timings"), "chosen": strategy.get("chosen"), "by": strategy.get("by")}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["imdb", "bbc", "sms", "sdg"], [10, 11])
    args = parse_dev_args(parser, argv)
    if not args.table_only:
        engine = engine_source_hash()
        done = {(r["dataset"], r["seed"]) for r in read_records(RESULTS) if r["engine_source"] == engine}
        new_engine, _ = default_engine_factory("default", args.threads)
        for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
            if (dataset, seed) in done:
                continue
            record = {"dataset": dataset, "seed": seed, "engine_source": engine,
                      **measure(new_engine, split, spec, options, seed)}
            append_record(RESULTS, record)
            print(f"{dataset} {seed}: planned {record['plan']['estimated_passes']} passes "
                  f"[{record['plan']['passes_low']}, {record['plan']['passes_high']}], "
                  f"{record['plan']['estimated_seconds']:.0f} s; ran {record['passes']} passes, {record['seconds']:.0f} s "
                  f"({record['chosen']} by {record['by']})", flush=True)
    print_table([r for r in read_records(RESULTS) if r["dataset"] in args.datasets and r["seed"] in args.seeds])
    return 0


def print_table(records: list[dict]) -> None:
    """Per selection: its plan's passes (inside the range?) and seconds against what it spent; per engine, the
    median and range of seconds spent over seconds planned."""
    print("| engine | dataset | seed | returned | passes: planned [low, high] | ran | inside | seconds: planned | ran | "
          "ran / planned |\n|---|---|---|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {}
    for r in records:
        p = r["plan"]
        ratios.setdefault(r["engine_source"], []).append(r["seconds"] / p["estimated_seconds"])
        inside = "yes" if p["passes_low"] <= r["passes"] <= p["passes_high"] else "no"
        print(f"| {r['engine_source'][:8]} | {r['dataset']} | {r['seed']} | {r['chosen']} ({r['by']}) | "
              f"{p['estimated_passes']} [{p['passes_low']}, {p['passes_high']}] | {r['passes']} | {inside} | "
              f"{p['estimated_seconds']:.0f} | {r['seconds']:.0f} | {ratios[r['engine_source']][-1]:.2f} |")
    for engine, values in ratios.items():
        print(f"engine {engine[:8]}: seconds ran / planned median {np.median(values):.2f}, range "
              f"{min(values):.2f}-{max(values):.2f} ({len(values)} splits)")


if __name__ == "__main__":
    raise SystemExit(main())
