"""Redis mode over HTTP: one API process and two worker processes sharing a real Redis (127.0.0.1:6379).

Tests run in file order; the last ones stop and kill workers.
"""

from __future__ import annotations

import json
import signal
import time
from types import SimpleNamespace

import pytest
import redis

from service_fixtures import (POOL, REDIS_URL, Api, Process, metric, redis_prefix, selection,  # noqa: F401
                              stop_and_wait_unblocked, wait_until)

WORKERS = ("w0", "w1")


@pytest.fixture(scope="module")
def cluster(tiny_model_dir, redis_prefix, tmp_path_factory):  # noqa: F811
    env = {"ICLSEL_MODEL": str(tiny_model_dir), "REDIS_URL": REDIS_URL, "ICLSEL_REDIS_PREFIX": redis_prefix,
           "ICLSEL_HEARTBEAT_S": "0.5", "ICLSEL_CLAIM_IDLE_S": "3", "ICLSEL_MAX_QUEUE": "4", "ICLSEL_API_KEYS": ""}
    logs = tmp_path_factory.mktemp("redis-mode")
    api = Api(env, logs / "api.log")
    workers = {name: Process("iclsel.workers.main", ["--name", name], env, logs / f"{name}.log") for name in WORKERS}
    try:
        api.wait_ready(workers=2, timeout=180)
        with api.client() as client:
            yield SimpleNamespace(api=api, client=client, workers=workers, prefix=redis_prefix,
                                  redis=redis.Redis.from_url(REDIS_URL, decode_responses=True))
    finally:
        for process in [api, *workers.values()]:
            process.stop()


def pause_workers(cluster, signum=signal.SIGSTOP):
    for worker in cluster.workers.values():
        if worker.popen.poll() is None:
            if signum == signal.SIGSTOP:  # stopped, and their blocking reads (1 s) timed out: new entries stay undelivered
                stop_and_wait_unblocked(worker, REDIS_URL)
            else:
                worker.signal(signum)


def test_ready_reports_both_workers(cluster):
    ready = cluster.client.get("/ready").json()
    assert ready["status"] == "ready" and ready["workers"] == 2 and len(ready["model"]) == 64
    assert metric(cluster.client, "iclsel_workers") == 2


def test_selection_runs_on_a_worker_once_per_content(cluster):
    first = cluster.client.post("/v1/selections", json=selection(wait_s=60))
    assert first.status_code == 200, first.text
    job = first.json()
    assert job["status"] == "succeeded" and job["worker"] in WORKERS and job["attempts"] == 1
    again = cluster.client.post("/v1/selections", json=selection(wait_s=60)).json()
    assert again["id"] == job["id"] and again["result"] == job["result"]
    for _ in range(200):  # the worker counts a job just after storing its outcome: a scrape may come first
        if metric(cluster.client, "iclsel_jobs_total", status="succeeded") >= 1:
            break
        time.sleep(0.05)
    assert metric(cluster.client, "iclsel_jobs_total", status="succeeded") == 1
    stored = cluster.redis.hgetall(f"{cluster.prefix}job:{job['id']}")
    assert stored["status"] == "succeeded" and 0 < cluster.redis.ttl(f"{cluster.prefix}job:{job['id']}")


def test_jobs_spread_over_both_workers(cluster):
    ids = [cluster.client.post("/v1/selections", json=selection(seed=seed, wait_s=0)).json()["id"]
           for seed in (11, 12, 13)]
    jobs = [cluster.client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30}).json() for job_id in ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    assert {job["worker"] for job in jobs} == set(WORKERS)


def test_workers_share_the_gradient_cache(cluster):
    cluster.client.post("/v1/selections", json=selection(seed=5, wait_s=60)).raise_for_status()
    hits = metric(cluster.client, "iclsel_cache_hits_total")
    backward = metric(cluster.client, "iclsel_model_passes_total", kind="backward")
    assert backward > 0
    reply = cluster.client.post("/v1/selections", json=selection(seed=5, params={"evaluate_selected": False}, wait_s=60))
    assert reply.status_code == 200 and reply.json()["result"]["cache"]["misses"] == 0
    assert metric(cluster.client, "iclsel_cache_hits_total") > hits
    assert metric(cluster.client, "iclsel_model_passes_total", kind="backward") == backward
    assert metric(cluster.client, "iclsel_phase_duration_seconds_count", phase="total") >= 2
    cache_keys = list(cluster.redis.scan_iter(match=cluster.prefix + "cache:*"))
    assert cache_keys and all(0 < cluster.redis.ttl(key) for key in cache_keys)


