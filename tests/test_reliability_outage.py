"""Redis goes away while requests arrive, and comes back: 503s with a clear message (no hang, no
crash), /ready not ready, recovery without restarting anything, no accepted job lost.

Runs its own redis-server (free port, temp dir, append-only file) so the shared Redis is never
stopped; every key the run creates in it must lie under the configured prefix.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest
import redis

from service_fixtures import (Api, Process, RedisServer, record_figures, selection, stop_and_wait_unblocked, wait_job,
                              wait_until)

PREFIX = "outage-test:"


@pytest.fixture(scope="module")
def stack(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("outage")
    server = RedisServer(folder)
    env = {"ICLSEL_MODEL": str(tiny_model_dir), "REDIS_URL": server.url, "ICLSEL_REDIS_PREFIX": PREFIX,
           "ICLSEL_HEARTBEAT_S": "0.5", "ICLSEL_CLAIM_IDLE_S": "3", "ICLSEL_REDIS_TIMEOUT_S": "2", "ICLSEL_API_KEYS": ""}
    api = Api(env, folder / "api.log")
    worker = Process("iclsel.workers.main", ["--name", "w0", "--log-level", "warning"], env, folder / "w0.log")
    try:
        api.wait_ready(workers=1, timeout=180)
        yield api, worker, server
    finally:
        for process in (api, worker):
            process.stop()
        server.stop()


def test_redis_outage_gives_503_and_recovers_without_losing_jobs(stack):
    api, worker, server = stack
    client = api.client()
    assert client.post("/v1/selections", json=selection(wait_s=30)).status_code == 200

    stop_and_wait_unblocked(worker, server.url)  # jobs accepted now wait in the stream when Redis goes down
    accepted = [client.post("/v1/selections", json=selection(seed=seed, wait_s=0)) for seed in (1, 2, 3)]
    assert [reply.status_code for reply in accepted] == [202] * 3
    server.stop()
    worker.signal(signal.SIGCONT)

    answers, slowest = [], 0.0
    for method, path, body in [("POST", "/v1/selections", selection(seed=9)), ("GET", f"/v1/jobs/{accepted[0].json()['id']}", None),
                               ("POST", "/v1/pools", {"examples": selection()["pool"]}), ("DELETE", "/v1/jobs/x", None)] * 3:
        start = time.monotonic()
        reply = client.request(method, path, json=body, timeout=60)  # a hang would be a ReadTimeout
        slowest = max(slowest, time.monotonic() - start)
        answers.append(reply)
    assert {reply.status_code for reply in answers} == {503}
    error = answers[0].json()["error"]
    assert error["code"] == "unavailable" and "unavailable" in error["message"] and answers[0].headers["retry-after"]
    ready = client.get("/ready")
    assert ready.status_code == 503 and "redis" in ready.json()["reason"]
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
    # the worker meets the outage too, and lives on
    wait_until(lambda: "redis unavailable" in worker.log.read_text(errors="replace"), what="the worker saw the outage")
    assert worker.popen.poll() is None and api.popen.poll() is None

    server.start()  # same port, same append-only file: nothing restarted but Redis
    recovered_at = time.monotonic()
    api.wait_ready(workers=1, timeout=120)
    recovery_s = time.monotonic() - recovered_at
    done = [wait_job(client, reply.json()["id"], lambda job: job["status"] != "queued" and job["status"] != "running",
                     timeout=120, poll_s=0.2) for reply in accepted]
    assert [job["status"] for job in done] == ["succeeded"] * 3  # accepted before the outage: not lost
    assert client.post("/v1/selections", json=selection(seed=9, wait_s=30)).status_code == 200

    keys = [key.decode() for key in redis.Redis.from_url(server.url).scan_iter(count=1000)]
    assert keys and all(key.startswith(PREFIX) for key in keys), [k for k in keys if not k.startswith(PREFIX)]
    record_figures("redis_outage", {"requests_during_outage": len(answers), "status_during_outage": 503,
                                    "slowest_answer_s": round(slowest, 2), "seconds_to_ready_after_restart": round(recovery_s, 2),
                                    "jobs_accepted_before_outage": 3, "jobs_lost": 0, "keys_outside_prefix": 0,
                                    "keys": len(keys)})
    client.close()


def test_a_hung_redis_is_a_timeout_not_a_hang(stack):
    api, worker, server = stack
    server.popen.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        # a 503 at all is the proof: Redis never answers, so only the API's own timeout (2 s) can end the request
        reply = httpx.post(api.url + "/v1/selections", json=selection(seed=11), timeout=60)
        assert reply.status_code == 503, reply.text
    finally:
        server.popen.send_signal(signal.SIGCONT)
    api.wait_ready(workers=1, timeout=120)
