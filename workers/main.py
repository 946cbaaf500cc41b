"""`iclsel worker`: a worker process for the Redis mode (loads the model once, runs jobs until stopped)."""

from __future__ import annotations

import argparse
import signal

from .anchors import AnchorSharing
from .jobs import load_worker_model, make_engine
from .process import add_common_options, start
from .redis_cache import RedisTensorCache
from .redis_queue import RedisQueue, RedisWorker, worker_name


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclsel worker", description="Run selection jobs from Redis.")
    parser.add_argument("--name", help="consumer name (default: host-pid-random)")
    add_common_options(parser)
    return parser


def worker_main(argv: list[str]) -> None:
    parser = worker_parser()
    args = parser.parse_args(argv)
    settings = start(args)
    if not settings.redis_url:
        parser.error("a worker needs Redis: set REDIS_URL or pass --redis-url")

    queue, cache, name = RedisQueue(settings), RedisTensorCache.from_settings(settings), args.name or worker_name()
    model = load_worker_model(settings)
    sharing = AnchorSharing(queue, cache, name, model)  # computes anchor tasks on the engine's model
    engine = make_engine(model, settings, cache, anchor_runner=sharing.run)
    worker = RedisWorker(queue, engine, name, sharing)
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the current job, then leave
        signal.signal(signum, lambda *_: worker.stop_event.set())
    worker.run()


if __name__ == "__main__":
    import sys

    worker_main(sys.argv[1:])
