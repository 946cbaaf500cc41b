"""Sharing a large anchor pass over Redis workers (Engine(anchor_runner=...), models/tasks.py).

When a job's anchor pass has several missing query chunks, the engine hands their anchor tasks
(tasks.AnchorTask, JSON, each with the cache key its tensors go to) to AnchorSharing.run, which
  1. posts one {"kind": "anchor-task", "job", "task"} entry per task to the stream <prefix>anchors
     (idle workers read it before the job stream; RedisWorker hands the entries to compute_entry),
  2. works through the tasks itself, in order,
  3. waits (at most settings.anchor_wait_s) for the tasks other workers are computing,
and returns; the engine computes whatever is still missing from the cache.

A task is computed by whoever first sets <prefix>anchor-claim:<h> (SET NX, value = worker name,
TTL 3 heartbeats, refreshed by the claimer's heartbeat thread), so two workers never compute the
same chunk at once; a claim of a dead worker expires and the task is redone by the job's worker.
Tensors go to the Redis tensor cache (manifest written last: never half visible). Nothing but
JSON crosses the process boundary, and a task made for another model fingerprint is refused.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from .jobs import cancel_checkpoint
from .metrics_store import count_anchor_task
from .redis_queue import cancel_requested

if TYPE_CHECKING:  # models/ (torch) is imported when a task is computed, not with this module
    from iclsel.models.tasks import AnchorTask

log = logging.getLogger(__name__)

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class AnchorSharing:
    """One per worker process: the engine's anchor_runner and the handler of "anchor-task" entries.

    model is the worker's loaded model (the one its engine runs on): tasks are computed on it."""

    def __init__(self, queue, cache, name: str, model):
        self.queue, self.cache, self.name, self.model = queue, cache, name, model
        self.settings, self.client = queue.settings, queue.client
        self.stream = queue.anchor_stream
        self.job = threading.local()  # the job this thread runs: progress and cancel callbacks (for_job)
        self._claims: set[str] = set()  # claim keys held now (refreshed by heartbeats)
        self._lock = threading.Lock()
        self._release = self.client.register_script(RELEASE)
        self._refresh = self.client.register_script(REFRESH)

    def for_job(self, job_id: str, progress, checkpoint) -> None:
        """The job the calling thread runs next: run() reports its progress and stops at checkpoint()."""
        self.job.id, self.job.progress, self.job.checkpoint = job_id, progress, checkpoint

    @property
    def claim_ms(self) -> int:
        return int(3 * self.settings.heartbeat_s * 1000)

    def claim_key(self, task: AnchorTask) -> str:
        return self.queue.prefix + "anchor-claim:" + hashlib.sha256(task.key.encode()).hexdigest()[:40]

    # ---------- the engine's anchor_runner ----------
    def run(self, tasks: list[AnchorTask]) -> None:
        progress = getattr(self.job, "progress", lambda phase, done, total: None)
        checkpoint = getattr(self.job, "checkpoint", lambda: None)
        job_id = getattr(self.job, "id", "")
        entries = []
        try:
            for task in tasks:
                entries.append(self.client.xadd(self.stream, {"kind": "anchor-task", "job": job_id,
                                                               "task": task.to_json()}))
            deadline = time.monotonic() + self.settings.anchor_wait_s
            pending = list(tasks)
            while pending and time.monotonic() < deadline:
                progress("anchor", len(tasks) - len(pending), len(tasks))
                checkpoint()
                waiting = []
                for task in reversed(pending):  # from the back: idle workers take the stream from the front
                    if self.cache.has(task.key):
                        continue
                    if not self.compute(task, checkpoint):  # claimed by a live worker: wait for it
                        waiting.append(task)
                    checkpoint()
                    progress("anchor", len(tasks) - len(waiting), len(tasks))
                pending = [task for task in waiting if not self.cache.has(task.key)]
                if pending:
                    time.sleep(0.05)
            if pending:
                log.warning("%d anchor tasks not done after %.0f s; computing them here", len(pending),
                            self.settings.anchor_wait_s)
        finally:
            if entries:  # entries nobody took are of no use any more
                try:
                    self.client.xdel(self.stream, *entries)
                except Exception:  # Redis gone: they are skipped as done (cache hit) or stale later
                    log.warning("could not delete posted anchor tasks", exc_info=True)

    # ---------- computing one task ----------
    def compute(self, task: AnchorTask, checkpoint=lambda: None) -> bool:
        """Compute task into the cache unless it is there or claimed; False when another worker holds it."""
        if task.model != self.model.fingerprint:
            raise ValueError(f"anchor task for model {task.model!r}, this worker has {self.model.fingerprint!r}")
        claim = self.claim_key(task)
        if not self.client.set(claim, self.name, nx=True, px=self.claim_ms):
            return False
        with self._lock:
            self._claims.add(claim)
        try:
            if not self.cache.has(task.key):
                from iclsel.models.tasks import run_anchor_task

                tensors = run_anchor_task(self.model, task, self.settings.batch_size, checkpoint)
                self.cache.put(task.key, tensors.named())
                count_anchor_task(self.queue.metrics, self.name)
        finally:
            with self._lock:
                self._claims.discard(claim)
            self._release(keys=[claim], args=[self.name])
        return True

    def compute_entry(self, fields: dict) -> None:
        """An "anchor-task" stream entry (another worker's job): compute it unless that job was cancelled."""
        from iclsel.models.tasks import AnchorTask

        task = AnchorTask.from_json(fields["task"])
        if task.model != self.model.fingerprint:
            log.error("refusing an anchor task made for model %s", task.model)
            return
        job_key = self.queue.job_key(fields.get("job", ""))
        if self.client.hexists(job_key, "cancel") or self.client.hget(job_key, "status") in ("cancelled", "failed"):
            return
        from iclsel.models.engine import Cancelled

        try:  # stop when the job is cancelled meanwhile
            self.compute(task, cancel_checkpoint(cancel_requested(self.client, job_key)))
        except Cancelled:
            log.info("dropped an anchor task of cancelled job %s", fields.get("job"))

    def refresh_claims(self) -> None:
        """Heartbeat: keep this worker's claims alive while it computes."""
        with self._lock:
            claims = list(self._claims)
        for claim in claims:
            self._refresh(keys=[claim], args=[self.name, self.claim_ms])
