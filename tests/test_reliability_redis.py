"""Redis mode under faults: anchor passes shared by two workers, a worker killed in the middle of an
anchor pass, cancelling a running job, clients that go away, concurrent load, what is stored in Redis.

One API process and two workers on the shared Redis (127.0.0.1:6379) under a unique key prefix.
Anchor tasks are 2 queries each, so that a query set of a dozen queries has an anchor pass to share.
The workers run through tests/held.py: a test that must kill or cancel a job in the middle of its anchor
pass closes the anchor-task gate after a few tasks (the pass then waits, however fast the machine), and
a job that must outlast a client is a held job. Tests run in order.
"""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import httpx
import pytest
import redis

from service_fixtures import (REDIS_URL, Api, Process, anchor_gate, check_stored_values, held_queries,  # noqa: F401
                              held_worker, labelled_queries, metric, record_figures, redis_prefix, run_load,
                              same_result, selection, stop_and_wait_unblocked, wait_job, wait_until)

WORKERS = ("w0", "w1")


@pytest.fixture(scope="module")
def cluster(tiny_model_dir, redis_prefix, tmp_path_factory):  # noqa: F811
    env = {"ICLSEL_MODEL": str(tiny_model_dir), "REDIS_URL": REDIS_URL, "ICLSEL_REDIS_PREFIX": redis_prefix,
           "ICLSEL_HEARTBEAT_S": "0.5", "ICLSEL_CLAIM_IDLE_S": "3", "ICLSEL_MAX_QUEUE": "6", "ICLSEL_API_KEYS": "",
           "ICLSEL_ANCHOR_CHUNK": "2", "ICLSEL_ANCHOR_WAIT_S": "30"}
    logs = tmp_path_factory.mktemp("reliability-redis")
    gates = tmp_path_factory.mktemp("gates")
    env["ICLSEL_TEST_GATES"] = str(gates)
    api = Api(env, logs / "api.log")

    def worker(name: str) -> Process:
        return held_worker(name, env, logs / f"{name}.log")

    workers = {name: worker(name) for name in WORKERS}
    try:
        api.wait_ready(workers=2, timeout=180)
        with api.client() as client:
            yield SimpleNamespace(api=api, client=client, workers=workers, prefix=redis_prefix, start_worker=worker,
                                  redis=redis.Redis.from_url(REDIS_URL, decode_responses=True), gates=gates)
    finally:
        for process in [api, *workers.values()]:
            process.stop()


def anchor_counts(cluster) -> dict[str, float]:
    return {name: metric(cluster.client, "iclsel_anchor_tasks_total", worker=name) for name in WORKERS}


def forget(cluster, job_id: str) -> None:
    """Drop a job record and every cached tensor: the same request runs again from scratch."""
    keys = [cluster.prefix + f"job:{job_id}", *cluster.redis.scan_iter(match=cluster.prefix + "cache:*", count=1000)]
    cluster.redis.delete(*keys)


# The exact-confirmed search re-anchors (label-group gradients, in many chunks) at every move: many anchor tasks.
LONG = {"evaluator": "exact"}


def test_a_large_anchor_pass_is_shared_by_both_workers(cluster):
    request = selection(queries=labelled_queries(12, "share"), seed=1, wait_s=60, params={"strategy": "set"})
    before = anchor_counts(cluster)
    reply = cluster.client.post("/v1/selections", json=request)
    assert reply.status_code == 200, reply.text
    shared = reply.json()
    after = anchor_counts(cluster)
    computed = {name: after[name] - before[name] for name in WORKERS}
    assert all(count > 0 for count in computed.values()), computed  # chunks computed by both workers
    assert sum(computed.values()) >= 6  # 12 queries / 2 per chunk, each computed once per anchor
    assert cluster.redis.xlen(cluster.prefix + "anchors") == 0  # posted tasks do not linger

    # the same request on one worker (the other stopped) computes every chunk itself: same result
    forget(cluster, shared["id"])
    other = ({*WORKERS} - {shared["worker"]}).pop()
    stop_and_wait_unblocked(cluster.workers[other], REDIS_URL)  # its blocking read (1 s) ended: it takes nothing more
    try:
        before = anchor_counts(cluster)
        alone = cluster.client.post("/v1/selections", json=request)
        assert alone.status_code == 200, alone.text
        after = anchor_counts(cluster)
    finally:
        cluster.workers[other].signal(signal.SIGCONT)
    assert after[other] == before[other] and after[alone.json()["worker"]] > before[alone.json()["worker"]]
    same_result(shared["result"], alone.json()["result"])
    cluster.api.wait_ready(workers=2, timeout=60)


