"""max_passes (every method stops within it and says so) and dry_run (the cost, known before running: passes
within 2x of the real run), in the engine and over HTTP against the real app."""

from __future__ import annotations

import pytest

from iclsel.models.cache import MemoryCache
from iclsel.models.data import InputError
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.methods import METHODS as SELECTORS

from service_fixtures import embedded_api
from test_constraints import examples

# the gradient search's own budget (16 passes per query) is too small for a search on so few queries
FAST = {"gradient": {"strategy": "set", "budget": 2000}, "gradre": {"subsets": 16, "anchors": 3, "checks": 4}, "exact": {"subsets": 12}}


@pytest.fixture(scope="module")
def data():
    return examples(14, "d", 2), examples(8, "q", 3)


def run(tiny, pool, queries, method, **extra):
    return Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, method=method, seed=1,
                                                                     params=FAST.get(method, {}), **extra))


@pytest.mark.parametrize("method", ["gradient", "gradre", "exact"])
def test_a_method_cut_short_stays_within_max_passes_and_says_so(tiny, data, method):
    pool, queries = data
    free = run(tiny, pool, queries, method)["passes"]["forward_equivalent"]
    limit = free // 2
    result = run(tiny, pool, queries, method, max_passes=limit)
    assert result["passes"]["forward_equivalent"] <= limit
    assert result["budget"] == {"max_passes": limit, "spent": result["passes"]["forward_equivalent"],
                                "budget_exhausted": True}
    assert result["exact"] is not None  # the returned set's run was kept back for it
    assert len(result["selected"]) == 3


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_a_roomy_max_passes_changes_nothing(tiny, data, method):
    pool, queries = data
    free = run(tiny, pool, queries, method)
    bounded = run(tiny, pool, queries, method, max_passes=free["passes"]["forward_equivalent"] + 1000)
    assert bounded["selected"] == free["selected"] and bounded["scores"] == free["scores"]
    assert bounded["budget"]["budget_exhausted"] is False


@pytest.mark.parametrize("method", ["gradient", "gradre", "exact", "topk-embed"])
def test_a_max_passes_too_small_to_start_names_the_field(tiny, data, method):
    pool, queries = data
    with pytest.raises(InputError) as raised:
        run(tiny, pool, queries, method, max_passes=5)
    assert raised.value.field == "max_passes"


@pytest.mark.parametrize("method, extra", [
    ("gradient", {}), ("gradient", {"min_per_label": 1}), ("gradre", {}), ("exact", {}), ("topk-embed", {}),
    ("random", {}), ("gradient", {"max_passes": 400}), ("gradient", {"params": {"evaluator": "exact"}}),
    ("gradient", {"params": {"strategy": "auto", "budget": 2000}}),
    ("gradient", {"params": {"strategy": "topk-embed"}}),
    ("gradient", {"params": {"strategy": "set", "retrieve": 1, "rounds": 1}}),
    ("gradient", {"params": {"strategy": "set", "retrieve": 1, "retrieve_by": "bm25", "rounds": 1}}),
])
def test_the_plan_brackets_the_real_passes_within_2x(tiny, data, method, extra):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    request = SelectionRequest(pool, queries, k=3, method=method, seed=1, **{"params": FAST.get(method, {}), **extra})
    plan = engine.plan(request)
    spent = Engine(tiny, cache=MemoryCache()).select(request)["passes"]["forward_equivalent"]
    assert plan.passes_low <= spent <= plan.passes_high
    assert plan.estimated_passes / 2 <= spent <= plan.estimated_passes * 2
    assert plan.calibration_passes > 0 and plan.seconds_per_pass > 0


# ---------- over HTTP ----------

@pytest.fixture(scope="module")
def client(tiny_model_dir, tmp_path_factory):
    with embedded_api(tiny_model_dir, tmp_path_factory.mktemp("budget")) as server:
        with server.client() as client:
            yield client


def test_http_dry_run_predicts_passes_and_prices_them_from_its_calibration(client, data):
    """Passes within 2x (counted, so the same on any machine); seconds are the plan's calibrated rates times
    that work, which the plan reports. How close they come to the clock is a benchmark's figure, not a test's:
    it varies with whatever else the machine runs."""
    pool, queries = data
    body = {"pool": [d.to_dict() for d in pool], "queries": [q.to_dict() for q in queries], "k": 3,
            "method": "gradient", "params": FAST["gradient"], "seed": 0, "wait_s": 60}
    planned = client.post("/v1/selections", json={**body, "dry_run": True})
    assert planned.status_code == 200, planned.text
    plan = planned.json()["result"]
    assert plan["dry_run"] is True and plan["candidates"] == len(pool)
    assert plan["passes_low"] <= plan["estimated_passes"] <= plan["passes_high"]
    assert plan["calibration_passes"] > 0 and plan["seconds_per_pass"] > 0 and plan["seconds_per_call"] >= 0
    assert plan["estimated_seconds"] > 0
    ran = client.post("/v1/selections", json=body)
    assert ran.status_code == 200 and ran.json()["id"] != planned.json()["id"]
    spent = ran.json()["result"]["passes"]["forward_equivalent"]
    assert plan["estimated_passes"] / 2 <= spent <= plan["estimated_passes"] * 2


def test_http_max_passes_is_honoured_and_reported(client, data):
    pool, queries = data
    body = {"pool": [d.to_dict() for d in pool], "queries": [q.to_dict() for q in queries], "k": 3,
            "method": "exact", "params": {"subsets": 12}, "max_passes": 60, "wait_s": 120}
    reply = client.post("/v1/selections", json=body)
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    assert result["budget"]["spent"] == result["passes"]["forward_equivalent"] <= 60
    assert result["budget"]["budget_exhausted"] is True and result["notes"]["subsets"] < 12
    for bad in (0, -3, "many"):
        refused = client.post("/v1/selections", json={**body, "max_passes": bad})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "max_passes"
    tiny_budget = client.post("/v1/selections", json={**body, "max_passes": 3})
    assert tiny_budget.status_code == 422 and tiny_budget.json()["error"]["field"] == "max_passes"
