"""HTTP routes: /v1 (pools, selections, jobs; API keys) and the open /health, /ready, /metrics."""

from __future__ import annotations


from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from iclsel.workers.backend import Backend, PoolParent
from iclsel.workers.jobs import FINISHED, QueueFull, job_id, public

from . import growth, limits
from .auth import require_api_key
from .deps import BackendDep, SettingsDep
from .errors import ApiError
from .schemas import ErrorResponse, Job, PoolAppend, PoolCreate, PoolOut, SelectionRequest

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 503)}
# a job that failed: 422 (the engine rejected the input) or 500 answers with the job record itself
JOB_RESPONSES = {202: {"model": Job, "description": "queued or running"},
                 422: {"model": ErrorResponse | Job, "description": "invalid input (request or job)"},
                 500: {"model": Job, "description": "the job failed inside the engine"}}
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERRORS)
ops = APIRouter()


@v1.post("/pools", status_code=201, response_model=PoolOut, response_model_exclude_none=True,
         responses={200: {"model": PoolOut, "description": "the pool was stored already"}},
         summary="Store a pool (idempotent: its id is the content hash)")
def create_pool(body: PoolCreate, jobs: BackendDep, config: SettingsDep, response: Response):
    pool_id, records = limits.pool(body.examples, config)
    if not jobs.put_pool(pool_id, records):
        response.status_code = 200
    response.headers["Location"] = f"/v1/pools/{pool_id}"
    return PoolOut(id=pool_id, size=len(records))


@v1.post("/pools/{pool_id}/examples", status_code=201, response_model=PoolOut, response_model_exclude_none=True,
         responses={200: {"model": PoolOut, "description": "the grown pool was stored already"}},
         summary="Append examples to a pool: a new pool, whose id is the content hash of the grown records")
def grow_pool(pool_id: str, body: PoolAppend, jobs: BackendDep, config: SettingsDep, response: Response):
    parent = stored_pool(jobs, pool_id)
    grown_id, records = growth.grown(parent, body.examples, config)
    link = PoolParent(pool_id, len(parent))
    if not jobs.grow_pool(grown_id, records, link):
        response.status_code = 200
    response.headers["Location"] = f"/v1/pools/{grown_id}"
    return PoolOut(id=grown_id, size=len(records), parent=(jobs.pool_parent(grown_id) or link).id)


@v1.get("/pools/{pool_id}", response_model=PoolOut, response_model_exclude_none=True)
def get_pool(pool_id: str, jobs: BackendDep):
    records = stored_pool(jobs, pool_id)
    parent = jobs.pool_parent(pool_id)
    return PoolOut(id=pool_id, size=len(records), examples=records, parent=None if parent is None else parent.id)


def stored_pool(jobs: Backend, pool_id: str) -> list[dict]:
    records = jobs.get_pool(pool_id)
    if records is None:
        raise ApiError(404, "not_found", f"no pool {pool_id!r}")
    return records


@v1.delete("/pools/{pool_id}", status_code=204)
def delete_pool(pool_id: str, jobs: BackendDep):
    if not jobs.delete_pool(pool_id):
        raise ApiError(404, "not_found", f"no pool {pool_id!r}")


@v1.post("/selections", response_model=Job, responses=JOB_RESPONSES,
         summary="Select demonstrations: 200 with the result if it is ready within wait_s, else 202 and a job")
async def create_selection(body: SelectionRequest, request: Request, jobs: BackendDep, config: SettingsDep):
    spec = await run_in_threadpool(limits.selection_spec, body, jobs.get_pool, config)
    fingerprint = await run_in_threadpool(jobs.fingerprint)
    if fingerprint is None:
        raise ApiError(503, "unavailable", "no model is loaded yet", headers={"Retry-After": "5"})
    spec = await run_in_threadpool(growth.with_warm_start, spec, jobs, fingerprint)
    pressure = request.app.state.backpressure
    try:
        record, _ = await run_in_threadpool(jobs.submit, job_id(spec, fingerprint), spec)
    except QueueFull:
        raise pressure.queue_full() from None
    return job_response(await pressure.wait_for(request, record, pressure.wait_s(body.wait_s)))


@v1.get("/jobs/{job}", response_model=Job, responses=JOB_RESPONSES)
async def get_job(job: str, request: Request, jobs: BackendDep, config: SettingsDep,
                  wait_s: float = Query(0, ge=0, description="long-poll this long")):
    record = await run_in_threadpool(jobs.get, job)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job!r} (finished jobs expire)")
    pressure = request.app.state.backpressure
    return job_response(await pressure.wait_for(request, record, pressure.wait_s(wait_s)))


@v1.delete("/jobs/{job}", response_model=Job, summary="Cancel a job (a running one stops at its next check)")
def cancel_job(job: str, jobs: BackendDep):
    record = jobs.cancel(job)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job!r}")
    return public(record)


def job_response(record: dict) -> JSONResponse:
    """200 when finished (422 for input errors, 500 for internal ones), 202 while queued or running."""
    headers = {"Location": f"/v1/jobs/{record['id']}"}
    if record["status"] not in FINISHED:
        status, headers["Retry-After"] = 202, "1"
    elif record["status"] == "failed":
        status = 422 if (record.get("error") or {}).get("type") == "input" else 500
    else:
        status = 200
    return JSONResponse(Job(**public(record)).model_dump(mode="json"), status, headers=headers)


@ops.get("/health", summary="The process is up")
def health():
    return {"status": "ok"}


@ops.get("/ready", summary="200 when a model is loaded and the queue and cache answer, else 503",
         responses={503: {"description": "not ready: {\"status\": \"not ready\", \"reason\": ...}"}})
def ready(jobs: BackendDep):
    reason = jobs.not_ready_reason()
    if reason is not None:
        return JSONResponse({"status": "not ready", "reason": reason}, 503, headers={"Retry-After": "5"})
    return {"status": "ready", "model": jobs.fingerprint(), "workers": jobs.live_workers()}


@ops.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(request: Request):
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
