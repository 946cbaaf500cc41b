"""RedisWorker's bookkeeping against the shared Redis (unique prefix), without a model: a run whose job was
taken over while its worker was frozen (found by bench/chaos.py) stops, and writes nothing."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from iclsel.settings import Settings
from iclsel.workers.redis_queue import GROUP, RedisQueue, RedisWorker, cancel_requested
from service_fixtures import REDIS_URL, redis_prefix  # noqa: F401


@pytest.fixture
def queue(redis_prefix):  # noqa: F811
    queue = RedisQueue(Settings(redis_url=REDIS_URL, redis_prefix=redis_prefix, claim_idle_s=0.05))
    queue.start()
    return queue


def start(worker: RedisWorker, job_id: str) -> int:
    """What _run_selection does once it holds the entry: mark the job running; the attempt number."""
    status, attempt = worker._start(keys=[worker.queue.job_key(job_id)],
                                    args=[json.dumps(time.time()), json.dumps(worker.name)])
    assert status == "running"
    return attempt


def test_a_run_whose_job_was_taken_over_stops_and_writes_nothing(queue):
    engine = SimpleNamespace(model=SimpleNamespace(fingerprint="f", name="m"))
    frozen, other = RedisWorker(queue, engine, "frozen"), RedisWorker(queue, engine, "other")
    queue.submit("job-1", {"k": 2})
    key = queue.job_key("job-1")
    [(_, [(entry, _)])] = frozen.client.xreadgroup(GROUP, frozen.name, {queue.stream: ">"}, count=1)
    first = start(frozen, "job-1")
    frozen_should_stop = cancel_requested(queue.client, key, every_s=0, run=(frozen.name, first))
    assert not frozen_should_stop()

    time.sleep(0.1)  # frozen past claim_idle_s: the other worker takes the entry over and runs the job again
    [(taken, _)] = other._reclaim()
    assert taken == entry
    second = start(other, "job-1")
    assert frozen_should_stop()  # the frozen run stops at its next checkpoint once it wakes up
    assert not cancel_requested(queue.client, key, every_s=0, run=(other.name, second))()

    other._finish(entry, "job-1", "succeeded", {"from": "other"}, None, (other.name, second))
    frozen._finish(entry, "job-1", "cancelled", None, None, (frozen.name, first))  # its stale outcome: dropped
    record = queue.get("job-1")
    assert record["status"] == "succeeded" and record["result"] == {"from": "other"} and record["worker"] == "other"
    assert queue.client.hmget(key, "finishes", "stale_finishes") == ["1", "1"]  # one result written, one dropped
    assert queue.client.xpending(queue.stream, GROUP)["pending"] == 0 and queue.client.xlen(queue.stream) == 0

    # the same holds when the stale run ends first: it writes nothing and leaves the entry to the live run
    queue.submit("job-2", {"k": 3})
    [(_, [(entry, _)])] = frozen.client.xreadgroup(GROUP, frozen.name, {queue.stream: ">"}, count=1)
    first = start(frozen, "job-2")
    time.sleep(0.1)
    other._reclaim()
    second = start(other, "job-2")
    frozen._finish(entry, "job-2", "succeeded", {"from": "frozen"}, None, (frozen.name, first))
    assert queue.get("job-2")["status"] == "running" and queue.client.xpending(queue.stream, GROUP)["pending"] == 1
    other._finish(entry, "job-2", "succeeded", {"from": "other"}, None, (other.name, second))
    assert queue.get("job-2")["result"] == {"from": "other"}
    assert queue.client.hmget(queue.job_key("job-2"), "finishes", "stale_finishes") == ["1", "1"]
    assert queue.client.xpending(queue.stream, GROUP)["pending"] == 0
