"""Growing pools: appending examples to a stored pool, and resuming a selection on the grown pool from the
parent pool's selection for the same request (models/warm.py says when the cached anchor is reused)."""

from __future__ import annotations

from iclsel.models.warm import WarmStart
from iclsel.workers.backend import Backend
from iclsel.workers.jobs import job_id
from iclsel.workers.jobs import pool_id as content_pool_id

from . import limits
from .schemas import ExampleIn

# how many generations of parents a selection looks through to find its parent's job id (each costs two
# reads); a longer lineage starts its selection cold
MAX_LINEAGE = 16


def grown(parent: list[dict], items: list[ExampleIn], settings) -> tuple[str, list[dict]]:
    """(id, records) of ``parent`` with ``items`` appended: the id POST /v1/pools gives the same records.
    A new example's id defaults to its position in the grown pool; 422 naming ``examples[i]...`` for a bad
    example or an id the pool has, ``examples`` past the pool-size limit."""
    total = len(parent) + len(items)
    if total > settings.max_pool_size:
        raise limits.invalid("examples", f"the grown pool would have {total} examples; the limit is "
                                         f"{settings.max_pool_size}")
    placed = [item if item.id is not None else item.model_copy(update={"id": len(parent) + i})
              for i, item in enumerate(items)]
    added = limits.examples(placed, "examples", settings.max_pool_size, settings)
    known = {record["id"] for record in parent}
    for position, record in enumerate(added):
        if record["id"] in known:
            raise limits.invalid(f"examples[{position}].id", f"duplicate id {record['id']!r}: the pool has it already")
    records = parent + added
    return content_pool_id(records), records


def with_warm_start(spec: dict, jobs: Backend, fingerprint: str, depth: int = 0) -> dict:
    """``spec`` with "warm_start" when its pool was grown from a pool whose selection for the same request
    (the job id the same spec on the parent pool gets) succeeded; else ``spec`` as it is. The spec, and so
    the job id, stays a function of the request and the stored pools and jobs."""
    if spec["method"] != "gradient" or depth >= MAX_LINEAGE:
        return spec
    parent = jobs.pool_parent(spec["pool_id"])
    if parent is None:
        return spec
    request = {key: value for key, value in spec.items() if key not in ("pool", "pool_id", "warm_start")}
    parent_spec = with_warm_start({**request, "pool_id": parent.id}, jobs, fingerprint, depth + 1)
    record = jobs.get(job_id(parent_spec, fingerprint))
    if record is None or record["status"] != "succeeded":
        return spec
    warm = WarmStart.of(record["id"], parent.size, record["result"])
    return spec if warm is None else {**spec, "warm_start": warm.to_dict()}
