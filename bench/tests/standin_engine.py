"""A STAND-IN for the real Engine, for testing the benchmark harness only (never used by bench.quality's
command line). It has the engine's benchmark-facing methods and result shapes; its numbers mean nothing."""

from __future__ import annotations

import hashlib
import random


class StandInModel:
    fingerprint = "standin-model"
    auto_layer = None  # LoadedModel.auto_layer: auto embeds at the last layer


class StandInEngine:
    calls: list[str] = []  # shared log of calls, for tests

    def __init__(self):
        self.model = StandInModel()

    def select(self, request):
        StandInEngine.calls.append(f"select:{request.method}")
        rng = random.Random(f"{request.method}-{request.seed}")
        retrieve = request.params.get("retrieve", 0)
        chosen = rng.sample(request.pool, request.k - retrieve)
        gradient = request.method in ("gradient", "gradre")
        passes = {"forward": 0, "backward": 0, "forward_equivalent": 0}
        if gradient or request.method == "exact":
            passes = {"forward": len(request.queries), "backward": len(request.queries) if gradient else 0}
            passes["forward_equivalent"] = passes["forward"] + 2 * passes["backward"]
        diagnostics = {"spearman": 0.3, "mean_relative_error": 0.5, "zero_order_relative_error": 0.4,
                       "paper_metric": 0.008} if gradient else None
        others = [d for d in request.pool if d not in chosen]
        retrieved = {"slots": retrieve, "by": "topk-embed", "queries": [],
                     "targets": [[d.id for d in random.Random(text).sample(others, retrieve)] for text in request.targets]
                     } if retrieve else None
        return {"selected": [d.to_dict() for d in chosen], "retrieved": retrieved, "passes": passes,
                "timings": {"total": 0.0},
                "diagnostics": diagnostics, "estimate": None, "exact": None, "cache": {"hits": 0, "misses": 0}}

    def evaluate(self, demos, queries, options=None, template="", separator="\n\n", context=None, option_score="sum"):
        StandInEngine.calls.append("evaluate")
        if context is not None:
            assert len(context) == len(queries)
            StandInEngine.calls.append(f"context:{len(context[0])}")
        per_query = demos and isinstance(demos[0], list)
        ids = sorted({d.id for ds in demos for d in ds}) if per_query else [d.id for d in demos]
        rng = random.Random(hashlib.sha256("|".join(ids).encode()).hexdigest())
        options = options or sorted({q.output for q in queries})
        predictions = [q.output if rng.random() < 0.7 else rng.choice(options) for q in queries]
        accuracy = sum(p == q.output for p, q in zip(predictions, queries)) / len(queries)
        return {"accuracy": accuracy, "macro_f1": accuracy * 0.9, "loss": 0.6, "predictions": predictions,
                "passes": {"forward": len(queries), "backward": 0, "forward_equivalent": len(queries)},
                "seconds": 0.0}

    def retrieve_per_query(self, pool, queries, k, method):
        StandInEngine.calls.append(f"retrieve:{method}")
        return [random.Random(f"{method}-{q.id}").sample(pool, k) for q in queries]
