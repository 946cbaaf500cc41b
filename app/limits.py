"""Turning request bodies into normalised job specs and pool records, within the configured limits."""

from __future__ import annotations

import math

from iclsel.models.constraints import Constraints, candidate_indices, check_label_counts
from iclsel.models.data import InputError, examples_from_records
from iclsel.workers.jobs import pool_id as content_pool_id

from iclsel.contract import ExampleIn, Params, SelectionRequest

from .errors import ApiError


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


def check_constraints(records: list[dict], body: SelectionRequest, constraints: Constraints) -> None:
    """What the pool's records alone can tell: exclude's ids exist, exclude and where leave k candidates, and
    those hold min_per_label of each label (the engine checks again, and max_prompt_tokens, with the tokenizer)."""
    try:
        pool = examples_from_records(records, "pool")
        keep = candidate_indices(pool, constraints, body.k)
        options = body.options or sorted({example.output for example in pool})
        labels = [options.index(pool[i].output) if pool[i].output in options else -1 for i in keep]
        check_label_counts(labels, len(options), body.k, constraints.min_per_label, options)
    except InputError as error:
        raise invalid(error.field, error.message) from error


def selection_spec(body: SelectionRequest, stored_pool, settings) -> dict:
    """The normalised job spec (the contract's SelectionRequest.spec()); stored_pool(pool_id) -> records | None
    looks up pools by id."""
    if body.warm_start is not None:
        raise invalid("warm_start", "is set by the service, not by a request")
    if body.pool is not None:
        pool_id, records = pool(body.pool, settings)
    else:
        pool_id, records = body.pool_id, stored_pool(body.pool_id)
        if records is None:
            raise invalid("pool_id", f"no pool {body.pool_id!r}; create it with POST /v1/pools")
    queries = examples(body.queries, "queries", settings.max_queries, settings)
    check_sizes(body, records, settings)
    exclude = [str(i) for i in body.exclude]
    check_constraints(records, body, Constraints(body.max_prompt_tokens, body.min_per_label, exclude, body.where))
    return SelectionRequest.from_spec({**body.model_dump(), "pool_id": pool_id, "pool": records, "queries": queries,
                                       "exclude": exclude}).spec()


def check_sizes(body: SelectionRequest, records: list[dict], settings) -> None:
    """The configured limits on k, texts, targets, numbers in params and exclude (422 naming the field)."""
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
    for name, value in Params.subset_counts(body.params).items():
        if value > settings.max_subsets:
            raise invalid(f"params.{name}", f"must be at most {settings.max_subsets}")
    if len(body.exclude) > settings.max_pool_size:
        raise invalid("exclude", f"at most {settings.max_pool_size} ids")
