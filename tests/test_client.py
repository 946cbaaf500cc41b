"""iclsel.client against the real service (embedded mode, tiny model) over HTTP: sync and async, typed
results, pools, long-poll, cancel, timeouts, and retries on real 429 answers and refused connections.

The server allows one job at a time (ICLSEL_MAX_QUEUE=1), so a second job while a long one runs gets
a real 429 with Retry-After. The long job is a held job (tests/held.py): it runs until it is cancelled,
on any machine, so no test depends on how fast the model runs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import httpx
import pydantic
import pytest

from iclsel.client import ApiError, AsyncClient, Client, JobFailed, SelectionResult, WaitTimeout
from service_fixtures import (POOL, QUERIES, HeldApi, embedded_env, held_queries, metric, selection,
                              without_server_packages)

LONG = selection(queries=held_queries())  # runs until it is cancelled
RETRY_AFTER_S = 5  # what app/routes.py sends with a 429


class Refusals(httpx.HTTPTransport):
    """httpx's transport, counting refused connections; the first one calls on_refused()."""

    def __init__(self, on_refused):
        super().__init__()
        self.count, self.on_refused = 0, on_refused

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError:
            self.count += 1
            if self.count == 1:
                self.on_refused()
            raise


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    """The server, and the first selection: sent while the server process waits at its start gate, so that
    it meets a refused connection (and a 503 while the model loads) and has to retry; the first refusal
    opens the gate."""
    folder = tmp_path_factory.mktemp("client")
    gate = folder / "start"
    server = HeldApi(embedded_env(tiny_model_dir, ICLSEL_MAX_QUEUE="1", ICLSEL_TEST_START_GATE=str(gate)),
                     folder / "server.log")
    try:
        refusals = Refusals(gate.touch)
        with Client(server.url, retries=10_000, backoff_s=0.1, max_retry_wait_s=0.5, transport=refusals) as client:
            started = time.monotonic()
            server.first_result = client.select(**selection(), timeout=300)
            server.first_seconds = time.monotonic() - started
        server.refusals = refusals.count
        yield server
    except Exception:
        print(server.tail())
        raise
    finally:
        server.stop()


@pytest.fixture
def client(api):
    with Client(api.url) as client:
        yield client


def finish(client: Client, job_id: str) -> None:
    """Cancel a job and wait until it stopped, so the next test finds the queue empty."""
    client.cancel(job_id)
    assert client.wait(job_id, timeout=120).status in ("cancelled", "succeeded")


