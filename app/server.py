"""The FastAPI application and `iclsel serve`."""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager

from fastapi import FastAPI

from iclsel.settings import Settings, get_settings
from iclsel.workers.process import add_common_options, start

from . import errors
from .metrics import ServiceMetrics
from .backpressure import Backpressure
from .middleware import RequestMetrics
from .routes import ops, v1

DESCRIPTION = """Choose the k in-context demonstrations that make a language model do best on your
queries. POST /v1/selections returns the result when it is ready within `wait_s`, else 202 and a job
to poll at /v1/jobs/{id}. The same request on the same model is the same job."""


def make_backend(settings: Settings):
    """Redis Streams and separate workers with REDIS_URL, else one process with a worker thread."""
    if settings.redis_url:
        from iclsel.workers.redis_queue import RedisQueue

        return RedisQueue(settings)
    from iclsel.workers.local import LocalBackend

    return LocalBackend(settings)


def create_app(settings: Settings | None = None, backend=None) -> FastAPI:
    settings = settings or get_settings()
    backend = backend if backend is not None else make_backend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        yield
        backend.stop()

    app = FastAPI(title="iclsel", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.backend = settings, backend
    app.state.metrics = ServiceMetrics(backend)
    app.state.backpressure = Backpressure(settings, backend, app.state.metrics.waiting)
    app.include_router(v1)
    app.include_router(ops)
    errors.install(app)
    app.state.backpressure.middleware(app)  # body size
    app.add_middleware(RequestMetrics, histogram=app.state.metrics.requests)  # outermost: sees 413s too
    return app


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclsel serve", description="Serve the HTTP API (docs at /docs).")
    parser.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to listen on all interfaces")
    parser.add_argument("--port", type=int, default=8000)
    add_common_options(parser)  # --redis-url (without it jobs run in this process), --model, --log-level
    return parser


def serve_main(argv: list[str]) -> None:
    args = serve_parser().parse_args(argv)
    app = create_app(start(args))

    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=True)


if __name__ == "__main__":
    import sys

    serve_main(sys.argv[1:])