def test_a_worker_killed_during_the_anchor_pass_loses_nothing(cluster):
    request = selection(queries=labelled_queries(24, "crash"), seed=2, wait_s=0, params=LONG)
    succeeded = metric(cluster.client, "iclsel_jobs_total", status="succeeded")
    with anchor_gate(cluster.gates, tickets=2):  # two anchor tasks run, then the pass waits: killed in its middle
        job_id = cluster.client.post("/v1/selections", json=request).json()["id"]
        running = wait_job(cluster.client, job_id, lambda job: job["progress"]["phase"] == "anchor"
                           and job["progress"]["done"] >= 2, poll_s=0.02)
        victim = running["worker"]
        cluster.workers[victim].signal(signal.SIGKILL)  # in the middle of its anchor pass
        cluster.workers[victim].popen.wait()
        cluster.workers[victim].stop()
        cluster.workers[victim] = cluster.start_worker(victim)  # restarted under the same name
    # the gate is open: the job is taken over (after claim_idle_s) and runs to the end

    done = wait_job(cluster.client, job_id, lambda job: job["status"] in ("succeeded", "failed", "cancelled"),
                    timeout=120, poll_s=0.2)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert metric(cluster.client, "iclsel_jobs_total", status="succeeded") == succeeded + 1  # exactly once
    assert cluster.redis.xpending(cluster.prefix + "jobs", "workers")["pending"] == 0
    stored = check_stored_values(redis.Redis.from_url(REDIS_URL), cluster.prefix)  # no half-written entry
    assert stored["safetensors_entries"] >= 12

    forget(cluster, job_id)  # an undisturbed run of the same request gives the same result
    again = cluster.client.post("/v1/selections", json={**request, "wait_s": 60})
    assert again.status_code == 200 and again.json()["attempts"] == 1, again.text
    same_result(done["result"], again.json()["result"])
    cluster.api.wait_ready(workers=2, timeout=60)


def test_cancelling_a_running_job_frees_the_workers(cluster):
    request = selection(queries=labelled_queries(60, "cancel"), seed=3, wait_s=0, params=LONG)
    before = anchor_counts(cluster)
    with anchor_gate(cluster.gates, tickets=4):  # four anchor tasks, then both workers wait inside the pass
        job_id = cluster.client.post("/v1/selections", json=request).json()["id"]
        wait_job(cluster.client, job_id, lambda job: job["progress"]["phase"] == "anchor" and job["progress"]["done"] >= 4)
        wait_until(lambda: sum(anchor_counts(cluster).values()) - sum(before.values()) == 4, what="4 anchor tasks done")
        asked = time.monotonic()
        assert cluster.client.delete(f"/v1/jobs/{job_id}").status_code == 200
        cancelled = wait_job(cluster.client, job_id, lambda job: job["status"] != "running")
        stopped_s = time.monotonic() - asked
        assert cancelled["status"] == "cancelled", cancelled
        # every worker leaves the pass: no anchor task is claimed (being computed) or posted any more
        wait_until(lambda: not list(cluster.redis.scan_iter(match=cluster.prefix + "anchor-claim:*"))
                   and cluster.redis.xlen(cluster.prefix + "anchors") == 0, what="no anchor task left")
    # the gate is open: a task of the cancelled job that any worker still meant to compute would run now
    assert sum(anchor_counts(cluster).values()) - sum(before.values()) == 4
    small = cluster.client.post("/v1/selections", json=selection(seed=4, wait_s=60))  # both workers are free
    assert small.status_code == 200 and small.json()["status"] == "succeeded", small.text
    record_figures("redis_cancel_running", {"seconds_to_cancelled": round(stopped_s, 2)})


def test_a_client_that_goes_away_leaves_no_waiting_request(cluster):
    request = selection(queries=held_queries(), seed=5, wait_s=60)  # a job that runs until it is cancelled
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(cluster.api.url + "/v1/selections", json=request, timeout=1.5)
    wait_until(lambda: metric(cluster.client, "iclsel_waiting_requests") == 0, poll_s=0.1,
               what="no waiting request")  # the long-poll stopped with the client
    job = cluster.client.post("/v1/selections", json={**request, "wait_s": 0}).json()
    assert job["status"] in ("queued", "running")  # the job is shared and kept: whoever asks again gets it
    cluster.client.delete(f"/v1/jobs/{job['id']}")
    wait_job(cluster.client, job["id"], lambda job: job["status"] == "cancelled")


def test_load_on_two_workers(cluster):
    pids = [cluster.api.popen.pid, *(worker.popen.pid for worker in cluster.workers.values())]

    def requests_of(client: int, i: int):
        if i % 4 == 3:
            return "GET", "/ready", None
        return "POST", "/v1/selections", selection(seed=100 + (client * 7 + i) % 24, wait_s=5)

    figures = run_load(cluster.api.url, requests_of, seconds=8, clients=24, per_client=4, pids=pids)
    record_figures("load_redis_two_workers", figures)
    assert figures["transport_error_count"] == 0, figures["transport_errors"]
    assert set(figures["statuses"]) <= {"200", "202", "429"}, figures["statuses"]
    assert figures["requests"] >= 24 * 4  # each client's at least, however slow the machine
    for pid in map(str, pids):
        assert figures["rss_mb_after"][pid] < figures["rss_mb_before"][pid] + 200, figures
    cluster.api.wait_ready(workers=2, timeout=60)


def test_everything_stored_is_json_or_safetensors(cluster):
    # its own selection first, so that the check has jobs and tensors to read even when run alone
    reply = cluster.client.post("/v1/selections", json=selection(seed=11, wait_s=60))
    assert reply.status_code == 200 and reply.json()["status"] == "succeeded", reply.text
    counts = check_stored_values(redis.Redis.from_url(REDIS_URL), cluster.prefix)
    assert counts["json"] > 0 and counts["safetensors_entries"] > 0
    record_figures("redis_stored_values", counts)
