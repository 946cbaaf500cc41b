"""Turning request bodies into normalised job specs and pool records, within the configured limits."""

from __future__ import annotations

import math

from iclsel.models.data import InputError, examples_from_records
from iclsel.workers.jobs import pool_id as content_pool_id

from .errors import ApiError
from .schemas import ExampleIn, SelectionCreate

SUBSET_PARAMS = ("subsets",)  # method parameters that count sampled subsets (models/selectors.py)


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_input", f"{field}: {message}", field)


def examples(items: list[ExampleIn], field: str, limit: int, settings) -> list[dict]:
    """Validated records {"id", "input", "output"} (ids default to the position)."""
    if len(items) > limit:
        raise invalid(field, f"has {len(items)} examples; the limit is {limit}")
    for position, item in enumerate(items):
        for name in ("input", "output"):
            if len(getattr(item, name)) > settings.max_text_chars:
                raise invalid(f"{field}[{position}].{name}", f"is longer than {settings.max_text_chars} characters")
    try:
        parsed = examples_from_records([item.model_dump(exclude_none=True) for item in items], field)
    except InputError as error:
        raise invalid(error.field, error.message) from error
    return [example.to_dict() for example in parsed]


def pool(items: list[ExampleIn], settings) -> tuple[str, list[dict]]:
    records = examples(items, "pool", settings.max_pool_size, settings)
    return content_pool_id(records), records


def numbers(value, path: str):
    """(field path, number) for every number in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def selection_spec(body: SelectionCreate, stored_pool, settings) -> dict:
    """The normalised job spec; stored_pool(pool_id) -> records | None looks up pools by id."""
    if body.pool is not None:
        pool_id, records = pool(body.pool, settings)
    else:
        pool_id, records = body.pool_id, stored_pool(body.pool_id)
        if records is None:
            raise invalid("pool_id", f"no pool {body.pool_id!r}; create it with POST /v1/pools")
    queries = examples(body.queries, "queries", settings.max_queries, settings)
    if body.k > settings.max_k:
        raise invalid("k", f"must be at most {settings.max_k}")
    if body.k > len(records):
        raise invalid("k", f"is larger than the pool ({len(records)} examples)")
    for name, text in (("template", body.template), ("separator", body.separator), *(
            (f"options[{i}]", option) for i, option in enumerate(body.options or []))):
        if len(text) > settings.max_text_chars:
            raise invalid(name, f"is longer than {settings.max_text_chars} characters")
    if len(body.targets) > settings.max_queries:
        raise invalid("targets", f"at most {settings.max_queries} targets")
    for i, text in enumerate(body.targets):
        if len(text) > settings.max_text_chars:
            raise invalid(f"targets[{i}]", f"is longer than {settings.max_text_chars} characters")
    for name, value in numbers(body.params, "params"):
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(name, "must be a finite number")
    for name in SUBSET_PARAMS:
        value = body.params.get(name)
        if isinstance(value, int) and value > settings.max_subsets:
            raise invalid(f"params.{name}", f"must be at most {settings.max_subsets}")
    return {"pool_id": pool_id, "pool": records, "queries": queries, "k": body.k, "method": body.method,
            "options": body.options, "template": body.template, "separator": body.separator,
            "seed": body.seed, "params": body.params,
            **({"targets": body.targets} if body.targets else {})}  # in the job id only when given
