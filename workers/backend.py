"""What the HTTP API needs from a job backend, and the one error it may raise for being unreachable.

Two backends implement it: LocalBackend (workers/local.py: one process, a worker thread, memory)
and RedisQueue (workers/redis_queue.py: Redis Streams, workers in other processes). The API depends
on this Protocol only, so app/ imports neither Redis nor the ML core.

Job records are JSON-able dicts (workers/jobs.py: new_record); pools are lists of example records
{"id", "input", "output"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .metrics_store import MetricsStore


class BackendUnavailable(Exception):
    """The store behind the backend (Redis) does not answer; the request may succeed later."""


@dataclass(frozen=True)
class PoolParent:
    """A pool grown by appending examples to ``id``: its first ``size`` records are that pool's."""
    id: str
    size: int


@runtime_checkable
class Backend(Protocol):
    """Any method may raise BackendUnavailable."""

    metrics: MetricsStore  # what workers recorded, read by /metrics

    def start(self) -> None:
        """Called once when the API starts (the embedded backend starts its worker thread here)."""

    def stop(self) -> None:
        """Called once when the API stops."""

    def not_ready_reason(self) -> str | None:
        """None when jobs can run now (a model is loaded, the store answers), else why not."""

    def fingerprint(self) -> str | None:
        """The fingerprint of the model jobs run on (part of every job id); None while none is loaded."""

    def depth(self) -> int:
        """Jobs queued or running."""

    def live_workers(self) -> int:
        """Workers with a model loaded."""

    def submit(self, job_id: str, spec: dict) -> tuple[dict, bool]:
        """(record, created): a new queued job, or the existing one with that id unless it failed or
        was cancelled. Raises QueueFull when settings.max_queue jobs are queued or running."""

    def get(self, job_id: str) -> dict | None:
        """The job record, or None when there is no such job (finished jobs expire)."""

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued job at once, a running one at its next checkpoint; the record, or None."""

    def put_pool(self, pool_id: str, records: list[dict]) -> bool:
        """Store a pool under its content hash; False when it was stored already."""

    def get_pool(self, pool_id: str) -> list[dict] | None:
        """The pool's records, or None."""

    def delete_pool(self, pool_id: str) -> bool:
        """False when there was no such pool."""

    def grow_pool(self, pool_id: str, records: list[dict], parent: PoolParent) -> bool:
        """Store a pool grown from ``parent`` (as put_pool), and remember the parent unless the pool has one
        already; False when the pool was stored already."""

    def pool_parent(self, pool_id: str) -> PoolParent | None:
        """The pool this one was grown from, or None."""
