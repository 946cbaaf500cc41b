"""The shared set-up of the swap-fidelity experiments: IMDB pool 100 (50/50), 32 queries (16/16),
k=4, the default model, a label-balanced anchor and all of its single swaps."""

import json
import os
import random

import torch

from iclsel.models.cache import MemoryCache
from iclsel.models.context import ModelAccess, SelectionContext, SelectionProblem
from iclsel.models.data import read_jsonl
from iclsel.models.engine import Engine
from iclsel.models.loading import load_model
from iclsel.models.selectors import _single_swaps

CACHE_PATH = os.environ.get("ICLSEL_SWAP_CACHE", "/tmp/iclsel_swap_exact.json")


def setup():
    torch.manual_seed(0)
    examples = read_jsonl(os.path.join(os.path.dirname(__file__), "..", "data", "imdb.jsonl"), "imdb")
    rng = random.Random(0)
    rng.shuffle(examples)
    positive = [e for e in examples if e.output == "positive"]
    negative = [e for e in examples if e.output == "negative"]
    pool = positive[:50] + negative[:50]
    rng.shuffle(pool)
    queries = positive[50:66] + negative[50:66]
    model = load_model("default")
    engine = Engine(model)
    layout = engine.layout(pool, queries, 4, None, "Review: {input}\nSentiment: {output}", "\n\n")
    runner = engine._runner(layout)
    ctx = SelectionContext(SelectionProblem(layout, pool, queries, 4),
                           ModelAccess(runner, model.tokenizer, MemoryCache(), model.fingerprint), 0, lambda *a: None)
    anchor = ctx.balanced_subset()
    return ctx, runner, layout, anchor, _single_swaps(anchor, len(pool))


def load_exact_cache() -> dict:
    return json.load(open(CACHE_PATH)) if os.path.exists(CACHE_PATH) else {}
