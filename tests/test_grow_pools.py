"""Growing pools over HTTP (the real app, embedded mode, the tiny model): POST /v1/pools/{id}/examples, and a
selection on the grown pool that resumes the parent pool's selection for the same request from its cached
anchor, against the same selection on a fresh server (a cold cache, no parent)."""

from __future__ import annotations

import pytest

from iclsel.models.data import Example, InputError
from iclsel.models.warm import WarmStart, resume
from service_fixtures import Api, metric

WORDS = ("great", "dull", "moving", "awful", "brilliant", "boring", "charming", "terrible")
# the parent pool's widest demo comes first; the appended demos are shorter, so the slot width stays
PARENT = [{"id": "long", "input": "a long, moving, brilliant film with great acting and a charming story, well told",
           "output": "positive"}] + [
    {"id": f"a{i}", "input": f"a {WORDS[i % 8]} film, take {i}", "output": "positive" if i % 2 == 0 else "negative"}
    for i in range(1, 14)]
ADDED = [{"id": f"n{i}", "input": f"{WORDS[(i * 3) % 8]} and {WORDS[(i * 5) % 8]}",
          "output": "positive" if i % 2 else "negative"} for i in range(4)]
QUERIES = [{"input": f"q{i}: {WORDS[(i * 7) % 8]} acting", "output": "positive" if i % 2 == 0 else "negative"}
           for i in range(16)]
LIMITS = {"ICLSEL_MAX_POOL_SIZE": "20", "ICLSEL_MAX_TEXT_CHARS": "300"}


def request(pool_id: str, **change) -> dict:
    return {"pool_id": pool_id, "queries": QUERIES, "k": 3, "method": "gradient", "seed": 1, "wait_s": 60,
            "params": {"strategy": "set"}, **change}


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    """Two embedded servers started together: the one under test, and a fresh one (its own cold cache)."""
    folder = tmp_path_factory.mktemp("grow")
    env = {"ICLSEL_MODEL": str(tiny_model_dir), "REDIS_URL": "", "ICLSEL_REDIS_URL": "", **LIMITS}
    started = [Api(env, folder / f"{name}.log") for name in ("server", "fresh")]
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def api(servers):
    return servers[0]


@pytest.fixture
def client(api):
    with api.client() as client:
        yield client


