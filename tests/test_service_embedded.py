"""The HTTP API in its embedded default (one process, worker thread, in-memory cache), over real HTTP."""

from __future__ import annotations

import pytest

from service_fixtures import POOL, QUERIES, embedded_api, metric, selection

KEY = "key-two"


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    limits = {"ICLSEL_MAX_POOL_SIZE": "20", "ICLSEL_MAX_QUERIES": "10", "ICLSEL_MAX_TEXT_CHARS": "300",
              "ICLSEL_MAX_K": "4", "ICLSEL_MAX_BODY_BYTES": "20000", "ICLSEL_MAX_SUBSETS": "1000"}
    with embedded_api(tiny_model_dir, tmp_path_factory.mktemp("embedded"), ICLSEL_API_KEYS="key-one, key-two", **limits) as server:
        yield server


@pytest.fixture
def client(api):
    with api.client(KEY) as client:
        yield client


def test_open_endpoints_need_no_key(api):
    with api.client() as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        ready = anonymous.get("/ready").json()
        assert ready["status"] == "ready" and ready["workers"] == 1
        assert "/v1/selections" in anonymous.get("/openapi.json").json()["paths"]
        assert anonymous.get("/docs").status_code == 200
        assert anonymous.get("/metrics").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic a2V5LW9uZQ==", "Bearer key-one-and-more"])
