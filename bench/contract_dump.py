"""Dump the whole result of every method (and plans, job specs and ids, input errors) on examples/, for a
bit-for-bit comparison across a refactoring: run it before and after, and compare the JSON files.

    python -m bench.contract_dump --model tiny -o /tmp/before.json
    python -m bench.contract_dump --model tiny -o /tmp/after.json --compare /tmp/before.json

Timings are left out (result.timings, and a plan's seconds): they are the only values that depend on the
machine's load. Everything else (selected sets, scores, estimates, diagnostics, notes, passes, cache counts,
echoed params, job specs and ids) must be equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLAN_TIMING = ("estimated_seconds", "seconds_per_pass", "seconds_per_call")
FAST = {"gradre": {"subsets": 16, "anchors": 2, "checks": 3}, "exact": {"subsets": 10}}

# (name, request fields): every method with its defaults, then the parameters and fields that change paths
CASES = [
    *[(method, {"method": method}) for method in ("gradient", "gradre", "exact", "random", "bm25", "topk-embed")],
    ("gradient-exact", {"params": {"evaluator": "exact", "rounds": 2}}),
    ("gradient-exact-global", {"params": {"evaluator": "exact", "rounds": 2, "propose": "global", "candidates": 3,
                                          "patience": 0, "swaps": 20}}),
    ("gradient-first-order", {"params": {"evaluator": "first-order", "rounds": 2, "checks": 2}}),
    ("gradient-subsample-small", {"params": {"screen": 3, "sample": 2, "finalists": 1, "per_slot": 1,
                                             "budget": 300, "starts": 3, "init": "random", "moves": "same-label"}}),
    ("gradient-objective", {"params": {"objective": "errors", "evaluator": "exact", "anchor_mode": "per-query",
                                       "rounds": 1}}),
    ("gradient-pool-queries", {"params": {"pool_queries": True, "rounds": 1}}),
    ("gradient-no-eval", {"params": {"evaluate_selected": False, "rounds": 1}}),
    ("gradient-retrieve", {"k": 3, "params": {"retrieve": 1, "rounds": 1},
                           "targets": ["a wonderful film", "dull"]}),
    ("gradre-label-groups", {"method": "gradre", "params": {**FAST["gradre"], "anchor_mode": "label-groups"}}),
    ("gradre-pool-queries", {"method": "gradre", "params": {**FAST["gradre"], "pool_queries": True}}),
    ("exact-retrieve", {"method": "exact", "k": 3, "params": {**FAST["exact"], "retrieve": 2}}),
    ("random-constraints", {"method": "random", "min_per_label": 1, "exclude": ["d00", "d03"],
                            "max_prompt_tokens": 200}),
    ("gradient-constraints", {"min_per_label": 2, "exclude": ["d01"], "params": {"rounds": 2}}),
    ("gradient-max-passes", {"max_passes": 300}),
    ("gradient-exact-max-passes", {"max_passes": 250, "params": {"evaluator": "exact"}}),
    ("gradre-max-passes", {"method": "gradre", "max_passes": 150, "params": FAST["gradre"]}),
    ("exact-max-passes", {"method": "exact", "max_passes": 120, "params": FAST["exact"]}),
    ("gradient-slot-tokens", {"params": {"max_slot_tokens": 80, "rounds": 1}}),
    ("gradient-string-int", {"params": {"rounds": "1", "per_slot": 1.0, "unknown": 3}}),
    ("topk-embed-options", {"method": "topk-embed", "options": ["negative", "positive"], "seed": 5}),
]
ERRORS = [
    {"params": {"rounds": "many"}}, {"params": {"anchor_mode": "sideways"}}, {"params": {"init": "clever"}},
    {"params": {"evaluator": "guess"}}, {"params": {"starts": 0}}, {"params": {"moves": "nearby"}},
    {"params": {"objective": "errors"}, "method": "gradient"}, {"params": {"objective": "accuracy"}}, {"params": {"evaluator": "exact", "objective": "f1"}},
    {"params": {"pool_queries": "yes"}}, {"params": {"retrieve": 4}}, {"params": {"retrieve": True}},
    {"params": {"prompt_width": 10}}, {"params": {"filler": "x"}}, {"method": "gradre", "params": {"subsets": 0}},
    {"method": "gradre", "params": {"anchors": "two"}}, {"method": "exact", "params": {"subsets": -1}},
    {"method": "gradre", "params": {"anchor_mode": "nope"}}, {"method": "nope"}, {"params": []}, {"seed": -1},
    {"max_passes": 0}, {"max_passes": 5}, {"method": "gradre", "max_passes": 5},
    {"max_prompt_tokens": 40, "params": {"retrieve": 1}}, {"targets": [1]}, {"min_per_label": 9},
    {"params": {"max_slot_tokens": 12}}, {"params": {"max_slot_tokens": "x"}}, {"params": {"budget": -1}}, {"params": {"screen": 0}}, {"params": {"checks": -2}},
]
SPECS = [
    {}, {"method": "gradre", "params": {"subsets": 8}}, {"targets": ["x"], "params": {"retrieve": 1}},
    {"min_per_label": 1, "exclude": ["d00", "d03"], "where": {}, "max_prompt_tokens": 100}, {"max_passes": 500},
    {"dry_run": True}, {"options": ["negative", "positive"], "seed": 9, "k": 3}, {"params": {"rounds": 2}, "wait_s": 3},
    # refused by the app (status, code, field)
    {"exclude": [3]}, {"k": 99}, {"params": {"subsets": 10**6}}, {"params": {"rounds": float("inf")}},
    {"targets": ["x" * 10**6]}, {"method": "nope"}, {"pool_id": "p"}, {"k": 0},
]


def load(model: str):
    from iclsel.models.loading import load_model

    if model == "tiny":
        from iclsel.models.tiny import build_tiny_model

        folder = Path("/tmp/iclsel-contract-tiny")
        if not (folder / "config.json").exists():
            build_tiny_model(folder)
        return load_model(str(folder), device="cpu")
    return load_model(model, device="cpu")


def request(pool, queries, fields: dict):
    from iclsel.models.engine import SelectionRequest

    fields = {"k": 4, "seed": 1, **fields}
    if fields.get("method") in FAST and "params" not in fields:
        fields["params"] = FAST[fields["method"]]
    return SelectionRequest(pool=pool, queries=queries, **fields)


def without_timings(result: dict) -> dict:
    result = dict(result)
    result.pop("timings", None)
    for name in PLAN_TIMING:
        result.pop(name, None)
    return result


def run_cases(engine, pool, queries) -> dict:
    from iclsel.models.cache import MemoryCache

    out = {}
    for name, fields in CASES:
        engine.cache = MemoryCache()  # each case from a cold cache: its cache counts do not depend on the order
        print(name, file=sys.stderr)
        out[name] = without_timings(engine.select(request(pool, queries, fields)))
        out[name + " (plan)"] = without_timings(engine.plan(request(pool, queries, fields)).to_dict())
    return out


def run_errors(engine, pool, queries) -> dict:
    from iclsel.models.cache import MemoryCache
    from iclsel.models.data import InputError

    out = {}
    for fields in ERRORS:
        engine.cache = MemoryCache()
        key = json.dumps(fields, sort_keys=True)
        try:
            engine.select(request(pool, queries, fields))
            out[key] = "no error"
        except InputError as error:
            out[key] = {"field": error.field, "message": error.message}
        except Exception as error:  # noqa: BLE001 (recorded, compared)
            out[key] = {"exception": type(error).__name__, "message": str(error)}
    return out


def run_specs(fingerprint: str) -> dict:
    """The normalised job spec and job id of requests through the HTTP layer's validation (app/)."""
    from iclsel.settings import Settings
    from iclsel.workers.jobs import job_id

    records = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text().splitlines() if line.strip()]
    queries = [json.loads(line) for line in (EXAMPLES / "queries.jsonl").read_text().splitlines() if line.strip()]
    spec_of = _spec_function()
    out = {}
    for fields in SPECS:
        body = {"pool": records, "queries": queries, **fields}
        key = json.dumps(fields, sort_keys=True)[:200]
        try:
            spec = spec_of(body, Settings())
        except Exception as error:  # noqa: BLE001 (pydantic's ValidationError or the app's ApiError)
            out[key] = {"refused": type(error).__name__, **{name: str(getattr(error, name)) for name in
                                                            ("status", "code", "field") if hasattr(error, name)}}
            continue
        out[key] = {"spec": spec, "job_id": job_id(spec, fingerprint)}
    return out


