"""RedisTensorCache against a real Redis: round trips, chunking, all-or-nothing reads, TTLs, prefix."""

from __future__ import annotations

import json

import pytest
import redis
import torch

from iclsel.workers.redis_cache import RedisTensorCache
from service_fixtures import REDIS_URL, redis_prefix  # noqa: F401


@pytest.fixture
def cache(redis_prefix):  # noqa: F811
    client = redis.Redis.from_url(REDIS_URL, decode_responses=False)
    return RedisTensorCache(client, redis_prefix, ttl_s=600, chunk_bytes=1024)


def tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"grad": torch.randn(17, 33), "scores": torch.randn(5, 2).double(), "ids": torch.arange(7),
            "half": torch.randn(3, 4).to(torch.bfloat16), "view": torch.randn(8, 8)[:, 2]}


def test_round_trip_in_chunks_with_ttl_under_the_prefix(cache, redis_prefix):  # noqa: F811
    stored = tensors()
    cache.put("anchor:abc", stored)
    loaded = cache.get("anchor:abc")
    assert loaded.keys() == stored.keys()
    for name, tensor in stored.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    keys = [key.decode() for key in cache.client.scan_iter(match=redis_prefix + "*")]
    assert len(keys) > 3 and all(key.startswith(redis_prefix + "cache:") for key in keys)  # chunks + manifest
    assert all(0 < cache.client.ttl(key) <= 600 for key in keys)


def test_missing_entries_are_misses(cache):
    assert cache.get("never stored") is None


def test_incomplete_or_corrupt_entries_are_misses(cache):
    cache.put("k1", tensors())
    manifest_key = cache._manifest_key("k1")
    manifest = json.loads(cache.client.get(manifest_key))
    cache.client.delete(f"{manifest_key}:{manifest['token']}:1")
    assert cache.get("k1") is None

    cache.put("k2", tensors())
    manifest_key = cache._manifest_key("k2")
    manifest = json.loads(cache.client.get(manifest_key))
    cache.client.set(f"{manifest_key}:{manifest['token']}:0", b"x" * 1024)
    assert cache.get("k2") is None


def test_overwrite_replaces_the_entry_whole(cache):
    cache.put("k", {"a": torch.zeros(3)})
    cache.put("k", {"b": torch.ones(600)})
    assert list(cache.get("k")) == ["b"]


def test_engine_uses_it(tiny_model_dir, cache):
    from iclsel.models.data import examples_from_records
    from iclsel.models.engine import Engine, SelectionRequest
    from iclsel.models.loading import load_model
    from iclsel.models.strategy import embedding_key
    from service_fixtures import POOL, QUERIES

    engine = Engine(load_model(str(tiny_model_dir)), cache=cache)
    request = SelectionRequest(examples_from_records(POOL, "pool"), examples_from_records(QUERIES, "queries"), k=2)
    first = engine.select(request)
    second = Engine(engine.model, cache=cache).select(request)  # a fresh engine: nothing in memory
    assert first["cache"]["misses"] > 0 and second["cache"] == {"hits": sum(first["cache"].values()), "misses": 0}
    assert second["passes"]["backward"] == 0 and second["selected"] == first["selected"]
    # auto's pool embeddings are there too, for any worker
    assert cache.get(embedding_key(engine.model.fingerprint, [d.input for d in request.pool]))["vectors"].shape[0] == len(POOL)
