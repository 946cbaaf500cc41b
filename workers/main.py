"""`iclsel worker`: a worker process for the Redis mode (loads the model once, runs jobs until stopped)."""

from __future__ import annotations

import argparse
import signal

from .anchors import AnchorSharing
from .jobs import load_engine
from .process import add_common_options, start
from .redis_cache import RedisTensorCache
from .redis_queue import RedisQueue, RedisWorker


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

    queue, cache = RedisQueue(settings), RedisTensorCache.from_settings(settings)
    worker = RedisWorker(queue, None, name=args.name)
    worker.sharing = AnchorSharing(queue, cache, worker.name)
    worker.engine = load_engine(settings, cache, anchor_runner=worker.sharing.run)
    worker.sharing.attach(worker.engine)
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the current job, then leave
        signal.signal(signum, lambda *_: worker.stop_event.set())
    worker.run()


if __name__ == "__main__":
    import sys

    worker_main(sys.argv[1:])
