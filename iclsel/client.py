"""Python client of the iclsel HTTP API: `Client` (sync) and `AsyncClient` (asyncio), both on httpx.

    from iclsel.client import Client

    with Client("http://127.0.0.1:8000", api_key="key1") as iclsel:
        result = iclsel.select(pool=[{"input": "a wonderful film", "output": "positive"}, ...],
                               queries=[...], k=4, timeout=300)
        print([demo.id for demo in result.selected], result.exact.accuracy, result.prompt.text)

Results are the service's own response models (the contract, `iclsel.contract`: `SelectionResult`; and
`iclsel.app.schemas`: `Job`, `PoolOut`), validated on arrival; requests are validated by the contract's
`SelectionRequest` (also exported as `SelectionCreate`, its former name) before they are sent,
so a bad field fails here with pydantic's error. Importing this module loads neither torch nor the
web server.

Both clients
- retry a request that was answered 429 (queue full) or 503 (not ready, store unreachable), or whose
  connection was refused, up to `retries` times, waiting what the answer's `Retry-After` says (else
  `backoff_s` doubled at each try, at most `max_retry_wait_s`), never past the call's deadline.
  Every route may be repeated safely: pool and job ids are content hashes, so the same request is
  the same pool or job;
- bound each HTTP request by `timeout` seconds (httpx's connect, read and write timeouts; a long-poll
  adds its `wait_s`), and `wait`/`select` by their own `timeout`, an overall deadline: they long-poll
  `GET /v1/jobs/{id}?wait_s=...` and raise `WaitTimeout` when it passes (the job goes on).

Errors: `ApiError` for an error answer (`status`, `code`, `message`, `field` naming the bad field,
`retry_after`), `JobFailed` from `select` for a job that ended failed or cancelled (`.job`), and
`WaitTimeout` (a `TimeoutError`, `.job`). Transport errors other than a refused connection are
httpx's own (`httpx.TimeoutException`, ...).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generator, Iterable, TypeVar

import httpx

from iclsel.app.schemas import Job, PoolCreate, PoolOut
from iclsel.contract import ExampleIn, SelectionRequest, SelectionResult
from iclsel.workers.jobs import FINISHED

SelectionCreate = SelectionRequest

__all__ = ["ApiError", "AsyncClient", "Client", "Job", "JobFailed", "PoolOut", "SelectionCreate", "SelectionRequest",
           "SelectionResult", "WaitTimeout"]

RETRY_STATUSES = frozenset({429, 503})
T = TypeVar("T")


class ApiError(Exception):
    """The service answered with an error: {"error": {"code", "message", "field"}}."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field, self.retry_after = status, code, message, field, retry_after


class JobFailed(Exception):
    """The job ended failed (its `error` says why, naming the field for input errors) or cancelled."""

    def __init__(self, job: Job):
        reason = f": {job.error.message}" if job.error else ""
        super().__init__(f"job {job.id} {job.status}{reason}")
        self.job = job


class WaitTimeout(TimeoutError):
    """The job did not finish within the timeout; it goes on in the service (`job` is its last state)."""

    def __init__(self, job: Job, timeout: float):
        super().__init__(f"job {job.id} is still {job.status} after {timeout} s")
        self.job = job


# ---------- the protocol, written once: generators that yield what to do and get the outcome ----------

@dataclass(frozen=True)
class _Send:
    method: str
    path: str
    json: Any = None
    params: dict | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Step = Generator["_Send | _Sleep", "httpx.Response | httpx.TransportError | None", T]


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()["error"]
        return ApiError(response.status_code, body["code"], body["message"], body.get("field"), retry_after(response))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:500] or response.reason_phrase,
                        retry_after=retry_after(response))


def job_of(response: httpx.Response) -> Job:
    """The job in a job answer: 200/202, and 422/500 for a job that failed (which carry the record)."""
    if response.status_code in (200, 202, 422, 500):
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        if isinstance(body, dict) and "id" in body and "status" in body:
            return Job.model_validate(body)
    raise api_error(response)


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise api_error(response)
    return response


