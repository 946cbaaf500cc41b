"""Jobs: ids from request content, the record every backend keeps, and running one on the engine.

A job spec is the normalised selection request, the contract's SelectionRequest.spec() (iclsel/contract.py):
its fields, the pool as records beside its pool id, wait_s left out, and the fields in SPEC_WHEN_GIVEN only
when given ("warm_start" only on a grown pool whose parent pool's selection for the same request had
succeeded: app/growth.py).
Its id is the content hash of the spec without the pool records (the pool id stands for them) plus
the model fingerprint, so the same request on the same model is one job, whoever sends it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
RESUBMITTABLE = frozenset({"failed", "cancelled"})  # the same request again runs again


def content_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def pool_id(records: list[dict]) -> str:
    return content_hash([[r["id"], r["input"], r["output"]] + ([r["metadata"]] if "metadata" in r else [])
                         for r in records])


def job_id(spec: dict, fingerprint: str) -> str:
    return content_hash({"spec": {k: v for k, v in spec.items() if k != "pool"}, "model": fingerprint})


def new_record(job: str, spec: dict) -> dict:
    return {"id": job, "status": "queued", "spec": spec, "progress": {"phase": None, "done": 0, "total": 0},
            "result": None, "error": None, "created_at": time.time(), "started_at": None,
            "finished_at": None, "attempts": 0, "worker": None}


def public(record: dict) -> dict:
    """The record as clients see it (without the spec, which can be large)."""
    return {k: v for k, v in record.items() if k != "spec"}


class QueueFull(Exception):
    """The queue holds settings.max_queue jobs already."""


def cancel_checkpoint(should_cancel: Callable[[], bool]) -> Callable[[], None]:
    """checkpoint() for long loops (model batches, anchor tasks): raises the engine's Cancelled once
    should_cancel() is true, which ends the job as "cancelled"."""
    def checkpoint() -> None:
        if should_cancel():
            from iclsel.models.engine import Cancelled

            raise Cancelled("selection cancelled")
    return checkpoint


def run_job(engine, spec: dict, progress: Callable[[str, int, int], None],
            should_cancel: Callable[[], bool], reraise: tuple[type[BaseException], ...] = ()
            ) -> tuple[str, dict | None, dict | None]:
    """Run one selection; returns (status, result, error) with status succeeded|failed|cancelled.

    Exceptions of the types in ``reraise`` (e.g. the queue's connection errors) propagate: the job
    is not the problem and must run again, not fail."""
    from iclsel.contract import SelectionRequest
    from iclsel.models.data import InputError
    from iclsel.models.engine import Cancelled

    try:
        request = SelectionRequest.from_spec(spec)
        if request.dry_run:
            return "succeeded", engine.plan(request).to_dict(), None
        return "succeeded", engine.select(request, progress=progress, should_cancel=should_cancel), None
    except InputError as error:
        return "failed", None, {"type": "input", "field": error.field, "message": str(error)}
    except Cancelled:
        return "cancelled", None, None
    except reraise:
        raise
    except Exception as error:  # a bug or resource problem: the job fails, the worker lives on
        log.exception("job failed")
        return "failed", None, {"type": "internal", "field": None, "message": f"{type(error).__name__}: {error}"}


def load_worker_model(settings):
    """settings.model on settings.device, loaded once per worker."""
    from iclsel.models.loading import load_model

    return load_model(settings.model, device=settings.device, dtype=settings.dtype, home=settings.home)


def make_engine(model, settings, cache, anchor_runner=None):
    """The engine a worker runs jobs on; anchor_runner shares anchor passes with other workers
    (workers/anchors.py, Redis mode)."""
    from iclsel.models.engine import Engine

    engine = Engine(model, cache=cache, batch_size=settings.batch_size, anchor_chunk=settings.anchor_chunk,
                    anchor_runner=anchor_runner)
    try:  # auto's default check retrieves by the sentence model: load it with the model, not in the first job
        engine.sentences
    except Exception as error:  # a request that needs it says why; the others run
        log.warning("sentence model not loaded: %s", error)
    return engine
