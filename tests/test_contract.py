"""The one contract (iclsel/contract.py): the README's reference tables and the OpenAPI schema match it, the job
spec round-trips through it, and it loads without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from iclsel.contract import (PARAMS, ExactParams, GradientParams, GradreParams, InputError, Params, SelectionRequest,
                             SelectionResult)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first markdown table after the line holding ``heading``."""
    lines = README[README.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([a-z0-9_-]+)`", cell)


def test_readme_result_table_is_the_contracts_result():
    keys = [name for row in table_after("| key | what |") for name in names(row[0])]
    assert sorted(keys) == sorted(SelectionResult.model_fields)


def test_readme_parameter_tables_are_the_params_models():
    gradient = {names(row[0])[0]: row[1] for row in table_after("Parameters of `gradient`:")}
    common = {names(row[0])[0]: row[1] for row in table_after("Every method also takes:")}
    public = {name for name, field in Params.model_fields.items() if name not in ("prompt_width", "filler")}
    assert set(common) | {"pool_queries"} == public
    assert set(gradient) == set(GradientParams.model_fields) - set(Params.model_fields)
    for name, default in gradient.items():  # a plain default is the model's
        value = GradientParams.model_fields[name].default
        if value is not None and re.fullmatch(r"`?[\w-]+`?", default):
            assert default.strip("`") == str(value), name
    methods = {names(row[0])[0]: row[2] for row in table_after("| method | what it does |")}
    assert set(methods) == set(PARAMS)
    for method, model in (("gradre", GradreParams), ("exact", ExactParams)):
        documented = dict(re.findall(r"`([a-z_]+)` \(`?([\w-]+)`?\)", methods[method]))
        assert documented == {name: str(model.model_fields[name].default)
                              for name in set(model.model_fields) - set(Params.model_fields)}, method


def test_readme_request_fields_and_openapi_are_the_contracts_request():
    route = next(line for line in README.splitlines() if line.startswith("| `POST /v1/selections`"))
    fields = set(names(route.split(" | ")[1]))
    schema = SelectionRequest.model_json_schema()["properties"]
    assert fields - set(PARAMS) == set(schema)  # the method names are listed too
    from iclsel.app.server import create_app
    from iclsel.settings import Settings

    openapi = create_app(Settings()).openapi()
    body = openapi["paths"]["/v1/selections"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    component = openapi["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert set(component["properties"]) == set(schema) and "warm_start" not in schema


def test_the_job_spec_round_trips_and_leaves_out_what_was_not_given():
    body = SelectionRequest.model_validate({"pool": [{"id": "a", "input": "x", "output": "y"}, {"input": "z", "output": "w"}],
                                            "queries": [{"input": "q", "output": "y"}], "k": 1, "wait_s": 3})
    spec = body.spec()
    assert set(spec) == {"pool", "pool_id", "queries", "k", "method", "options", "template", "separator", "seed",
                         "params"}
    assert spec["pool"] == [{"id": "a", "input": "x", "output": "y"}, {"input": "z", "output": "w"}]
    given = body.model_copy(update={"min_per_label": 1, "dry_run": True}).spec()
    assert given["min_per_label"] == 1 and given["dry_run"] is True
    assert SelectionRequest.from_spec({**spec, "pool_id": "p"}).spec() == {**spec, "pool_id": "p"}
    with pytest.raises(ValueError, match="exactly one of pool and pool_id"):
        SelectionRequest.model_validate({**spec, "pool_id": "p", "wait_s": 1})


def test_params_parse_as_the_methods_always_read_them():
    assert GradientParams.parse({"rounds": "2", "per_slot": 1.0, "unknown": 1}, k=4).rounds == 2
    assert GradientParams.parse({}).anchor_mode == "mean-loss"
    assert GradientParams.parse({"evaluator": "exact"}).anchor_mode == "label-groups"
    for params, field in (({"rounds": "many"}, "params.rounds"), ({"retrieve": 4}, "params.retrieve"),
                          ({"retrieve": 2, "retrieve_by": "minilm"}, "params.retrieve_by"),
                          ({"filler": "x"}, "params.filler"), ({"objective": "errors", "evaluator": "exact",
                                                               "anchor_mode": "mean-loss"}, "params.objective")):
        with pytest.raises(InputError) as raised:
            GradientParams.parse(params, k=4)
        assert raised.value.field == field
    assert Params.subset_counts({"subsets": 5, "rounds": 3}) == {"subsets": 5}


def test_the_contract_and_the_client_load_without_torch():
    code = "import sys, iclsel.contract, iclsel.client; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
