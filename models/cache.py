"""Tensor cache protocol and the in-memory default. The Redis implementation lives in workers/."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Protocol

import torch

if TYPE_CHECKING:
    from .ledger import Stats


def content_key(namespace: str, content: dict) -> str:
    """A tensor cache key: ``namespace`` and the hash of everything the cached tensors depend on (``content``, JSON)."""
    return f"{namespace}:" + hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


class TensorCache(Protocol):
    def get(self, key: str) -> dict[str, torch.Tensor] | None: ...

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None: ...


def through(cache: TensorCache, key: str, compute: Callable[[], dict[str, torch.Tensor]],
            stats: "Stats | None" = None) -> tuple[dict[str, torch.Tensor], bool]:
    """(the entry under ``key``, True), else (compute(), stored under ``key`` whole, False); ``stats`` counts the
    hit or the miss."""
    entry = cache.get(key)
    if stats is not None:
        stats.looked_up(int(entry is not None), int(entry is None))
    if entry is not None:
        return entry, True
    entry = compute()
    cache.put(key, entry)
    return entry, False


class MemoryCache:
    """A bounded LRU of tensor dicts (by total bytes)."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[dict[str, torch.Tensor], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return dict(item[0])

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        stored = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (stored, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
