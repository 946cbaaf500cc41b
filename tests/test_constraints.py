"""Constraints every method honours (max_prompt_tokens, min_per_label, exclude, where): in the engine, where every
set a method runs is watched, and over HTTP against the real app."""

from __future__ import annotations

import pytest
import torch

from iclsel.models.cache import MemoryCache
from iclsel.models.runs import AnchorService, ExactRuns
from iclsel.models.data import Example, InputError
from iclsel.models.defaults import DEFAULT_SEPARATOR as SEPARATOR, DEFAULT_TEMPLATE as TEMPLATE
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.methods import METHODS as SELECTORS

from service_fixtures import POOL, QUERIES, embedded_api, selection

WORDS = ["good", "bad", "great", "awful", "fun", "dull", "film", "plot", "acting", "boring"]
LABELS = ("positive", "negative", "neutral")


def examples(count: int, prefix: str, seed: int) -> list[Example]:
    generator = torch.Generator().manual_seed(seed)
    made = []
    for i in range(count):
        length = int(torch.randint(1, 12, (1,), generator=generator))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (length,), generator=generator)]
        made.append(Example(f"{prefix}{i}", " ".join(words), LABELS[i % 3],
                            metadata={"source": "web" if i % 2 else "book", "lang": ["en", "de", "fr"][(i // 3) % 3]}))
    return made


@pytest.fixture(scope="module")
def data():
    return examples(18, "d", 0), examples(6, "q", 1)


@pytest.fixture
def watched(monkeypatch):
    """Every demo set any method runs exactly (whole query set or a sample of rows) or anchors at."""
    seen: list[tuple[int, ...]] = []
    for part, name in ((ExactRuns, "exact"), (ExactRuns, "exact_rows"), (AnchorService, "anchor")):
        original = getattr(part, name)

        def spy(self, subset, *args, _original=original, **kwargs):
            seen.append(tuple(int(i) for i in subset))
            return _original(self, subset, *args, **kwargs)

        monkeypatch.setattr(part, name, spy)
    return seen


FAST = {"gradient": {"strategy": "set", "rounds": 2}, "gradre": {"subsets": 12, "anchors": 2, "checks": 2}, "exact": {"subsets": 6}}


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_method_keeps_every_constraint_in_every_set_it_tries(tiny, data, watched, method):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    candidates = [d for d in pool if d.id not in {"d1", "d4"} and d.metadata["lang"] in ("en", "de")]
    layout = engine.layout(candidates, queries, 4, None, TEMPLATE, SEPARATOR)
    lengths = sorted(layout.demo_lengths.tolist())
    limit = len(layout.special_ids) + 4 * lengths[-3]  # the two longest candidates do not fit
    request = SelectionRequest(pool, queries, k=4, method=method, params=FAST.get(method, {}), seed=3,
                               exclude=["d1", "d4"], where={"lang": ["en", "de"]}, min_per_label=1,
                               max_prompt_tokens=limit)
    result = engine.select(request)
    assert result["constraints"]["pool"] == 18 and result["constraints"]["candidates"] < len(candidates)
    assert result["constraints"]["prompt_tokens"] == len(result["prompt"]["token_ids"]) <= limit
    chosen = [d["id"] for d in result["selected"]]
    assert len(chosen) == 4 and set(chosen) <= {d.id for d in candidates}
    assert {d["output"] for d in result["selected"]} == set(LABELS)  # min_per_label=1 of three labels
    assert set(result["scores"]) <= {d.id for d in candidates}
    candidate_pool = [d for d in pool if d.id in result["scores"]]
    for subset in watched:  # every set the method ran or anchored at, in the candidate pool's indices
        outputs = [candidate_pool[i].output for i in subset]
        assert all(outputs.count(label) >= 1 for label in LABELS), (subset, outputs)
    if method in ("gradient", "gradre", "exact"):
        assert len(watched) > 1


def test_without_constraints_nothing_changes(tiny, data):
    pool, queries = data
    plain = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, params=FAST["gradient"]))
    assert "constraints" not in plain
    bounded = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, params=FAST["gradient"],
                                                                       max_prompt_tokens=10_000))
    assert bounded["selected"] == plain["selected"] and bounded["scores"] == plain["scores"]
    assert bounded["constraints"]["candidates"] == len(pool)


def test_max_prompt_tokens_drops_the_long_demos_and_is_tight(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    layout = engine.layout(pool, queries, 3, None, TEMPLATE, SEPARATOR)
    lengths = sorted(layout.demo_lengths.tolist())
    limit = len(layout.special_ids) + 3 * lengths[len(lengths) // 2]  # about half the demos fit
    result = engine.select(SelectionRequest(pool, queries, k=3, method="topk-embed", max_prompt_tokens=limit))
    assert len(result["prompt"]["token_ids"]) <= limit
    fitting = sum(1 for length in lengths if length <= lengths[len(lengths) // 2])
    assert result["constraints"]["candidates"] == fitting < len(pool)


@pytest.mark.parametrize("change, field", [
    ({"min_per_label": 2}, "min_per_label"),  # 2 of 3 labels needs k >= 6
    ({"exclude": ["nope"]}, "exclude[0]"),
    ({"where": {"source": "tv"}}, "where"),
    ({"max_prompt_tokens": 5}, "max_prompt_tokens"),
    ({"max_prompt_tokens": 40, "params": {"retrieve": 1}}, "max_prompt_tokens"),
])
def test_constraints_that_cannot_be_met_name_the_field(tiny, data, change, field):
    pool, queries = data
    with pytest.raises(InputError) as raised:
        Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=4, method="random", **change))
    assert raised.value.field == field


# ---------- over HTTP ----------

TAGGED = [{**demo, "metadata": {"source": "web" if i % 2 else "book"}} for i, demo in enumerate(POOL)]


@pytest.fixture(scope="module")
def client(tiny_model_dir, tmp_path_factory):
    with embedded_api(tiny_model_dir, tmp_path_factory.mktemp("constraints")) as server:
        with server.client() as client:
            yield client


def test_http_selection_honours_the_constraints_and_reports_them(client):
    body = selection(pool=TAGGED, k=2, method="gradient", params={"rounds": 1}, where={"source": ["web", "book"]},
                     exclude=["p0"], min_per_label=1, max_prompt_tokens=200, wait_s=60)
    reply = client.post("/v1/selections", json=body)
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    assert {d["output"] for d in result["selected"]} == {"positive", "negative"}
    assert "p0" not in {d["id"] for d in result["selected"]} and "p0" not in result["scores"]
    assert all(d["metadata"]["source"] in ("web", "book") for d in result["selected"])
    assert result["constraints"] == {"candidates": 5, "pool": 6, "prompt_tokens": len(result["prompt"]["token_ids"]),
                                     "max_prompt_tokens": 200, "min_per_label": 1}
    web_only = {**body, "where": {"source": "web"}, "exclude": []}  # p1, p3, p5: all negative
    assert client.post("/v1/selections", json=web_only).json()["error"]["field"] == "min_per_label"
    reply = client.post("/v1/selections", json={**web_only, "min_per_label": 0})
    assert {d["id"] for d in reply.json()["result"]["selected"]} <= {"p1", "p3", "p5"}


@pytest.mark.parametrize("change, field", [
    ({"min_per_label": 2}, "min_per_label"),  # k=2, two labels: at most 1 each
    ({"min_per_label": -1}, "min_per_label"),
    ({"exclude": ["p9"]}, "exclude[0]"),
    ({"exclude": ["p0", "p1", "p2", "p3", "p4"]}, "exclude"),
    ({"where": {"source": "tv"}}, "where"),
    ({"where": {"source": {"nested": 1}}}, "where.source"),
    ({"max_prompt_tokens": 0}, "max_prompt_tokens"),
])
def test_http_constraints_that_cannot_be_met_get_422_naming_the_field(client, change, field):
    reply = client.post("/v1/selections", json={**selection(pool=TAGGED), **change})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["field"].startswith(field)


def test_http_prompt_budget_too_small_is_a_422_job(client):
    reply = client.post("/v1/selections", json=selection(max_prompt_tokens=3, wait_s=60))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["field"] == "max_prompt_tokens"


def test_pools_keep_metadata(client):
    stored = client.post("/v1/pools", json={"examples": TAGGED})
    assert stored.status_code == 201
    back = client.get(f"/v1/pools/{stored.json()['id']}").json()
    assert [d["metadata"] for d in back["examples"]] == [d["metadata"] for d in TAGGED]
    plain = client.post("/v1/pools", json={"examples": POOL}).json()
    assert plain["id"] != stored.json()["id"]  # metadata is part of a pool's content