def remaining(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()


class _Protocol:
    """What both clients do, as generators (sans I/O); Client and AsyncClient run them."""

    def __init__(self, timeout: float, retries: int, backoff_s: float, max_retry_wait_s: float, poll_s: float):
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s
        self.max_retry_wait_s, self.poll_s = max_retry_wait_s, poll_s

    def request(self, send: _Send, deadline: float | None = None) -> _Step[httpx.Response]:
        """Send, retrying 429/503 answers and refused connections (see the module docstring)."""
        for attempt in range(self.retries + 1):
            outcome = yield send
            if isinstance(outcome, httpx.Response) and outcome.status_code not in RETRY_STATUSES:
                return outcome
            wait = retry_after(outcome) if isinstance(outcome, httpx.Response) else None
            wait = min(self.max_retry_wait_s, self.backoff_s * 2 ** attempt if wait is None else wait)
            if attempt == self.retries or wait > remaining(deadline):
                break
            yield _Sleep(wait)
        if isinstance(outcome, httpx.Response):
            raise api_error(outcome)
        raise outcome

    def create_pool(self, examples: Iterable[ExampleIn | dict]) -> _Step[PoolOut]:
        body = PoolCreate(examples=list(examples)).model_dump(mode="json", exclude_none=True)
        return PoolOut.model_validate(expect((yield from self.request(_Send("POST", "/v1/pools", body))), 200, 201).json())

    def grow_pool(self, pool_id: str, examples: Iterable[ExampleIn | dict]) -> _Step[PoolOut]:
        body = PoolCreate(examples=list(examples)).model_dump(mode="json", exclude_none=True)
        reply = yield from self.request(_Send("POST", f"/v1/pools/{pool_id}/examples", body))
        return PoolOut.model_validate(expect(reply, 200, 201).json())

    def get_pool(self, pool_id: str) -> _Step[PoolOut]:
        return PoolOut.model_validate(expect((yield from self.request(_Send("GET", f"/v1/pools/{pool_id}"))), 200).json())

    def delete_pool(self, pool_id: str) -> _Step[None]:
        expect((yield from self.request(_Send("DELETE", f"/v1/pools/{pool_id}"))), 204)

    def submit(self, request: SelectionRequest | None, fields: dict, deadline: float | None = None) -> _Step[Job]:
        if request is not None:
            fields = {**request.model_dump(exclude_unset=True), **fields}
        fields.setdefault("wait_s", 0)
        body = SelectionRequest.model_validate(fields).model_dump(mode="json", exclude_unset=True)
        timeout = self.timeout + body["wait_s"]
        return job_of((yield from self.request(_Send("POST", "/v1/selections", body, timeout=timeout), deadline)))

    def get_job(self, job_id: str, wait_s: float = 0, deadline: float | None = None) -> _Step[Job]:
        send = _Send("GET", f"/v1/jobs/{job_id}", params={"wait_s": wait_s}, timeout=self.timeout + wait_s)
        return job_of((yield from self.request(send, deadline)))

    def cancel(self, job_id: str) -> _Step[Job]:
        return Job.model_validate(expect((yield from self.request(_Send("DELETE", f"/v1/jobs/{job_id}"))), 200).json())

    def wait(self, job: Job | str, timeout: float | None, deadline: float | None = None) -> _Step[Job]:
        """Long-poll until the job finished; WaitTimeout once timeout s (or the deadline) passed."""
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        if isinstance(job, str):
            job = yield from self.get_job(job, 0, deadline)
        while job.status not in FINISHED:
            left = remaining(deadline)
            if left <= 0:
                raise WaitTimeout(job, timeout)
            job = yield from self.get_job(job.id, min(self.poll_s, left), deadline)
        return job

    def select(self, request: SelectionRequest | None, fields: dict, timeout: float | None) -> _Step[SelectionResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_s = min(self.poll_s, max(0.0, remaining(deadline)))
        job = yield from self.submit(request, {"wait_s": wait_s, **fields}, deadline)
        job = yield from self.wait(job, timeout, deadline)
        if job.status != "succeeded":
            raise JobFailed(job)
        return job.result


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """The iclsel API over HTTP, blocking. Use as a context manager, or call close().

    base_url: the service (`iclsel serve`); api_key: one of its ICLSEL_API_KEYS; timeout: seconds per
    HTTP request; retries: how often a 429/503 answer or a refused connection is retried; poll_s: how
    long one long-poll asks the service to hold the request (the service caps it at ICLSEL_MAX_WAIT_S).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff_s: float = 0.5, max_retry_wait_s: float = 60.0,
                 poll_s: float = 30.0, transport: httpx.BaseTransport | None = None):
        self._protocol = _Protocol(timeout, retries, backoff_s, max_retry_wait_s, poll_s)
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def _run(self, steps: _Step[T]) -> T:
        outcome = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = self._http.request(step.method, step.path, json=step.json, params=step.params,
                                                 timeout=step.timeout or httpx.USE_CLIENT_DEFAULT)
                except httpx.ConnectError as error:
                    outcome = error
        except StopIteration as done:
            return done.value

    def create_pool(self, examples: Iterable[ExampleIn | dict]) -> PoolOut:
        """Store a pool (POST /v1/pools); its id (a content hash) can replace `pool` in selections."""
        return self._run(self._protocol.create_pool(examples))

    def grow_pool(self, pool_id: str, examples: Iterable[ExampleIn | dict]) -> PoolOut:
        """Append examples to a stored pool (POST /v1/pools/{id}/examples): the grown pool, whose selections resume
        the parent pool's for the same request."""
        return self._run(self._protocol.grow_pool(pool_id, examples))

    def get_pool(self, pool_id: str) -> PoolOut:
        return self._run(self._protocol.get_pool(pool_id))

    def delete_pool(self, pool_id: str) -> None:
        return self._run(self._protocol.delete_pool(pool_id))

    def submit(self, request: SelectionRequest | None = None, **fields) -> Job:
        """Queue a selection (POST /v1/selections) and return the job at once (`wait_s` 0 unless given).
        Fields are SelectionRequest's: pool or pool_id, queries, k, method, params, targets, ..."""
        return self._run(self._protocol.submit(request, fields))

    def get_job(self, job_id: str, wait_s: float = 0) -> Job:
        """The job (GET /v1/jobs/{id}); with wait_s, the service holds the request until it finishes."""
        return self._run(self._protocol.get_job(job_id, wait_s))

    def wait(self, job: Job | str, timeout: float | None = None) -> Job:
        """Long-poll until the job finished (succeeded, failed or cancelled); WaitTimeout after timeout s."""
        return self._run(self._protocol.wait(job, timeout))

    def cancel(self, job_id: str) -> Job:
        """Cancel (DELETE /v1/jobs/{id}): a queued job at once, a running one at its next checkpoint."""
        return self._run(self._protocol.cancel(job_id))

    def select(self, request: SelectionRequest | None = None, *, timeout: float | None = None, **fields) -> SelectionResult:
        """Submit and wait: the result, or JobFailed / WaitTimeout (after timeout s in all)."""
        return self._run(self._protocol.select(request, fields, timeout))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """The same as Client, for asyncio: every method is a coroutine. `async with AsyncClient(...) as c:`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff_s: float = 0.5, max_retry_wait_s: float = 60.0,
                 poll_s: float = 30.0, transport: httpx.AsyncBaseTransport | None = None):
        self._protocol = _Protocol(timeout, retries, backoff_s, max_retry_wait_s, poll_s)
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def _run(self, steps: _Step[T]) -> T:
        outcome = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = await self._http.request(step.method, step.path, json=step.json, params=step.params,
                                                       timeout=step.timeout or httpx.USE_CLIENT_DEFAULT)
                except httpx.ConnectError as error:
                    outcome = error
        except StopIteration as done:
            return done.value

    async def create_pool(self, examples: Iterable[ExampleIn | dict]) -> PoolOut:
        return await self._run(self._protocol.create_pool(examples))

    async def grow_pool(self, pool_id: str, examples: Iterable[ExampleIn | dict]) -> PoolOut:
        return await self._run(self._protocol.grow_pool(pool_id, examples))

    async def get_pool(self, pool_id: str) -> PoolOut:
        return await self._run(self._protocol.get_pool(pool_id))

    async def delete_pool(self, pool_id: str) -> None:
        return await self._run(self._protocol.delete_pool(pool_id))

    async def submit(self, request: SelectionRequest | None = None, **fields) -> Job:
        return await self._run(self._protocol.submit(request, fields))

    async def get_job(self, job_id: str, wait_s: float = 0) -> Job:
        return await self._run(self._protocol.get_job(job_id, wait_s))

    async def wait(self, job: Job | str, timeout: float | None = None) -> Job:
        return await self._run(self._protocol.wait(job, timeout))

    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._protocol.cancel(job_id))

    async def select(self, request: SelectionRequest | None = None, *, timeout: float | None = None,
                     **fields) -> SelectionResult:
        return await self._run(self._protocol.select(request, fields, timeout))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
