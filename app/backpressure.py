"""Backpressure, in one object (TEI's pattern: one admission point with a bounded number of permits, and 429 with
Retry-After when they are taken): the request body's size (413, BodyLimit), the queue's capacity (429: the
backend's own atomic check raises QueueFull), and the clients waiting on jobs (``wait_s``): at most
settings.max_waiting at once, each further one answered 429 with Retry-After (a retry is safe: the same request
is the same job).

Waiting clients share one watch per job (JobWatch): the job's record is read once per tick (5 ms, growing 1.5x
to 100 ms: what one client polled before) whatever the number of clients waiting on it, so 200 clients on one
job cost the store about ten reads a second, not two thousand.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from iclsel.workers.jobs import FINISHED

from .errors import ApiError, error_response

RETRY_AFTER_S = 5
FIRST_POLL_S, LAST_POLL_S, POLL_GROWTH = 0.005, 0.1, 1.5
DISCONNECT_CHECK_S = 0.1  # how often a waiting client checks that it is still connected


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (declared, or counted while a chunked body arrives)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, "too_large", f"request body is larger than {self.max_bytes} bytes")
            return await response(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # chunked bodies without a length
                    raise HTTPException(413, f"request body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)


@dataclass
class _Watch:
    record: dict
    waiters: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    task: asyncio.Task | None = None


class JobWatch:
    """One poll loop per job that clients wait on, shared by all of them."""

    def __init__(self, backend):
        self.backend = backend
        self._watches: dict[str, _Watch] = {}

    async def wait(self, record: dict, deadline: float, disconnected) -> dict:
        """The record once the job finished, the deadline (time.monotonic()) passed or ``await disconnected()``
        says the client went away (the job itself goes on: it is shared by everyone who sends the same request)."""
        watch = self._watches.get(record["id"])
        if watch is None:
            watch = self._watches[record["id"]] = _Watch(record)
            watch.task = asyncio.get_running_loop().create_task(self._poll(record["id"], watch))
        watch.waiters += 1
        done = asyncio.ensure_future(watch.done.wait())  # one task a client, waited on in slices, cancelled at the end
        try:
            while not watch.done.is_set() and (remaining := deadline - time.monotonic()) > 0:
                await asyncio.wait({done}, timeout=min(remaining, DISCONNECT_CHECK_S))  # a timeout cancels nothing
                if await disconnected():
                    break
            if watch.error is not None:
                raise watch.error
            return watch.record
        finally:
            done.cancel()
            watch.waiters -= 1
            if watch.waiters == 0:
                watch.task.cancel()
                if self._watches.get(record["id"]) is watch:
                    del self._watches[record["id"]]

    async def _poll(self, job_id: str, watch: _Watch) -> None:
        delay = FIRST_POLL_S
        try:
            while watch.record["status"] not in FINISHED:
                await asyncio.sleep(delay)
                delay = min(delay * POLL_GROWTH, LAST_POLL_S)
                watch.record = await run_in_threadpool(self.backend.get, job_id) or watch.record
        except Exception as error:  # noqa: BLE001 (the store's error reaches every waiting client)
            watch.error = error
            self._watches.pop(job_id, None)  # the next client starts afresh
        watch.done.set()


class Backpressure:
    """What pushes back on clients (see the module docstring); app.state.backpressure."""

    def __init__(self, settings, backend, waiting_gauge=None):
        self.settings = settings
        self.watch = JobWatch(backend)
        self.waiting = 0  # clients waiting on a job now
        self._gauge = waiting_gauge

    def middleware(self, app) -> None:
        app.add_middleware(BodyLimit, max_bytes=self.settings.max_body_bytes)

    def queue_full(self) -> ApiError:
        return ApiError(429, "queue_full", f"{self.settings.max_queue} jobs are queued; try again later",
                        headers={"Retry-After": str(RETRY_AFTER_S)})

    def wait_s(self, asked: float | None) -> float:
        """How long a request waits: what it asked (default: the server's), at most max_wait_s."""
        return min(self.settings.default_wait_s if asked is None else asked, self.settings.max_wait_s)

    @contextmanager
    def _permit(self):
        if self.waiting >= self.settings.max_waiting:
            raise ApiError(429, "too_many_waiting", f"{self.settings.max_waiting} clients are waiting on jobs; "
                                                    "try again later (or with wait_s=0 and poll)",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        self.waiting += 1
        try:
            if self._gauge is None:
                yield
            else:
                with self._gauge.track_inprogress():
                    yield
        finally:
            self.waiting -= 1

    async def wait_for(self, request, record: dict, wait_s: float) -> dict:
        """The job's record once it finished, wait_s passed or the client went away; 429 when max_waiting
        clients wait already."""
        if record["status"] in FINISHED or wait_s <= 0:
            return record
        with self._permit():
            return await self.watch.wait(record, time.monotonic() + wait_s, request.is_disconnected)
