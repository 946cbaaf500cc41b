"""The embedded backend: one process, an in-process queue, one worker thread, an in-memory cache."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict

from .backend import PoolParent
from .jobs import FINISHED, RESUBMITTABLE, QueueFull, load_worker_model, make_engine, new_record, run_job
from .metrics_store import MemoryMetrics, count_job, record_finished

log = logging.getLogger(__name__)


class LocalBackend:
    def __init__(self, settings, engine=None, max_finished: int = 10_000):
        self.settings = settings
        self.metrics = MemoryMetrics()
        self.engine = engine
        self.load_error: str | None = None
        self._jobs: OrderedDict[str, dict] = OrderedDict()
        self._cancel: set[str] = set()
        self._pools: dict[str, list[dict]] = {}
        self._parents: dict[str, PoolParent] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._max_finished = max_finished
        self._thread = threading.Thread(target=self._work, name="iclsel-worker", daemon=True)

    # lifecycle and health
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def not_ready_reason(self) -> str | None:
        if self.load_error:
            return f"model failed to load: {self.load_error}"
        return None if self.engine is not None else "model is loading"

    def fingerprint(self) -> str | None:
        return self.engine.model.fingerprint if self.engine is not None else None

    def depth(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if job["status"] not in FINISHED)

    def live_workers(self) -> int:
        return 1 if self.engine is not None and self._thread.is_alive() else 0

    # jobs
    def submit(self, job_id: str, spec: dict) -> tuple[dict, bool]:
        with self._lock:
            existing = self._jobs.get(job_id)
            if existing is not None and existing["status"] not in RESUBMITTABLE:
                return dict(existing), False
            if sum(1 for job in self._jobs.values() if job["status"] not in FINISHED) >= self.settings.max_queue:
                raise QueueFull
            record = self._jobs[job_id] = new_record(job_id, spec)
            self._cancel.discard(job_id)
            self._forget_old()
        count_job(self.metrics, "queued")
        self._queue.put(job_id)
        return dict(record), True

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            record = self._jobs.get(job_id)
            return dict(record) if record is not None else None

    def cancel(self, job_id: str) -> dict | None:
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                return None
            if record["status"] == "queued":
                record.update(status="cancelled", finished_at=time.time())
                cancelled_now = True
            else:
                cancelled_now = False
                if record["status"] == "running":
                    self._cancel.add(job_id)
            snapshot = dict(record)
        if cancelled_now:
            record_finished(self.metrics, "cancelled", None)
        return snapshot

    # pools
    def put_pool(self, pool_id: str, records: list[dict]) -> bool:
        with self._lock:
            created = pool_id not in self._pools
            self._pools[pool_id] = records
            return created

    def get_pool(self, pool_id: str) -> list[dict] | None:
        with self._lock:
            return self._pools.get(pool_id)

    def delete_pool(self, pool_id: str) -> bool:
        with self._lock:
            self._parents.pop(pool_id, None)
            return self._pools.pop(pool_id, None) is not None

    def grow_pool(self, pool_id: str, records: list[dict], parent: PoolParent) -> bool:
        with self._lock:
            self._parents.setdefault(pool_id, parent)
        return self.put_pool(pool_id, records)

    def pool_parent(self, pool_id: str) -> PoolParent | None:
        with self._lock:
            return self._parents.get(pool_id)

    # the worker thread
    def _work(self) -> None:
        if self.engine is None:
            try:
                from iclsel.models.cache import MemoryCache

                self.engine = make_engine(load_worker_model(self.settings), self.settings, MemoryCache())
            except Exception as error:
                log.exception("model failed to load")
                self.load_error = f"{type(error).__name__}: {error}"
                return
        while (job_id := self._queue.get()) is not None:
            with self._lock:
                record = self._jobs.get(job_id)
                if record is None or record["status"] != "queued":
                    continue
                record.update(status="running", started_at=time.time(), attempts=record["attempts"] + 1,
                              worker="embedded")
                spec = record["spec"]
            count_job(self.metrics, "running")

            def progress(phase: str, done: int, total: int, record=record) -> None:
                record["progress"] = {"phase": phase, "done": done, "total": total}

            status, result, error = run_job(self.engine, spec, progress, lambda: job_id in self._cancel)
            with self._lock:
                record.update(status=status, result=result, error=error, finished_at=time.time())
                self._cancel.discard(job_id)
            record_finished(self.metrics, status, result)

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job["status"] in FINISHED]
        for key in finished[: max(0, len(finished) - self._max_finished)]:
            del self._jobs[key]
