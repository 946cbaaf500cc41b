"""Job metrics that workers record and the API exports, in memory or in one Redis hash.

Workers may be other processes on other machines, so what they measure goes into a store the API
reads at scrape time (app/metrics.py turns a snapshot into Prometheus families). Counters add up,
gauges are overwritten; histograms are kept as cumulative bucket counters plus _sum and _count.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Protocol

PASS_KINDS = ("forward", "backward")  # model_passes_total{kind}
ALWAYS_PHASES = ("total",)  # phases every finished job times (the engine's whole selection)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600, math.inf)

Key = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, sorted (label, value) pairs)


class MetricsStore(Protocol):
    """MemoryMetrics (embedded mode) or RedisMetrics (shared by the API and all workers)."""

    def apply(self, increments: dict[Key, float], gauges: dict[Key, float]) -> None:
        """Add the increments to counters and overwrite the gauges, in one step."""

    def snapshot(self) -> dict[Key, float]:
        """Every value stored."""


def _key(name: str, labels: dict[str, str]) -> Key:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


class MemoryMetrics:
    def __init__(self):
        self._values: dict[Key, float] = {}
        self._lock = threading.Lock()

    def apply(self, increments: dict[Key, float], gauges: dict[Key, float]) -> None:
        with self._lock:
            for key, amount in increments.items():
                self._values[key] = self._values.get(key, 0.0) + amount
            self._values.update(gauges)

    def snapshot(self) -> dict[Key, float]:
        with self._lock:
            return dict(self._values)


class RedisMetrics:
    def __init__(self, client, key: str):
        self.client, self.key = client, key

    def apply(self, increments: dict[Key, float], gauges: dict[Key, float]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, amount in increments.items():
            pipe.hincrbyfloat(self.key, json.dumps(key), amount)
        if gauges:
            pipe.hset(self.key, mapping={json.dumps(key): value for key, value in gauges.items()})
        pipe.execute()

    def snapshot(self) -> dict[Key, float]:
        snapshot = {}
        for field, value in self.client.hgetall(self.key).items():
            name, labels = json.loads(field)
            snapshot[(name, tuple(tuple(pair) for pair in labels))] = float(value)
        return snapshot


def count_job(store, status: str) -> None:
    store.apply({_key("jobs_total", {"status": status}): 1}, {})


def count_anchor_task(store, worker: str) -> None:
    store.apply({_key("anchor_tasks_total", {"worker": worker}): 1}, {})


def record_finished(store, status: str, result: dict | None) -> None:
    """Count a finished job and what its result says: cache use, model passes, phase times, estimate error."""
    increments: dict[Key, float] = {_key("jobs_total", {"status": status}): 1}
    gauges: dict[Key, float] = {}
    if result:
        cache = result.get("cache") or {}
        increments[_key("cache_hits_total", {})] = cache.get("hits", 0)
        increments[_key("cache_misses_total", {})] = cache.get("misses", 0)
        for kind in PASS_KINDS:
            increments[_key("model_passes_total", {"kind": kind})] = (result.get("passes") or {}).get(kind, 0)
        for phase, seconds in (result.get("timings") or {}).items():
            for bound in PHASE_BUCKETS:
                if seconds <= bound:
                    increments[_key("phase_duration_seconds_bucket", {"phase": phase, "le": bound})] = 1
            increments[_key("phase_duration_seconds_sum", {"phase": phase})] = seconds
            increments[_key("phase_duration_seconds_count", {"phase": phase})] = 1
        for measure, value in _numbers(result.get("diagnostics")):
            gauges[_key("estimate_error", {"measure": measure})] = value
    store.apply(increments, gauges)


def _numbers(diagnostics, prefix: str = ""):
    """(dotted name, value) for every finite number in the diagnostics, nested dicts included."""
    if not isinstance(diagnostics, dict):
        return
    for name, value in diagnostics.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield f"{prefix}{name}", float(value)
