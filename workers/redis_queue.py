"""Jobs through Redis: a stream with a consumer group, job records in hashes (JSON fields, never pickle).

Keys (all under settings.redis_prefix):
    jobs            stream of {"kind": "selection", "job": id}; consumer group "workers"; entries are acked
                    and deleted when done, so its length is the queue depth (queued + running)
    anchors         stream of {"kind": "anchor-task", "job", "task"} (workers/anchors.py); same group
    anchor-claim:<h> the worker computing one anchor task (SET NX, short TTL)
    cache:...       cached tensors: anchors, exact runs, prompt scores, embeddings (workers/redis_cache.py)
    job:<id>        hash: status, spec, progress, result, error, created_at, ... (JSON values); expires
                    settings.job_ttl_s after the job finished; "finishes" counts the results written
                    (more than 1: the job completed twice), "stale_finishes" the outcomes of runs whose job
                    had been taken over (dropped), "cancel" asks a running job to stop
    pool:<id>       JSON list of pool records
    pool-parent:<id> JSON {"id", "size"} of the pool a grown pool was appended to (backend.PoolParent)
    workers         hash worker name -> JSON {fingerprint, model, expires_at}, refreshed by heartbeats
    model           the fingerprint the last worker to start announced
    metrics         see metrics_store.RedisMetrics

A worker that takes a job keeps claiming its stream entry (XCLAIM, resetting its idle time) from a
heartbeat thread; entries idle longer than settings.claim_idle_s belong to a dead worker and are
taken over with XAUTOCLAIM, so an accepted job is never lost. Jobs that killed settings.max_attempts
workers fail instead of killing more.

Stream entries carry a "kind" (RedisWorker.handlers): "selection" entries in <prefix>jobs, and
"anchor-task" entries in <prefix>anchors (read first), posted by a worker whose job's anchor pass has
several query chunks missing from the cache, so that idle workers compute them (workers/anchors.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

import redis

from .backend import BackendUnavailable, PoolParent
from .jobs import FINISHED, QueueFull, cancel_checkpoint, new_record, run_job
from .metrics_store import RedisMetrics, count_job, record_finished

log = logging.getLogger(__name__)

GROUP = "workers"

SUBMIT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= 'failed' and status ~= 'cancelled' then return 0 end
if tonumber(ARGV[2]) > 0 and redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
redis.call('XADD', KEYS[2], '*', 'kind', 'selection', 'job', ARGV[3])
return 1
"""

CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 'cancelled now'
end
if status == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return status
"""

START = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return {status or 'missing', 0} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
return {'running', attempts}
"""

# Stores a run's outcome only while the job is still that run's (status running, same worker, same attempt):
# a worker that was frozen past claim_idle_s, whose job another worker took over (and may have finished),
# must not write a second result. Its stale outcome is counted in "stale_finishes" and dropped.
FINISH = """
local fence = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts')
if fence[1] ~= 'running' or fence[2] ~= ARGV[2] or fence[3] ~= ARGV[3] then
  if fence[1] then redis.call('HINCRBY', KEYS[1], 'stale_finishes', 1) end
  return 0
end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
redis.call('HDEL', KEYS[1], 'cancel')
redis.call('HINCRBY', KEYS[1], 'finishes', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('XACK', KEYS[2], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[2], ARGV[6])
return 1
"""


def encode(record: dict) -> dict[str, str]:
    return {key: value if key == "status" else json.dumps(value) for key, value in record.items()}


INTERNAL_FIELDS = frozenset({"cancel", "finishes", "stale_finishes"})  # in the job hash, not in the record


def decode(fields: dict[str, str]) -> dict:
    return {key: value if key == "status" else json.loads(value) for key, value in fields.items()
            if key not in INTERNAL_FIELDS}


