"""A TensorCache in Redis: safetensors bytes in chunks, a manifest written last, TTL on every key.

    <prefix>cache:<h>            manifest JSON {"token", "chunks", "bytes", "sha256"}
    <prefix>cache:<h>:<token>:<i> chunk i of the safetensors bytes (at most chunk_bytes each)

h is a hash of the engine's key. A writer puts its chunks under a fresh token and the manifest
last, so readers see a whole entry or none (concurrent writers never share chunk keys); an entry
whose chunks are missing or whose hash does not match is a miss. Hits refresh the TTL; chunks of a
replaced entry expire with their TTL.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import redis
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors


class RedisTensorCache:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, chunk_bytes: int = 8 << 20):
        # a client with decode_responses=False: chunks are bytes
        self.client, self.prefix, self.ttl_s, self.chunk_bytes = client, prefix + "cache:", ttl_s, chunk_bytes

    @classmethod
    def from_settings(cls, settings) -> "RedisTensorCache":
        client = redis.Redis.from_url(settings.redis_url, decode_responses=False,
                                      socket_timeout=settings.redis_timeout_s,
                                      socket_connect_timeout=settings.redis_timeout_s)
        return cls(client, settings.redis_prefix, settings.cache_ttl_s, settings.cache_chunk_bytes)

    def _manifest_key(self, key: str) -> str:
        return self.prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        return self.read(self._manifest_key(key))

    def manifest_keys(self) -> list[str]:
        """The manifest key of every entry stored now (a scan: for checks, not for serving)."""
        names = (name.decode() for name in self.client.scan_iter(match=self.prefix + "*", count=1000))
        return [name for name in names if ":" not in name[len(self.prefix):]]

    def read(self, manifest_key: str) -> dict[str, torch.Tensor] | None:
        """The tensors of the entry with this manifest key; None when it is missing or not whole."""
        raw = self.client.get(manifest_key)
        if raw is None:
            return None
        manifest = json.loads(raw)
        chunk_keys = [f"{manifest_key}:{manifest['token']}:{i}" for i in range(manifest["chunks"])]
        chunks = self.client.mget(chunk_keys) if chunk_keys else []
        if any(chunk is None for chunk in chunks):
            return None
        data = b"".join(chunks)
        if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            return None
        pipe = self.client.pipeline(transaction=False)
        for name in [manifest_key, *chunk_keys]:
            pipe.expire(name, self.ttl_s)
        pipe.execute()
        return load_tensors(data)

    def has(self, key: str) -> bool:
        """Whether an entry's manifest is there (cheap; get() still checks the chunks)."""
        return bool(self.client.exists(self._manifest_key(key)))

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        data = save_tensors({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()})
        manifest_key = self._manifest_key(key)
        token = uuid.uuid4().hex[:12]
        chunks = [data[i:i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)]
        for i, chunk in enumerate(chunks):  # one command each: no giant pipeline buffered in memory
            self.client.set(f"{manifest_key}:{token}:{i}", chunk, ex=self.ttl_s)
        manifest = {"token": token, "chunks": len(chunks), "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()}
        self.client.set(manifest_key, json.dumps(manifest), ex=self.ttl_s)
