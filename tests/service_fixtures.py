"""Helpers for the service tests: real server and worker processes on 127.0.0.1, a unique Redis prefix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

REDIS_URL = os.environ.get("ICLSEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

POOL = [
    {"id": "p0", "input": "a wonderful, moving film with great acting", "output": "positive"},
    {"id": "p1", "input": "boring plot and terrible dialogue", "output": "negative"},
    {"id": "p2", "input": "I loved every minute, brilliant and funny", "output": "positive"},
    {"id": "p3", "input": "awful, dull, the worst movie this year", "output": "negative"},
    {"id": "p4", "input": "a charming story, well told", "output": "positive"},
    {"id": "p5", "input": "a waste of time", "output": "negative"},
]
QUERIES = [
    {"input": "great acting and a moving story", "output": "positive"},
    {"input": "dull and terrible", "output": "negative"},
    {"input": "brilliant, I loved it", "output": "positive"},
]


def selection(**overrides) -> dict:
    return {"pool": POOL, "queries": QUERIES, "k": 2, "method": "gradient", **overrides}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """A service process (`python -m iclsel.app.server` or `iclsel.workers.main`) with its log in a file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.handle = log.open("wb")
        self.popen = subprocess.Popen([sys.executable, "-m", module, *args], env={**os.environ, **env},
                                      stdout=self.handle, stderr=subprocess.STDOUT)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.handle.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Api(Process):
    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        super().__init__("iclsel.app.server", ["--port", str(self.port), "--log-level", "warning"], env, log)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def wait_ready(self, timeout: float = 120, workers: int | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.tail()}")
            try:
                reply = httpx.get(self.url + "/ready", timeout=5)
                if reply.status_code == 200 and (workers is None or reply.json()["workers"] == workers):
                    return reply.json()
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.tail()}")


def metric(client: httpx.Client, name: str, **labels) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def redis_prefix():
    """A unique key prefix; every key under it is deleted afterwards."""
    import redis

    prefix = f"iclsel-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