def test_a_grown_pool_resumes_from_the_parent_selection(cluster):
    parent = cluster.client.post("/v1/pools", json={"examples": POOL}).json()["id"]
    body = {**selection(seed=51, wait_s=60), "pool": None, "pool_id": parent}
    first = cluster.client.post("/v1/selections", json=body).json()
    added = [{"id": "n0", "input": "flat", "output": "negative"}, {"id": "n1", "input": "superb", "output": "positive"}]
    grown = cluster.client.post(f"/v1/pools/{parent}/examples", json={"examples": added})
    assert grown.status_code == 201 and grown.json()["parent"] == parent and grown.json()["size"] == len(POOL) + 2
    assert json.loads(cluster.redis.get(f"{cluster.prefix}pool-parent:{grown.json()['id']}")) == {
        "id": parent, "size": len(POOL)}
    reply = cluster.client.post("/v1/selections", json={**body, "pool_id": grown.json()["id"]})
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    assert result["notes"]["warm_start"]["job"] == first["id"]
    assert result["cache"]["hits"] > 0 and result["passes"]["backward"] == 0  # the anchor from the shared cache
    assert cluster.client.delete(f"/v1/pools/{grown.json()['id']}").status_code == 204
    assert cluster.redis.get(f"{cluster.prefix}pool-parent:{grown.json()['id']}") is None


def test_full_queue_gets_429_and_queued_jobs_can_be_cancelled(cluster):
    pause_workers(cluster)
    try:
        queued = [cluster.client.post("/v1/selections", json=selection(seed=seed, wait_s=0)) for seed in range(21, 25)]
        assert [reply.status_code for reply in queued] == [202] * 4
        assert metric(cluster.client, "iclsel_queue_depth") == 4
        full = cluster.client.post("/v1/selections", json=selection(seed=99, wait_s=0))
        assert full.status_code == 429 and full.headers["retry-after"] and full.json()["error"]["code"] == "queue_full"
        assert cluster.client.post("/v1/selections", json=selection(seed=21, wait_s=0)).status_code == 202  # same job
        for reply in queued:
            assert cluster.client.delete(f"/v1/jobs/{reply.json()['id']}").json()["status"] == "cancelled"
    finally:
        pause_workers(cluster, signal.SIGCONT)
    wait_until(lambda: metric(cluster.client, "iclsel_queue_depth") == 0, poll_s=0.2,
               what="queue empty")  # workers skipped the cancelled entries
    assert cluster.client.get(f"/v1/jobs/{queued[0].json()['id']}").json()["status"] == "cancelled"
    rerun = cluster.client.post("/v1/selections", json=selection(seed=21, wait_s=60))  # cancelled: runs again
    assert rerun.status_code == 200 and rerun.json()["status"] == "succeeded"


def test_job_taken_by_a_dead_worker_is_reclaimed(cluster):
    pause_workers(cluster)
    try:
        job_id = cluster.client.post("/v1/selections", json=selection(seed=31, wait_s=0)).json()["id"]
        # a worker that takes the entry and dies before acknowledging it
        taken = cluster.redis.xreadgroup("workers", "ghost", {cluster.prefix + "jobs": ">"}, count=1)
        assert taken and taken[0][1][0][1]["job"] == job_id
    finally:
        pause_workers(cluster, signal.SIGCONT)
    job = cluster.client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30}).json()
    assert job["status"] == "succeeded" and job["worker"] in WORKERS
    assert cluster.redis.xpending(cluster.prefix + "jobs", "workers")["pending"] == 0


def test_a_killed_worker_leaves_and_the_other_carries_on(cluster):
    cluster.workers["w1"].signal(signal.SIGKILL)
    cluster.workers["w1"].popen.wait()
    cluster.api.wait_ready(workers=1, timeout=60)
    reply = cluster.client.post("/v1/selections", json=selection(seed=41, wait_s=60))
    assert reply.status_code == 200 and reply.json()["worker"] == "w0"