def _spec_function():
    """body dict, settings -> the job spec dict, as the app builds it (app.schemas.SelectionCreate: the request
    body model before and after the contract, of which it is now an alias)."""
    from iclsel.app import limits
    from iclsel.app.schemas import SelectionCreate

    return lambda body, settings: limits.selection_spec(SelectionCreate.model_validate(body), lambda _: None, settings)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (iclsel.models.tiny) or a load_model spec")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--compare", help="a dump to compare with: exit 1 on any difference")
    args = parser.parse_args(argv)

    import torch

    from iclsel.models.data import read_jsonl
    from iclsel.models.engine import Engine

    torch.set_num_threads(1)
    model = load(args.model)
    pool, queries = read_jsonl(EXAMPLES / "pool.jsonl", "pool"), read_jsonl(EXAMPLES / "queries.jsonl", "queries")
    engine = Engine(model)
    dump = {"model": model.fingerprint, "cases": run_cases(engine, pool, queries),
            "errors": run_errors(engine, pool, queries), "specs": run_specs(model.fingerprint)}
    text = json.dumps(dump, indent=1, sort_keys=True, default=repr)
    Path(args.output).write_text(text + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        after = json.loads(text)
        diffs = list(differences(before, after, ""))
        for path in diffs[:40]:
            print("DIFF", path)
        print(f"{len(diffs)} differences" if diffs else "equal", file=sys.stderr)
        return 1 if diffs else 0
    return 0


def differences(a, b, path):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                yield f"{path}.{key} ({'only after' if key not in a else 'only before'})"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield f"{path}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}"


if __name__ == "__main__":
    sys.exit(main())
