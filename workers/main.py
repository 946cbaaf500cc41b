"""`iclsel worker`: a worker process for the Redis mode (loads the model once, runs jobs until stopped)."""

from __future__ import annotations

import argparse
import logging
import signal

from iclsel.settings import get_settings

from .jobs import load_engine
from .redis_cache import RedisTensorCache
from .redis_queue import RedisQueue, RedisWorker


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclsel worker", description="Run selection jobs from Redis.")
    parser.add_argument("--redis-url", help="default: $REDIS_URL")
    parser.add_argument("--model", help="default: $ICLSEL_MODEL")
    parser.add_argument("--name", help="consumer name (default: host-pid-random)")
    parser.add_argument("--log-level", default="info")
    return parser


def worker_main(argv: list[str]) -> None:
    parser = worker_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = {key: value for key, value in (("redis_url", args.redis_url), ("model", args.model)) if value}
    settings = get_settings().model_copy(update=overrides)
    if not settings.redis_url:
        parser.error("a worker needs Redis: set REDIS_URL or pass --redis-url")

    engine = load_engine(settings, RedisTensorCache.from_settings(settings))
    worker = RedisWorker(RedisQueue(settings), engine, name=args.name)
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the current job, then leave
        signal.signal(signum, lambda *_: worker.stop_event.set())
    worker.run()


if __name__ == "__main__":
    import sys

    worker_main(sys.argv[1:])
