"""Does a pool that comes back pay its embeddings again? The default request on one pool with another query set.

    python -m bench.experiments.embedding_cache --dataset imdb-tail --n 1000

bench.scale's split (a dev seed: 32 selection queries and 200 held-out ones cut first, then a pool of n), then the
default gradient request (auto, the held-out inputs as targets) three times:
    first   on the selection queries, a fresh engine;
    again   the same engine, another query set (32 of the held-out queries) on the same pool: it finds the pool's
            embeddings in the engine's cache (its anchors and exact runs are of other queries: not cached);
    fresh   that second request on a fresh engine (nothing cached): what it costs without the cache.
Prints each call's seconds, selection passes, the validate phase (the pool's embeddings and the held-out checks)
and the prompt returned; appends the record to results/embedding_cache.jsonl.
"""

from __future__ import annotations

import argparse
import time

import torch

from iclsel.models.cache import MemoryCache
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.loading import load_model

from .. import data as bench_data
from .. import report
from ..protocol import SEPARATOR, label_options, load_examples
from ..quality import BENCH_DIR, engine_source_hash
from ..scale import TEMPLATES, scale_split
from .dev import append_record

RESULTS = BENCH_DIR / "experiments" / "results" / "embedding_cache.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imdb-tail", choices=sorted(TEMPLATES))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=10, help="a dev seed")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    examples = load_examples(bench_data.ensure(args.dataset))
    split = scale_split(examples, args.seed, args.n, 32, 200)
    model = load_model(args.model)
    targets = [t.input for t in split.test]

    def call(engine: Engine, queries) -> dict:
        request = SelectionRequest(pool=split.pool, queries=queries, k=4, method="gradient",
                                   options=label_options(examples), template=TEMPLATES[args.dataset],
                                   separator=SEPARATOR, seed=args.seed, targets=targets)
        started = time.perf_counter()
        result = engine.select(request)
        return {"seconds": time.perf_counter() - started,
                "passes": result["passes"]["selection_forward_equivalent"],
                "validate_seconds": result["timings"].get("validate"),
                "returned": result["strategy"]["chosen"]}

    engine = Engine(model, cache=MemoryCache())
    calls = {"first": call(engine, split.select), "again": call(engine, split.test[:32]),
             "fresh": call(Engine(model, cache=MemoryCache()), split.test[:32])}
    print("| call | seconds | selection passes | validate s | returned |\n|---|---|---|---|---|")
    for name, c in calls.items():
        print(f"| {name} | {c['seconds']:.1f} | {c['passes']} | {c['validate_seconds']:.1f} | {c['returned']} |")
    append_record(RESULTS, {"dataset": args.dataset, "n": args.n, "seed": args.seed, "calls": calls,
                            "torch_threads": torch.get_num_threads(), "engine_source": engine_source_hash(),
                            "machine": report.machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