def worker_name() -> str:
    """A consumer name unique across machines and restarts: host-pid-random."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def cancel_requested(client: redis.Redis, job_key: str, every_s: float = 0.25,
                     run: tuple[str, int] | None = None) -> Callable[[], bool]:
    """should_cancel() for a running job: whether its hash has the "cancel" field or the job has ended
    (an anchor task of another worker's job may still run when that job's worker has stored it as
    cancelled, which also drops the field), or, with run = (worker, attempt), whether the job is no
    longer that run's (taken over after a freeze), asked of Redis at most every every_s seconds (the
    checks sit in tight loops); once true it stays true."""
    last = [0.0, False]

    def should_cancel() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] > every_s:
            cancel, status, worker, attempts = client.hmget(job_key, "cancel", "status", "worker", "attempts")
            taken_over = run is not None and (worker != json.dumps(run[0]) or attempts != str(run[1]))
            last[:] = [now, cancel is not None or status in FINISHED or taken_over]
        return last[1]
    return should_cancel


def unavailable_on_redis_error(method):
    """Backend methods raise BackendUnavailable, not redis errors: the API knows no Redis."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except redis.RedisError as error:
            raise BackendUnavailable(str(error)) from error
    return call


class RedisQueue:
    """The Redis backend (workers/backend.Backend) and what the workers share with it: keys, the
    streams, job records, pools and the workers' registry."""

    def __init__(self, settings, client: redis.Redis | None = None):
        self.settings = settings
        self.client = client or redis.Redis.from_url(settings.redis_url, decode_responses=True,
                                                     socket_timeout=settings.redis_timeout_s,
                                                     socket_connect_timeout=settings.redis_timeout_s)
        self.prefix = settings.redis_prefix
        self.stream = self.prefix + "jobs"
        self.anchor_stream = self.prefix + "anchors"
        self.metrics = RedisMetrics(self.client, self.prefix + "metrics")
        self._submit = self.client.register_script(SUBMIT)
        self._cancel = self.client.register_script(CANCEL)

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @unavailable_on_redis_error
    def start(self) -> None:
        for stream in (self.stream, self.anchor_stream):
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
            except redis.ConnectionError:
                log.warning("redis is not reachable yet")
                return

    @unavailable_on_redis_error
    def stop(self) -> None:
        self.client.close()

    @unavailable_on_redis_error
    def not_ready_reason(self) -> str | None:
        try:
            self.client.ping()
        except redis.RedisError as error:
            return f"redis is not reachable: {error}"
        return None if self.live_workers() else "no worker has a model loaded"

    def workers(self) -> dict[str, dict]:
        now = time.time()
        entries = {name: json.loads(value) for name, value in self.client.hgetall(self.prefix + "workers").items()}
        stale = [name for name, entry in entries.items() if entry["expires_at"] < now - 3600]
        if stale:
            self.client.hdel(self.prefix + "workers", *stale)
        return {name: entry for name, entry in entries.items() if entry["expires_at"] >= now}

    @unavailable_on_redis_error
    def live_workers(self) -> int:
        return len(self.workers())

    @unavailable_on_redis_error
    def fingerprint(self) -> str | None:
        live = [entry["fingerprint"] for entry in self.workers().values()]
        return max(set(live), key=live.count) if live else self.client.get(self.prefix + "model")

    @unavailable_on_redis_error
    def depth(self) -> int:
        return self.client.xlen(self.stream)

    @unavailable_on_redis_error
    def submit(self, job_id: str, spec: dict) -> tuple[dict, bool]:
        record = new_record(job_id, spec)
        flat = [item for pair in encode(record).items() for item in pair]
        outcome = self._submit(keys=[self.job_key(job_id), self.stream],
                               args=[json.dumps(flat), self.settings.max_queue, job_id])
        if outcome == -1:
            raise QueueFull
        if outcome == 1:
            count_job(self.metrics, "queued")
            return record, True
        return self.get(job_id) or record, False

    @unavailable_on_redis_error
    def get(self, job_id: str) -> dict | None:
        fields = self.client.hgetall(self.job_key(job_id))
        return decode(fields) if fields else None

    @unavailable_on_redis_error
    def cancel(self, job_id: str) -> dict | None:
        outcome = self._cancel(keys=[self.job_key(job_id)], args=[json.dumps(time.time()), self.settings.job_ttl_s])
        if outcome is None:
            return None
        if outcome == "cancelled now":
            record_finished(self.metrics, "cancelled", None)
        return self.get(job_id)

    @unavailable_on_redis_error
    def put_pool(self, pool_id: str, records: list[dict]) -> bool:
        return bool(self.client.set(f"{self.prefix}pool:{pool_id}", json.dumps(records), nx=True))

    @unavailable_on_redis_error
    def get_pool(self, pool_id: str) -> list[dict] | None:
        text = self.client.get(f"{self.prefix}pool:{pool_id}")
        return json.loads(text) if text is not None else None

    @unavailable_on_redis_error
    def delete_pool(self, pool_id: str) -> bool:
        deleted = self.client.delete(f"{self.prefix}pool:{pool_id}")
        self.client.delete(f"{self.prefix}pool-parent:{pool_id}")
        return bool(deleted)

    @unavailable_on_redis_error
    def grow_pool(self, pool_id: str, records: list[dict], parent: PoolParent) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.prefix}pool:{pool_id}", json.dumps(records), nx=True)
        pipe.set(f"{self.prefix}pool-parent:{pool_id}", json.dumps({"id": parent.id, "size": parent.size}), nx=True)
        created, _ = pipe.execute()
        return bool(created)

    @unavailable_on_redis_error
    def pool_parent(self, pool_id: str) -> PoolParent | None:
        text = self.client.get(f"{self.prefix}pool-parent:{pool_id}")
        return None if text is None else PoolParent(**json.loads(text))