def select(client, body: dict) -> dict:
    reply = client.post("/v1/selections", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_appending_gives_the_content_id_of_the_grown_records(client):
    parent = client.post("/v1/pools", json={"examples": PARENT}).json()["id"]
    grown = client.post(f"/v1/pools/{parent}/examples", json={"examples": ADDED})
    assert grown.status_code == 201, grown.text
    body = grown.json()
    assert body["size"] == len(PARENT) + len(ADDED) and body["parent"] == parent
    assert grown.headers["location"] == f"/v1/pools/{body['id']}"
    assert client.post("/v1/pools", json={"examples": PARENT + ADDED}).json()["id"] == body["id"]  # as POST /v1/pools
    assert client.post(f"/v1/pools/{parent}/examples", json={"examples": ADDED}).status_code == 200  # stored already
    stored = client.get(f"/v1/pools/{body['id']}").json()
    assert stored["examples"] == PARENT + ADDED and stored["parent"] == parent

    # ids default to the position in the grown pool, as they would in the whole list
    unnamed = [{"input": "a fine film", "output": "positive"}]
    defaulted = client.post(f"/v1/pools/{parent}/examples", json={"examples": unnamed}).json()
    assert client.get(f"/v1/pools/{defaulted['id']}").json()["examples"][-1]["id"] == str(len(PARENT))
    assert defaulted["id"] == client.post("/v1/pools", json={"examples": PARENT + unnamed}).json()["id"]


@pytest.mark.parametrize("examples, status, field", [
    ([{**ADDED[0], "id": "a3"}], 422, "examples[0].id"),  # the pool has it
    ([ADDED[0], ADDED[0]], 422, "examples[1].id"),
    ([{"input": "no label"}], 422, "examples[0].output"),
    ([{"input": "x", "output": " "}], 422, "examples[0].output"),
    ([{"input": "x" * 301, "output": "positive"}], 422, "examples[0].input"),
    ([], 422, "examples"),
    ([{"id": f"m{i}", "input": "x", "output": "positive"} for i in range(7)], 422, "examples"),  # 21 > 20
])
def test_bad_examples_get_422_naming_the_field(client, examples, status, field):
    parent = client.post("/v1/pools", json={"examples": PARENT}).json()["id"]
    reply = client.post(f"/v1/pools/{parent}/examples", json={"examples": examples})
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["field"] == field


def test_unknown_pool_is_404(client):
    reply = client.post("/v1/pools/nope/examples", json={"examples": ADDED})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


def test_route_is_declared_in_the_schema(client):
    route = client.get("/openapi.json").json()["paths"]["/v1/pools/{pool_id}/examples"]["post"]
    assert {"200", "201", "404", "422"} <= set(route["responses"])
    assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PoolAppend")


def test_selection_on_a_grown_pool_reuses_the_parent_anchor(servers, client):
    parent = client.post("/v1/pools", json={"examples": PARENT}).json()["id"]
    first = select(client, request(parent))
    assert "warm_start" not in first["result"]["notes"]
    grown = client.post(f"/v1/pools/{parent}/examples", json={"examples": ADDED}).json()["id"]
    hits = metric(client, "iclsel_cache_hits_total")
    warm = select(client, request(grown))
    result = warm["result"]
    assert result["notes"]["warm_start"] == {"job": first["id"], "new_demos": len(ADDED)}
    assert result["cache"]["hits"] > 0 and metric(client, "iclsel_cache_hits_total") > hits
    assert result["passes"]["backward"] == 0  # the anchor gradient came from the cache
    # only appended demos come in, each by a swap from the parent's set
    came_in = {d["id"] for d in result["selected"]} - {d["id"] for d in first["result"]["selected"]}
    assert came_in <= {d["id"] for d in ADDED} and len(came_in) <= result["notes"]["moves"]

    # the same request on the same pool on a fresh server: no parent, a cold cache
    with servers[1].client() as other:
        assert other.post("/v1/pools", json={"examples": PARENT + ADDED}).json()["id"] == grown
        cold = select(other, request(grown))["result"]
    assert "warm_start" not in cold["notes"] and cold["cache"]["hits"] < result["cache"]["hits"]
    assert cold["passes"]["backward"] > 0
    assert result["passes"]["selection_forward_equivalent"] < cold["passes"]["selection_forward_equivalent"]
    assert result["passes"]["forward_equivalent"] < cold["passes"]["forward_equivalent"]  # the work it skipped
    print(f"\ngrown pool, warm vs cold: forward-equivalents {result['passes']['forward_equivalent']} vs "
          f"{cold['passes']['forward_equivalent']} (selection {result['passes']['selection_forward_equivalent']} vs "
          f"{cold['passes']['selection_forward_equivalent']}), backward rows {result['passes']['backward']} vs "
          f"{cold['passes']['backward']}, cache hits {result['cache']['hits']} vs {cold['cache']['hits']}, "
          f"timings {result['timings']} vs {cold['timings']}")


def test_a_grown_pool_under_the_default_strategy_resumes_the_parents_search(servers, client):
    """The default request (params.strategy auto: the gate, the search, the check) on a grown pool resumes the
    search of the parent's selection, whichever prompt that returned, and succeeds; its gate decides as on a fresh
    server (a cold search's start against the retrievals: the parent's set was fitted to the queries)."""
    parent = client.post("/v1/pools", json={"examples": PARENT}).json()["id"]
    first = select(client, request(parent, params={}))["result"]
    grown = client.post(f"/v1/pools/{parent}/examples", json={"examples": ADDED}).json()["id"]
    reply = client.post("/v1/selections", json=request(grown, params={}))
    assert reply.status_code == 200 and reply.json()["status"] == "succeeded", reply.text
    result = reply.json()["result"]
    assert first["strategy"]["searched"], "the tiny model's gate let the search through"
    assert result["notes"]["warm_start"]["new_demos"] == len(ADDED)
    assert result["passes"]["backward"] == 0
    with servers[1].client() as other:
        assert other.post("/v1/pools", json={"examples": PARENT + ADDED}).json()["id"] == grown
        cold = select(other, request(grown, params={}))["result"]
    assert "warm_start" not in cold["notes"]
    assert result["strategy"]["gate"] == cold["strategy"]["gate"]


def test_a_longer_demo_widens_the_slots_and_the_anchor_is_computed_again(client):
    parent = client.post("/v1/pools", json={"examples": PARENT}).json()["id"]
    first = select(client, request(parent))  # the job of the test above, when it ran
    longer = [{"id": "longer", "input": PARENT[0]["input"] + ", and a great cast in every single part",
               "output": "negative"}]
    grown = client.post(f"/v1/pools/{parent}/examples", json={"examples": longer}).json()["id"]
    result = select(client, request(grown))["result"]
    assert result["notes"]["warm_start"]["job"] == first["id"]  # it still starts from the parent's set
    assert result["passes"]["backward"] > 0  # but the gradient is taken in the wider layout


@pytest.mark.parametrize("warm, method, field", [
    (WarmStart("j", 3, ["a", "b"], ["a", "c"]), "bm25", "warm_start"),
    (WarmStart("j", 4, ["a", "b"], ["a", "c"]), "gradient", "warm_start.parent_size"),
    (WarmStart("j", 3, ["a", "a"], ["a", "c"]), "gradient", "warm_start.selected"),
    (WarmStart("j", 3, ["a", "b"], ["a", "d"]), "gradient", "warm_start.anchor"),  # d is not the parent's
])
def test_a_warm_start_that_does_not_fit_the_pool_names_the_field(warm, method, field):
    pool = [Example(name, name, "x") for name in "abcd"]
    assert resume(WarmStart("j", 3, ["b", "a"], ["a", "c"]), pool, 2, "gradient").new == [3]
    with pytest.raises(InputError) as error:
        resume(warm, pool, 2, method)
    assert error.value.field == field


@pytest.mark.parametrize("winner", ["hybrid", "topk-embed", "set"])
def test_auto_resumes_from_the_searched_set_whatever_prompt_the_parent_returned(tiny, winner, monkeypatch):
    """Under the default strategy (auto) the parent's check may return the hybrid (``selected`` holds only the
    searched set's head) or a retrieval (``selected`` empty): the grown pool's search resumes from the whole searched
    set and the parent's anchor, as the API resumes it (app/growth.py: WarmStart.of on the parent's result)."""
    from iclsel.models.cache import MemoryCache
    from iclsel.models.engine import Engine, SelectionRequest
    from test_strategy import wins

    wins(monkeypatch, winner)
    pool = [Example(d["id"], d["input"], d["output"]) for d in PARENT + ADDED]
    queries = [Example(f"q{i}", q["input"], q["output"]) for i, q in enumerate(QUERIES[:8])]  # under the gate's 16
    engine = Engine(tiny, cache=MemoryCache())
    params = {"rounds": 1, "validation": 6}
    parent = engine.select(SelectionRequest(pool[:len(PARENT)], queries, k=3, seed=1, params=params))
    searched = parent["strategy"]["searched"]
    assert parent["strategy"]["chosen"] == winner and len(searched) == 3
    warm = WarmStart.of("parent-job", len(PARENT), parent)
    assert warm.selected == searched and warm.anchor == parent["notes"]["anchor"]
    grown = engine.select(SelectionRequest(pool, queries, k=3, seed=1, params=params, warm_start=warm.to_dict()))
    assert grown["notes"]["warm_start"] == {"job": "parent-job", "new_demos": len(ADDED)}
    assert grown["passes"]["backward"] == 0  # the parent's anchor gradient, from the cache
    came_in = set(grown["strategy"]["searched"]) - set(searched)
    assert came_in <= {d["id"] for d in ADDED}
