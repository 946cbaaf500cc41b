"""The embedded service under bad input, without keys, and under load; no pickle or eval anywhere.

One server process (in-process queue and cache) with API keys and small limits; schemathesis
generates requests from the service's own /openapi.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from service_fixtures import POOL, QUERIES, embedded_api, record_figures, run_load, selection

KEY = "reliability-key"
ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"ICLSEL_MAX_POOL_SIZE": "30", "ICLSEL_MAX_QUERIES": "20", "ICLSEL_MAX_TEXT_CHARS": "2000",
          "ICLSEL_MAX_K": "8", "ICLSEL_MAX_BODY_BYTES": "65536", "ICLSEL_MAX_WAIT_S": "2", "ICLSEL_MAX_QUEUE": "8"}


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    with embedded_api(tiny_model_dir, tmp_path_factory.mktemp("reliability-embedded"), ICLSEL_API_KEYS=KEY, **LIMITS) as server:
        yield server


@pytest.fixture
def client(api):
    with api.client(KEY) as client:
        yield client


# ---------- generated requests ----------

@pytest.fixture(scope="module")
def openapi(api):
    import schemathesis

    return schemathesis.openapi.from_url(api.url + "/openapi.json")


@pytest.mark.parametrize("mode, examples", [("positive", 250), ("negative", 150)])
def test_generated_requests_get_no_5xx_and_match_the_schema(openapi, mode, examples):
    """Requests generated from /openapi.json (valid ones, and ones that break the schema)."""
    hypothesis = pytest.importorskip("hypothesis")
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    statuses: dict[str, int] = {}

    @hypothesis.given(case=openapi.as_strategy(generation_mode=GenerationMode(mode)))
    @hypothesis.settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    def check(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                                          checks=[not_a_server_error, status_code_conformance,
                                                  content_type_conformance, response_schema_conformance])
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

    check()
    record_figures(f"schemathesis_{mode}", {"cases": sum(statuses.values()), "statuses": statuses})
    assert sum(statuses.values()) >= examples // 2


# ---------- hand-written bad input ----------

def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


RAW_CASES = {  # name -> (body bytes, status, field or None)
    "malformed JSON": (b'{"pool": [', 422, "body"),
    "not an object": (b'[1, 2, 3]', 422, "body"),
    "deeply nested JSON": (('{"pool": ' + deep(20000) + "}").encode(), 400, "body"),
    "deeply nested params": (json.dumps(selection())[:-1].encode() + b', "params": {"a": ' + deep(5000).encode() + b"}}",
                             400, "body"),
    "invalid UTF-8": (b'{"pool": [{"input": "\xff\xfe", "output": "a"}], "queries": [], "k": 1}', 400, "body"),
    "NaN k": (json.dumps(selection())[:-1].encode() + b', "seed": NaN}', 422, "seed"),
    "infinite wait": (json.dumps(selection())[:-1].encode() + b', "wait_s": Infinity}', 422, "wait_s"),
    "NaN in params": (json.dumps(selection())[:-1].encode() + b', "params": {"rounds": NaN}}', 422, "params.rounds"),
    "huge number": (json.dumps(selection())[:-1].encode() + b', "k": ' + b"9" * 5000 + b"}", 400, "body"),
    "big k": (json.dumps(selection())[:-1].encode() + b', "k": ' + b"9" * 40 + b"}", 422, "k"),
}


@pytest.mark.parametrize("name", RAW_CASES)
def test_malformed_bodies_get_4xx_naming_the_problem(client, name):
    body, status, field = RAW_CASES[name]
    reply = client.post("/v1/selections", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text[:500]
    error = reply.json()["error"]
    assert error["code"] and error["message"]
    if field is not None:
        assert error["field"] == field, error


@pytest.mark.parametrize("change, status, field", [
    ({"k": 0}, 422, "k"),
    ({"k": 7}, 422, "k"),  # above the pool
    ({"k": 9}, 422, "k"),  # above ICLSEL_MAX_K
    ({"k": "two"}, 422, "k"),
    ({"k": 2.5}, 422, "k"),
    ({"queries": []}, 422, "queries"),
    ({"queries": "great acting"}, 422, "queries"),
    ({"queries": [{"input": 3, "output": "positive"}]}, 422, "queries[0].input"),
    ({"pool": [{"input": "x" * 2001, "output": "a"}]}, 422, "pool[0].input"),
    ({"pool": [{"input": "x" * 70000, "output": "a"}]}, 413, None),
    ({"pool": [{"input": f"r{i}", "output": "a"} for i in range(31)]}, 422, "pool"),
    ({"queries": QUERIES * 7}, 422, "queries"),
    ({"template": "no slots"}, 422, None),
    ({"options": []}, 422, "options"),
    ({"seed": -1}, 422, "seed"),
    ({"seed": 2**64}, 422, "seed"),
    ({"unknown": True}, 422, "unknown"),
    ({"pool": [{**POOL[0], "extra": 1}]}, 422, "pool[0].extra"),
    ({"params": {"subsets": 10**30}}, 422, "params.subsets"),
])
def test_bad_fields_get_4xx_naming_the_field(client, change, status, field):
    reply = client.post("/v1/selections", json=selection(**change, wait_s=2))
    assert reply.status_code == status or (status == 200 and reply.status_code == 202), reply.text[:500]
    if status >= 400:
        error = reply.json()["error"]
        assert error["message"]
        if field is not None:
            assert error["field"] == field and field.split("[")[0].split(".")[0] in error["message"], error


# ---------- keys, limits, no pickle ----------

V1 = [("POST", "/v1/selections", selection()), ("POST", "/v1/pools", {"examples": POOL}),
      ("GET", "/v1/pools/x", None), ("DELETE", "/v1/pools/x", None), ("GET", "/v1/jobs/x", None),
      ("DELETE", "/v1/jobs/x", None)]


@pytest.mark.parametrize("method, path, body", V1)
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer " + KEY[:-1], "Bearer " + KEY + "x", "bearer" + KEY,
                                    "Basic " + KEY])
def test_every_v1_route_needs_a_valid_key(api, method, path, body, header):
    headers = {"Authorization": header} if header is not None else {}
    reply = httpx.request(method, api.url + path, json=body, headers=headers, timeout=10)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"


def test_keys_are_compared_in_constant_time():
    source = (ROOT / "app" / "auth.py").read_text()
    assert "hmac.compare_digest" in source and not re.search(r"token\s*(==|in)\s", source)


def test_nothing_is_pickled_or_evaluated():
    forbidden = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|marshal|shelve|joblib)\b|\b(eval|exec)\s*\(|"
                           r"torch\.load\s*\(|yaml\.load\s*\(|\bpickle\.", re.M)
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
                 for folder in ("app", "workers") for path in sorted((ROOT / folder).rglob("*.py"))
                 for match in forbidden.finditer(path.read_text())]
    assert offenders == []


def test_load_embedded(api):
    def requests_of(client: int, i: int):
        if i % 4 == 3:
            return "GET", "/ready", None
        return "POST", "/v1/selections", selection(seed=(client * 5 + i) % 16, wait_s=2)

    figures = run_load(api.url, requests_of, seconds=8, clients=24, per_client=4, pids=[api.popen.pid],
                       headers={"Authorization": f"Bearer {KEY}"})
    record_figures("load_embedded", figures)
    assert figures["transport_error_count"] == 0, figures["transport_errors"]
    assert set(figures["statuses"]) <= {"200", "202", "429"}, figures["statuses"]
    assert figures["requests"] >= 24 * 4  # each client's at least, however slow the machine
    pid = str(api.popen.pid)
    assert figures["rss_mb_after"][pid] < figures["rss_mb_before"][pid] + 200, figures