class RedisWorker:
    """One worker process: takes jobs from the stream and runs them on its engine, one at a time."""

    def __init__(self, queue: RedisQueue, engine, name: str | None = None, sharing=None):
        self.queue, self.engine = queue, engine
        self.sharing = sharing  # workers/anchors.AnchorSharing: shares anchor passes with the other workers
        self.settings = queue.settings
        self.client = queue.client
        self.name = name or worker_name()
        self._start = self.client.register_script(START)
        self._finish_script = self.client.register_script(FINISH)
        self._current: str | None = None  # stream entry id of the job being run
        self.handlers = {"selection": self._run_selection,  # stream entry kind -> handler(entry_id, fields)
                         "anchor-task": self._run_anchor_task}
        self.stop_event = threading.Event()

    def run(self) -> None:
        self.queue.start()
        self.client.set(self.queue.prefix + "model", self.engine.model.fingerprint)
        self._beat()
        beating = threading.Thread(target=self._heartbeats, name="iclsel-heartbeat", daemon=True)
        beating.start()
        log.info("worker %s ready (model %s)", self.name, self.engine.model.fingerprint)
        try:
            while not self.stop_event.is_set():
                try:
                    for entry in self._reclaim() or self._read():
                        self._process(*entry)
                except redis.RedisError as error:  # what was taken and not finished is reclaimed later
                    log.warning("redis unavailable (%s); retrying", error)
                    self._current = None
                    self.stop_event.wait(1)
        finally:
            self.client.hdel(self.queue.prefix + "workers", self.name)

    def _reclaim(self) -> list[tuple[str, dict]]:
        _, entries, _ = self.client.xautoclaim(self.queue.stream, GROUP, self.name,
                                               min_idle_time=int(self.settings.claim_idle_s * 1000), count=1)
        for entry_id, fields in entries:
            log.info("reclaimed %s from a dead worker", fields)
        return entries

    def _read(self) -> list[tuple[str, dict]]:
        """The next entries: anchor tasks first (a running job waits for them), else the next job."""
        reply = self.client.xreadgroup(GROUP, self.name, {self.queue.anchor_stream: ">"}, count=1)
        if not reply:
            reply = self.client.xreadgroup(GROUP, self.name, {self.queue.anchor_stream: ">", self.queue.stream: ">"},
                                           count=1, block=1000)
        reply = sorted(reply or [], key=lambda item: item[0] != self.queue.anchor_stream)
        return [entry for _, entries in reply for entry in entries]

    def _process(self, entry_id: str, fields: dict) -> None:
        handler = self.handlers.get(fields.get("kind", "selection"))
        if handler is None:
            log.error("dropping stream entry %s of unknown kind: %s", entry_id, fields)
            self._done(entry_id)
            return
        handler(entry_id, fields)

    def _run_anchor_task(self, entry_id: str, fields: dict) -> None:
        self._done(entry_id, self.queue.anchor_stream)  # lost if we die: the job's worker redoes it
        if self.sharing is not None:
            self.sharing.compute_entry(fields)

    def _run_selection(self, entry_id: str, fields: dict) -> None:
        job_id = fields["job"]
        key = self.queue.job_key(job_id)
        status, attempts = self._start(keys=[key], args=[json.dumps(time.time()), json.dumps(self.name)])
        if status != "running":  # cancelled while queued, finished by another worker, or expired
            self._done(entry_id)
            return
        if attempts > self.settings.max_attempts:
            error = {"type": "internal", "field": None,
                     "message": f"gave up after {attempts - 1} attempts: the workers running it died"}
            self._finish(entry_id, job_id, "failed", None, error, (self.name, attempts))
            return
        self._current = entry_id
        count_job(self.queue.metrics, "running")
        spec = json.loads(self.client.hget(key, "spec"))
        run = (self.name, attempts)
        progress, should_cancel = self._progress_writer(key), cancel_requested(self.client, key, run=run)
        if self.sharing is not None:  # the anchor runner reports progress and stops on cancel for this job
            self.sharing.for_job(job_id, progress, cancel_checkpoint(should_cancel))
        try:
            status, result, error = run_job(self.engine, spec, progress, should_cancel, reraise=(redis.RedisError,))
            self._finish(entry_id, job_id, status, result, error, run)
        finally:
            self._current = None

    def _finish(self, entry_id: str, job_id: str, status: str, result, error, run: tuple[str, int]) -> None:
        """Store the outcome of run (worker, attempt) and acknowledge the entry, in one script; nothing when
        the job was taken over meanwhile (its entry belongs to the run that took it)."""
        fields = encode({"status": status, "result": result, "error": error, "finished_at": time.time()})
        stored = self._finish_script(keys=[self.queue.job_key(job_id), self.queue.stream],
                                     args=[json.dumps([item for pair in fields.items() for item in pair]),
                                           json.dumps(run[0]), run[1], self.settings.job_ttl_s, GROUP, entry_id])
        if stored:
            record_finished(self.queue.metrics, status, result)
        else:
            log.warning("job %s was taken over while this worker ran it (attempt %d); outcome dropped", job_id, run[1])

    def _done(self, entry_id: str, stream: str | None = None) -> None:
        stream = stream or self.queue.stream
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(stream, GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        pipe.execute()

    def _progress_writer(self, key: str):
        last = [0.0, None]

        def progress(phase: str, done: int, total: int) -> None:
            now = time.monotonic()
            if phase != last[1] or done >= total or now - last[0] > 0.2:
                last[:] = [now, phase]
                self.client.hset(key, "progress", json.dumps({"phase": phase, "done": done, "total": total}))
        return progress

    def _beat(self) -> None:
        entry = {"fingerprint": self.engine.model.fingerprint, "model": self.engine.model.name,
                 "expires_at": time.time() + 3 * self.settings.heartbeat_s}
        self.client.hset(self.queue.prefix + "workers", self.name, json.dumps(entry))
        if self._current is not None:  # still alive: keep the entry from being reclaimed
            self.client.xclaim(self.queue.stream, GROUP, self.name, 0, [self._current], justid=True)
        if self.sharing is not None:
            self.sharing.refresh_claims()

    def _heartbeats(self) -> None:
        while not self.stop_event.wait(self.settings.heartbeat_s):
            try:
                self._beat()
            except redis.RedisError:
                log.warning("heartbeat failed", exc_info=True)