def test_importing_the_client_loads_neither_torch_nor_the_server():
    code = "import iclsel.client, sys; print(sorted({'torch', 'fastapi', 'redis', 'transformers'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_client_works_where_torch_cannot_be_imported(api):
    """What `pip install iclsel` (no server extra) has: the client against the running service."""
    code = without_server_packages() + f"""
import json
from iclsel.client import Client
with Client({api.url!r}) as client:
    result = client.select(pool={POOL!r}, queries={QUERIES!r}, k=2, seed=21, params={{"strategy": "set"}},
                           timeout=120)
print(json.dumps({{"selected": [demo.id for demo in result.selected], "accuracy": result.exact.accuracy,
                  "torch": "torch" in sys.modules}}))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout)
    assert len(answer["selected"]) == 2 and 0 <= answer["accuracy"] <= 1 and answer["torch"] is False


def test_retries_a_refused_connection_until_the_service_is_up(api):
    assert api.refusals >= 1  # the client's first tries found no server listening
    result = api.first_result
    assert isinstance(result, SelectionResult)
    assert len(result.selected) == 2 and {demo.id for demo in result.selected} <= {d["id"] for d in POOL}
    assert 0 <= result.exact.accuracy <= 1 and result.model.fingerprint
    print(f"\nfirst selection, sent before the server listened: {api.first_seconds:.1f} s")


def test_select_submit_and_wait_give_typed_results(client):
    result = client.select(**selection(seed=1, params={"strategy": "set"}), timeout=60)
    assert isinstance(result, SelectionResult) and result.seed == 1 and result.prompt.token_ids
    job = client.submit(**selection(seed=1, params={"strategy": "set"}))  # the same request: the same (finished) job
    assert job.status == "succeeded" and job.result.selected == result.selected
    assert client.wait(job.id, timeout=5).result == job.result
    assert client.get_job(job.id).id == job.id


def test_pools_are_stored_read_used_and_deleted(client):
    pool = client.create_pool(POOL)
    assert pool.size == len(POOL) and client.create_pool(POOL).id == pool.id  # content hash
    assert [example.id for example in client.get_pool(pool.id).examples] == [d["id"] for d in POOL]
    by_id = client.select(pool_id=pool.id, queries=QUERIES, k=2, timeout=60)
    assert by_id.selected == client.select(**selection(), timeout=60).selected
    grown = client.grow_pool(pool.id, [{"id": "p6", "input": "a delight from start to end", "output": "positive"}])
    assert grown.size == len(POOL) + 1 and grown.id != pool.id and grown.parent == pool.id
    assert client.grow_pool(pool.id, [{"id": "p6", "input": "a delight from start to end", "output": "positive"}]).id == grown.id
    assert client.delete_pool(pool.id) is None
    with pytest.raises(ApiError) as missing:
        client.get_pool(pool.id)
    assert missing.value.status == 404 and missing.value.code == "not_found"


def test_bad_input_names_the_field(client):
    with pytest.raises(pydantic.ValidationError, match="k"):  # refused before it is sent
        client.submit(**selection(k=0))
    with pytest.raises(ApiError) as refused:  # refused by the service
        client.submit(**selection(k=7))
    assert refused.value.status == 422 and refused.value.field == "k"
    with pytest.raises(JobFailed) as failed:  # refused by the engine: the job failed
        client.select(**selection(params={"rounds": "many"}), timeout=60)
    assert failed.value.job.status == "failed" and failed.value.job.error.field == "params.rounds"


def test_wait_times_out_a_429_is_retried_after_retry_after_and_cancel_stops_a_job(api, client):
    long = client.submit(**LONG)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as late:  # the job cannot end by itself: only wait's timeout ends the call
        client.wait(long, timeout=1)
    assert time.monotonic() - started >= 1 and late.value.job.status in ("queued", "running")

    with Client(api.url, retries=0) as impatient, pytest.raises(ApiError) as full:
        impatient.submit(**selection(seed=2))
    assert (full.value.status, full.value.code, full.value.retry_after) == (429, "queue_full", RETRY_AFTER_S)

    def refusals() -> float:
        with api.client() as raw:
            return metric(raw, "iclsel_request_duration_seconds_count", method="POST", route="/v1/selections",
                          status="429")

    refused_before = refusals()

    def cancel_once_refused() -> None:  # the queue frees while the client waits out Retry-After
        deadline = time.monotonic() + 120
        while refusals() == refused_before and time.monotonic() < deadline:
            time.sleep(0.05)
        with Client(api.url) as other:
            other.cancel(long.id)

    canceller = threading.Thread(target=cancel_once_refused)
    canceller.start()
    started = time.monotonic()
    job = client.submit(**selection(seed=2))  # 429 first, then retried after Retry-After
    waited = time.monotonic() - started
    canceller.join()
    refused = refusals() - refused_before
    assert refused >= 1 and waited >= RETRY_AFTER_S * refused, (refused, waited)
    assert client.wait(job, timeout=120).status == "succeeded"
    assert client.wait(long.id, timeout=120).status == "cancelled"


def test_select_timeout_leaves_the_job_running(client):
    with pytest.raises(WaitTimeout) as late:
        client.select(**LONG, timeout=1.5)
    assert late.value.job.status in ("queued", "running")
    finish(client, late.value.job.id)


def test_async_client(api):
    async def scenario():
        async with AsyncClient(api.url) as client:
            pool = await client.create_pool(POOL)
            assert (await client.get_pool(pool.id)).size == len(POOL)
            same = await asyncio.gather(*(client.select(pool_id=pool.id, queries=QUERIES, k=2, seed=5, timeout=60)
                                          for _ in range(3)))  # one job, three waiters
            assert all(isinstance(result, SelectionResult) for result in same)
            assert same[0].selected == same[1].selected == same[2].selected
            await client.delete_pool(pool.id)

            long = await client.submit(**LONG)
            with pytest.raises(WaitTimeout):
                await client.wait(long.id, timeout=1)
            assert (await client.cancel(long.id)).status in ("cancelled", "running")
            assert (await client.wait(long, timeout=120)).status == "cancelled"

    asyncio.run(scenario())