def test_v1_needs_a_valid_key(api, header):
    headers = {"Authorization": header} if header else {}
    with api.client() as anonymous:
        reply = anonymous.post("/v1/selections", json=selection(), headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.json()["error"]["code"] == "unauthorized"


def test_selection_answers_within_wait_and_is_one_job_per_content(api, client):
    first = client.post("/v1/selections", json=selection(wait_s=60))
    assert first.status_code == 200, first.text
    job = first.json()
    assert job["status"] == "succeeded" and first.headers["location"] == f"/v1/jobs/{job['id']}"
    result = job["result"]
    assert len(result["selected"]) == 2 and {d["id"] for d in result["selected"]} <= {d["id"] for d in POOL}
    assert set(result["scores"]) == {d["id"] for d in POOL}
    queued = metric(client, "iclsel_jobs_total", status="queued")

    again = client.post("/v1/selections", json=selection(wait_s=60))
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    assert again.json()["result"] == result
    assert metric(client, "iclsel_jobs_total", status="queued") == queued  # no duplicate work
    assert client.get(f"/v1/jobs/{job['id']}").json()["result"] == result


def test_wait_zero_gives_202_and_a_job_to_poll(client):
    reply = client.post("/v1/selections", json=selection(seed=7, wait_s=0))
    assert reply.status_code in (200, 202)
    job_id = reply.json()["id"]
    if reply.status_code == 202:
        assert reply.headers["location"] == f"/v1/jobs/{job_id}" and reply.headers["retry-after"]
        assert reply.json()["status"] in ("queued", "running")
    done = client.get(f"/v1/jobs/{job_id}", params={"wait_s": 30})
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert done.json()["progress"]["phase"] == "done"


def test_second_request_on_the_same_anchors_uses_the_cache(client):
    client.post("/v1/selections", json=selection(seed=3, wait_s=60)).raise_for_status()
    hits, backward = metric(client, "iclsel_cache_hits_total"), metric(client, "iclsel_model_passes_total", kind="backward")
    reply = client.post("/v1/selections", json=selection(seed=3, params={"evaluate_selected": False}, wait_s=60))
    assert reply.status_code == 200 and reply.json()["result"]["cache"]["misses"] == 0
    assert metric(client, "iclsel_cache_hits_total") > hits
    assert metric(client, "iclsel_model_passes_total", kind="backward") == backward
    assert metric(client, "iclsel_phase_duration_seconds_count", phase="total") >= 2
    assert 'iclsel_estimate_error{measure="spearman"}' in client.get("/metrics").text
    assert metric(client, "iclsel_request_duration_seconds_count", route="/v1/selections", method="POST",
                  status="200") >= 2


def test_pools_are_stored_by_content(client):
    created = client.post("/v1/pools", json={"examples": POOL})
    assert created.status_code == 201
    pool_id, size = created.json()["id"], created.json()["size"]
    assert size == len(POOL) and created.headers["location"] == f"/v1/pools/{pool_id}"
    assert client.post("/v1/pools", json={"examples": POOL}).status_code == 200  # idempotent
    assert client.post("/v1/pools", json={"examples": POOL}).json()["id"] == pool_id
    assert client.get(f"/v1/pools/{pool_id}").json()["examples"] == POOL

    by_id = client.post("/v1/selections", json={**selection(wait_s=60), "pool": None, "pool_id": pool_id})
    inline = client.post("/v1/selections", json=selection(wait_s=60))
    assert by_id.status_code == 200 and by_id.json()["id"] == inline.json()["id"]

    assert client.delete(f"/v1/pools/{pool_id}").status_code == 204
    assert client.get(f"/v1/pools/{pool_id}").status_code == 404
    assert client.delete(f"/v1/pools/{pool_id}").status_code == 404
    gone = client.post("/v1/selections", json={**selection(), "pool": None, "pool_id": pool_id})
    assert gone.status_code == 422 and gone.json()["error"]["field"] == "pool_id"


@pytest.mark.parametrize("change, field", [
    ({"k": 0}, "k"),
    ({"k": 5}, "k"),  # above ICLSEL_MAX_K
    ({"k": 4, "pool": POOL[:3]}, "k"),  # larger than the pool
    ({"method": "magic"}, "method"),
    ({"queries": []}, "queries"),
    ({"queries": [{"input": "no label"}]}, "queries[0].output"),
    ({"queries": [{"input": "x", "output": "  "}]}, "queries[0].output"),
    ({"pool": [POOL[0], {**POOL[1], "id": "p0"}]}, "pool[1].id"),
    ({"pool": [{"input": "x" * 301, "output": "positive"}] + POOL}, "pool[0].input"),
    ({"pool": [{"input": f"r{i}", "output": "a"} for i in range(21)]}, "pool"),
    ({"queries": QUERIES * 4}, "queries"),
    ({"pool_id": "abc"}, "body"),  # both pool and pool_id
    ({"params": {"subsets": 10_000}}, "params.subsets"),
    ({"surprise": 1}, "surprise"),
    ({"targets": ["x" * 301]}, "targets[0]"),
    ({"targets": ["t"] * 11}, "targets"),  # above ICLSEL_MAX_QUERIES
])
def test_bad_requests_get_422_naming_the_field(client, change, field):
    reply = client.post("/v1/selections", json=selection(**change))
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["field"] == field and field.split("[")[0].split(".")[0] in error["message"]


@pytest.mark.parametrize("by", [None, "topk-sentence"])
def test_retrieve_returns_each_targets_own_neighbours(client, by):
    targets = ["a fine story", "dull acting"]
    params = {"retrieve": 2, **({"retrieve_by": by} if by else {})}
    reply = client.post("/v1/selections", json=selection(k=3, targets=targets, params=params, wait_s=60))
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    shared = {d["id"] for d in result["selected"]}
    assert len(shared) == 1 and result["retrieved"]["slots"] == 2
    assert result["retrieved"]["by"] == (by or "topk-embed")
    # the sentence model's texts are counted by it (the pool's may be cached by an earlier test: tests/test_core.py
    # counts them exactly on a fresh cache)
    assert (result["passes"]["sentence_texts"] >= len(QUERIES) + len(targets)) == bool(by)
    assert len(result["retrieved"]["queries"]) == len(QUERIES) and len(result["retrieved"]["targets"]) == len(targets)
    for ids in result["retrieved"]["queries"] + result["retrieved"]["targets"]:
        assert len(ids) == 2 and not shared & set(ids) and set(ids) <= {d["id"] for d in POOL}
    bad = client.post("/v1/selections", json=selection(params={"retrieve": 2}, wait_s=60))  # k=2: at most 1
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "params.retrieve"
    bad = client.post("/v1/selections", json=selection(k=3, params={**params, "retrieve_by": "words"}, wait_s=60))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "params.retrieve_by"


def test_engine_input_errors_are_422_too(client):
    reply = client.post("/v1/selections", json=selection(params={"rounds": "many"}, wait_s=60))
    assert reply.status_code == 422, reply.text
    assert reply.json()["status"] == "failed"
    assert reply.json()["error"] == {"type": "input", "field": "params.rounds", "message": reply.json()["error"]["message"]}


def test_large_bodies_get_413(client):
    big = selection(pool=[{"input": "y" * 250, "output": "positive"}] * 100)
    assert client.post("/v1/selections", json=big).status_code == 413

    def chunks():  # no Content-Length: the limit is counted while reading
        yield b'{"pool": ['
        for i in range(200):
            yield b'{"input": "' + b"z" * 200 + b'", "output": "a"},'
        yield b'{"input": "z", "output": "a"}], "queries": []}'

    reply = client.post("/v1/selections", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "too_large"


def test_jobs_unknown_and_cancel(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.delete("/v1/jobs/nope").status_code == 404
    job = client.post("/v1/selections", json=selection(wait_s=60)).json()
    assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"  # finished: nothing to cancel
