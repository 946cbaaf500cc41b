"""A selection's result does not depend on what the tensor cache held when it ran.

bench/chaos.py found results that differed from an undisturbed run of the same request: the subsample
search's budget counted only the model passes run, so anchor gradients computed by another worker (or an
earlier attempt, or another job on the same data) left it budget for more moves. The request below is one
it met (the tiny model, 8 demos, 4 queries): with the anchor entries already cached, it made 3 moves
instead of 2 and returned another set. Under max_passes the same held for the room left: counted on the passes
run, a job that found anchors cached took one more batch (max_passes 90) or returned another set (80)."""

from __future__ import annotations

import pytest

from iclsel.models.cache import MemoryCache
from iclsel.models.data import Example
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.loading import load_model

POOL = [("a mess from start to finish", "negative"), ("boring plot and terrible dialogue", "negative"),
        ("great acting throughout", "positive"), ("tedious and predictable", "negative"),
        ("clever, warm and sharp", "positive"), ("the acting was wooden", "negative"),
        ("flat and far too long", "negative"), ("a wonderful, moving film", "positive")]
QUERIES = [("0: a great film", "positive"), ("1: a dull film", "negative"), ("2: a moving film", "positive"),
           ("3: a awful film", "negative")]
TAG = "pool0-89"


def request(max_passes: int | None = None) -> SelectionRequest:
    pool = [Example(f"{TAG}-{i}", f"{text} ({TAG})", label) for i, (text, label) in enumerate(POOL)]
    queries = [Example(str(i), f"{TAG} {text}", label) for i, (text, label) in enumerate(QUERIES)]
    return SelectionRequest(pool=pool, queries=queries, k=2, method="gradient", seed=89, max_passes=max_passes)


def decisions(result: dict) -> dict:
    notes = result["notes"]
    return {"selected": [demo["id"] for demo in result["selected"]], "exact": result["exact"],
            **{name: notes[name] for name in ("moves", "batches", "evaluated", "spent", "budget_exhausted")}}


@pytest.mark.parametrize("cached, max_passes", [("anchor:", None), ("exact:", None), ("exact-rows:", None),
                                                ("prompt:", None), ("embed:", None), ("", None),
                                                ("anchor:", 80), ("anchor:", 90), ("exact:", 90), ("", 90)])
def test_the_same_request_decides_the_same_whatever_the_cache_held(tiny_model_dir, cached, max_passes):
    model = load_model(str(tiny_model_dir), device="cpu")
    cold_cache = MemoryCache()
    cold = Engine(model, cache=cold_cache, anchor_chunk=2).select(request(max_passes))

    warm_cache = MemoryCache()  # entries of one kind ("" = all) as another worker or an earlier attempt left them
    for key, (tensors, _) in cold_cache._items.items():
        if key.startswith(cached):
            warm_cache.put(key, tensors)
    warm = Engine(model, cache=warm_cache, anchor_chunk=2).select(request(max_passes))
    assert warm["passes"]["forward_equivalent"] < cold["passes"]["forward_equivalent"]  # it did reuse work
    assert decisions(warm) == decisions(cold)
