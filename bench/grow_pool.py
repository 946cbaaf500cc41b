"""Growing a pool: what a selection on the grown pool saves by resuming the parent pool's selection.

    python -m bench.grow_pool                       # SmolLM2 (default model), BBC dev seed 10: 40 + 8 demos, 16 queries
    python -m bench.grow_pool --model tiny --dataset imdb --seed 11

Runs, on one loaded model: the gradient selection on the parent pool; the same selection on the grown
pool resumed from it (models/warm.py: as the HTTP API does for a pool grown with POST
/v1/pools/{id}/examples), with the parent's cache; and the same selection on the grown pool cold (a
fresh cache, no parent), --repeats times. Prints passes, cache hits, seconds and the exact loss of each,
the prompt each returned (`strategy`), and the warm/cold ratios (seconds: the fastest of the repeats). The anchor
is reused only when the slot width stays, so the longest of the pool's demos (in the prompt's tokens, as the
layout counts them) is placed in the parent part; the script reports whether the width stayed. The request is the
default one unless --params says otherwise: where the parent's gate returns per-query retrieval there is no
searched set to resume (`resumed` false), and the grown pool's selection gains only the parent's cache (its pool
embeddings).
Writes --out (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/grow_pool.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from iclsel.models.cache import MemoryCache
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.loading import load_model
from iclsel.models.warm import WarmStart

from . import data as bench_data
from .protocol import DATASET_SPECS, SEPARATOR, Sizes, label_options, load_examples, make_split


def figures(result: dict) -> dict:
    return {"forward_equivalent": result["passes"]["forward_equivalent"],
            "selection_forward_equivalent": result["passes"]["selection_forward_equivalent"],
            "backward": result["passes"]["backward"], "cache": result["cache"],
            "seconds": result["timings"]["total"], "exact_loss": result["exact"]["loss"],
            "selected": [demo["id"] for demo in result["selected"]],
            "strategy": {key: (result.get("strategy") or {}).get(key) for key in ("chosen", "by")},
            "notes": {key: result["notes"].get(key) for key in ("moves", "batches", "budget_exhausted", "warm_start")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="bbc", choices=sorted(DATASET_SPECS))
    parser.add_argument("--seed", type=int, default=10, help="the split (dev seeds are 10 and up)")
    parser.add_argument("--pool", type=int, default=40, help="demos in the parent pool")
    parser.add_argument("--grow", type=int, default=8, help="demos appended")
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--model", default="default", help="'tiny' for the tiny random test model")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the three selections (seconds: the fastest)")
    parser.add_argument("--params", type=json.loads, default={},
                        help="the request's params as JSON, e.g. '{\"strategy\": \"set\"}' (default: none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    spec = DATASET_SPECS[args.dataset]
    examples = load_examples(bench_data.ensure(args.dataset))
    split = make_split(examples, args.seed, Sizes(pool=args.pool + args.grow, select=args.queries, test=0))
    if args.model == "tiny":
        from iclsel.models.tiny import build_tiny_model

        model = load_model(str(build_tiny_model(tempfile.mkdtemp())))
    else:
        model = load_model(args.model)
    options = label_options(examples)
    demos = list(split.pool)
    lengths = Engine(model).layout(demos, split.select, spec.k, options, spec.template, SEPARATOR).demo_lengths
    longest = int(lengths.argmax())
    if longest >= args.pool:  # the widest demo (in the prompt's tokens) goes into the parent part: the width stays
        demos[longest], demos[args.pool - 1] = demos[args.pool - 1], demos[longest]

    def request(pool, warm=None):
        return SelectionRequest(pool=pool, queries=split.select, k=spec.k, template=spec.template, separator=SEPARATOR,
                                options=options, seed=args.seed, params=args.params,
                                warm_start=None if warm is None else warm.to_dict())

    runs = []
    for _ in range(args.repeats):  # interleaved, each on fresh caches, so that machine load hits all three alike
        engine = Engine(model, cache=MemoryCache())
        parent = engine.select(request(demos[:args.pool]))
        resumed = WarmStart.of("parent", args.pool, parent)  # None where the parent returned no searched set
        warm = engine.select(request(demos, resumed))
        cold = Engine(model, cache=MemoryCache()).select(request(demos))
        runs.append({"resumed": resumed is not None, "parent": figures(parent), "warm": figures(warm),
                     "cold": figures(cold)})
    width = {name: engine.layout(pool, split.select, spec.k, options, spec.template, SEPARATOR).width
             for name, pool in (("parent", demos[:args.pool]), ("grown", demos))}
    fastest = {name: min(run[name]["seconds"] for run in runs) for name in ("parent", "warm", "cold")}
    report = {"dataset": args.dataset, "seed": args.seed, "params": args.params, "pool": args.pool, "grow": args.grow,
              "queries": args.queries, "k": spec.k, "model": parent["model"]["name"], "frame_width": width,
              **runs[0], "fastest_seconds": fastest, "seconds_per_run": [
                  {name: run[name]["seconds"] for name in ("parent", "warm", "cold")} for run in runs],
              "ratio_warm_to_cold": {
                  **{key: round(runs[0]["warm"][key] / max(runs[0]["cold"][key], 1e-9), 3)
                     for key in ("forward_equivalent", "selection_forward_equivalent")},
                  "fastest_seconds": round(fastest["warm"] / fastest["cold"], 3)}}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
