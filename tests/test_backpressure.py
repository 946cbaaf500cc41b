"""Backpressure (app/backpressure.py): 200 clients long-polling one job share one watch of it (Redis reads per
second do not grow with them, memory stays small), and the 201st waiting client is answered 429 with
Retry-After when max_waiting is 200."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import httpx
import pytest
from service_fixtures import REDIS_URL, redis_prefix  # noqa: F401

from iclsel.app.server import create_app
from iclsel.settings import Settings
from iclsel.workers.redis_queue import RedisQueue

LIMIT = 200
WAIT_S = 4.0


class CountingClient:
    """The queue's Redis client, counting the commands sent through it."""

    def __init__(self, client):
        self.client, self.calls = client, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def hgetall(self, *args, **kwargs):
        self.calls += 1
        return self.client.hgetall(*args, **kwargs)


@pytest.fixture
def queued_job(redis_prefix):  # noqa: F811
    """An app on a Redis queue with no worker, and the id of a job that stays queued."""
    settings = Settings(redis_url=REDIS_URL, redis_prefix=redis_prefix, max_waiting=LIMIT, max_wait_s=60)
    queue = RedisQueue(settings)
    queue.start()
    record, _ = queue.submit("held-job", {"k": 1})
    counting = CountingClient(queue.client)
    queue.client = counting
    yield create_app(settings, backend=queue), record["id"], counting
    queue.client = counting.client
    queue.stop()


async def hold_waiters(app, job_id: str, counting: CountingClient) -> dict:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        waiters = [asyncio.create_task(client.get(f"/v1/jobs/{job_id}", params={"wait_s": WAIT_S}))
                   for _ in range(LIMIT)]
        while app.state.backpressure.waiting < LIMIT:
            await asyncio.sleep(0.01)
        held = tracemalloc.take_snapshot()
        calls, started = counting.calls, time.monotonic()
        await asyncio.sleep(1.0)
        per_second = (counting.calls - calls) / (time.monotonic() - started)
        refused = await client.get(f"/v1/jobs/{job_id}", params={"wait_s": WAIT_S})
        answers = await asyncio.gather(*waiters)
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in held.compare_to(before, "filename"))
    return {"per_second": per_second, "bytes_per_waiter": grown / LIMIT, "refused": refused, "answers": answers}


def test_two_hundred_waiting_clients_share_one_watch_and_the_next_is_refused(queued_job):
    app, job_id, counting = queued_job
    seen = asyncio.run(hold_waiters(app, job_id, counting))
    print(f"redis reads/s with {LIMIT} waiting: {seen['per_second']:.1f}; "
          f"memory per waiting client: {seen['bytes_per_waiter'] / 1024:.1f} KiB")
    # one watch polls the job at most every 100 ms (a poll per client was ~10 per client and second: ~2000/s)
    assert seen["per_second"] <= 25
    assert seen["bytes_per_waiter"] < 64 * 1024
    assert seen["refused"].status_code == 429 and seen["refused"].json()["error"]["code"] == "too_many_waiting"
    assert int(seen["refused"].headers["retry-after"]) > 0
    assert all(answer.status_code == 202 and answer.json()["status"] == "queued" for answer in seen["answers"])
    assert app.state.backpressure.waiting == 0


def test_a_client_whose_wait_runs_out_leaves_no_task_behind():
    """A waiting client checks every DISCONNECT_CHECK_S that it is still there; each slice of its wait must not
    leave a task pending on the job's event (they piled up, 10 a second a client, and were destroyed pending)."""
    from iclsel.app.backpressure import DISCONNECT_CHECK_S, JobWatch

    class Queued:  # a job store whose job never finishes
        def get(self, job_id):
            return {"id": job_id, "status": "queued"}

    async def wait_out() -> tuple[dict, list]:
        before = asyncio.all_tasks()

        async def connected() -> bool:
            return False

        record = await JobWatch(Queued()).wait({"id": "held", "status": "queued"},
                                               time.monotonic() + 10 * DISCONNECT_CHECK_S, connected)
        await asyncio.sleep(0.05)  # cancelled tasks finish on the next turns of the loop
        return record, [task for task in asyncio.all_tasks() - before if not task.done()]

    record, pending = asyncio.run(wait_out())
    assert record["status"] == "queued"
    assert pending == []
