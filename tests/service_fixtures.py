"""Helpers for the service tests: real server and worker processes on 127.0.0.1, a unique Redis prefix."""

from __future__ import annotations

import os
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.stack import Api, Process, RedisServer, free_port, rss_mb  # noqa: F401 (the tests import them from here)
from held import held_queries  # noqa: F401

HELD = Path(__file__).with_name("held.py")  # runs a service process with held jobs and gates (see held.py)

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


def require_binary(name: str) -> str:
    """The path of a program the test needs: skipped where it is missing, failed in CI (`./run.sh test`
    installs it)."""
    import shutil

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian's prometheus package; `./run.sh test` installs it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return path


def without_server_packages() -> str:
    """Python source that makes every package of the `server` extra unimportable, as in a `pip install iclsel`
    without it (iclsel.cli.SERVER_MODULES; tests/test_packaging.py checks that it covers the extra):
    the start of the code a subprocess runs. It imports sys."""
    from iclsel.cli import SERVER_MODULES

    return f"""
import importlib.abc, sys


class _WithoutServer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(SERVER_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a client-only install)", name=name)
        return None


sys.meta_path.insert(0, _WithoutServer())
"""


def embedded_env(tiny_model_dir, **env: str) -> dict[str, str]:
    """The environment of an embedded server (no Redis) on the tiny model."""
    return {"ICLSEL_MODEL": str(tiny_model_dir), "REDIS_URL": "", "ICLSEL_REDIS_URL": "", **env}


@contextmanager
def embedded_api(tiny_model_dir, folder: Path, **env: str):
    """The real app in embedded mode (no Redis) on the tiny model, ready; stopped afterwards."""
    server = Api(embedded_env(tiny_model_dir, **env), folder / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class HeldApi(Api):
    """Api run through tests/held.py: selections with held_queries() wait until they are cancelled."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None):
        self.port = port or free_port()
        Process.__init__(self, "", [str(HELD), "iclsel.app.server", "--port", str(self.port), "--log-level", "warning"],
                         env, log, program=sys.executable)
        self.url = f"http://127.0.0.1:{self.port}"


def held_worker(name: str, env: dict[str, str], log: Path) -> Process:
    """`iclsel worker` run through tests/held.py (held jobs; the anchor-task gate of env's ICLSEL_TEST_GATES)."""
    return Process("", [str(HELD), "iclsel.workers.main", "--name", name, "--log-level", "warning"], env, log,
                   program=sys.executable)


@contextmanager
def anchor_gate(gates: Path, tickets: int):
    """While open, at most `tickets` anchor tasks start in the held workers; the rest wait until it closes."""
    gate = gates / "anchor-tasks"
    gate.write_text(str(tickets))
    try:
        yield gate
    finally:
        gate.unlink(missing_ok=True)


def blocked_reads(pid: int, redis_url: str) -> int:
    """How many of process pid's connections to Redis are blocked in a command (XREADGROUP ... BLOCK): 0
    once a stopped worker's blocking read has timed out, so that new stream entries stay undelivered."""
    import redis

    server = redis.Redis.from_url(redis_url, socket_timeout=5)
    port = server.connection_pool.connection_kwargs["port"]
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    local_ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                local_ports.add(int(local.rsplit(":", 1)[1], 16))
    return sum(1 for client in server.client_list()
               if int(client["addr"].rsplit(":", 1)[1]) in local_ports and "b" in client["flags"])


def process_state(pid: int) -> str:
    """The state letter of /proc/pid/stat: R running, S sleeping, T stopped, ..."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def wait_until(condition, timeout: float = 60, poll_s: float = 0.05, what: str = "condition") -> None:
    """Poll condition() until it is true; the timeout only keeps a broken service from hanging the suite."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(poll_s)


def stop_and_wait_unblocked(process: Process, redis_url: str, signum: int | None = None) -> None:
    """SIGSTOP a worker and wait until its blocking stream read (1 s) has timed out in Redis: from then on it
    takes no entry until SIGCONT."""
    import signal

    process.signal(signum or signal.SIGSTOP)
    wait_until(lambda: process_state(process.popen.pid) in ("T", "t"), what=f"process {process.popen.pid} stopped")
    wait_until(lambda: blocked_reads(process.popen.pid, redis_url) == 0, what=f"unblocked reads of {process.popen.pid}")


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


def labelled_queries(n: int, tag: str = "q") -> list[dict]:
    """n distinct labelled queries (a query set that splits into many anchor chunks)."""
    words = ("great", "dull", "moving", "awful", "brilliant", "boring")
    return [{"input": f"{tag} {i}: a {words[i % len(words)]} film", "output": "positive" if i % 2 == 0 else "negative"}
            for i in range(n)]


def wait_job(client: httpx.Client, job_id: str, until, timeout: float = 60, poll_s: float = 0.05) -> dict:
    """Poll a job until until(job) holds; the job at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(poll_s)
    raise TimeoutError(f"job {job_id} never reached the state wanted: {job}")


def same_result(a: dict, b: dict) -> None:
    """The parts of two results that must not depend on where or how often a job ran."""
    assert a["selected"] == b["selected"]
    assert a["scores"] == pytest.approx(b["scores"], rel=1e-4, abs=1e-6)
    for part in ("estimate", "exact"):
        assert (a[part] is None) == (b[part] is None)
        for name, value in (a[part] or {}).items():
            assert (value is None and b[part][name] is None) or value == pytest.approx(b[part][name], rel=1e-4, abs=1e-6)


def run_load(url: str, requests_of, seconds: float, clients: int, pids: list[int], headers=None,
             per_client: int = 0) -> dict:
    """clients concurrent clients send requests_of(client, i) -> (method, path, json) for `seconds`, and
    each at least per_client requests however long they take (so that the load is real on any machine).

    Returns figures: requests, status counts, latency percentiles (ms), the RSS (MiB) of the
    server processes before and after, and the transport errors (none expected)."""
    import asyncio

    latencies, statuses, errors = [], {}, []
    rss_before = {pid: rss_mb(pid) for pid in pids}

    async def one_client(number: int, client: httpx.AsyncClient, end: float) -> None:
        i = 0
        while time.monotonic() < end or i < per_client:
            method, path, body = requests_of(number, i)
            i += 1
            start = time.perf_counter()
            try:
                reply = await client.request(method, path, json=body)
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
                continue
            latencies.append(time.perf_counter() - start)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            if reply.status_code == 429:
                await asyncio.sleep(min(float(reply.headers.get("retry-after", "1")), 0.5))

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=headers) as client:
            end = time.monotonic() + seconds
            await asyncio.gather(*(one_client(number, client, end) for number in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def percentile(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)

    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies),
            "per_second": round(len(latencies) / elapsed, 1), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "p50_ms": percentile(50), "p95_ms": percentile(95), "p99_ms": percentile(99),
            "transport_errors": errors[:5], "transport_error_count": len(errors),
            "rss_mb_before": {str(pid): round(v) for pid, v in rss_before.items()},
            "rss_mb_after": {str(pid): round(rss_mb(pid)) for pid in pids}}


def record_figures(name: str, figures: dict) -> None:
    """Print figures; with ICLSEL_RELIABILITY_RESULTS=path also keep them there (one entry per
    scenario), e.g. bench/results/reliability.json when refreshing the report on purpose."""
    import json
    import os

    print(f"\n{name}: {json.dumps(figures)}")
    if not os.environ.get("ICLSEL_RELIABILITY_RESULTS"):
        return
    RESULTS = Path(os.environ["ICLSEL_RELIABILITY_RESULTS"])
    try:
        stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    except ValueError:
        stored = {}
    stored[name] = {**figures, "recorded": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")


def check_stored_values(client, prefix: str) -> dict:
    """Every value under prefix is JSON, a plain identifier, or a chunk of a complete safetensors cache
    entry (never pickle); every cache manifest has all its chunks and their hash matches.
    client: redis.Redis with decode_responses=False. Returns counts by kind."""
    import hashlib
    import json
    import re

    from safetensors.torch import load as load_tensors

    plain = re.compile(rb"^[\w.:@-]{0,200}$")
    counts = {"keys": 0, "json": 0, "plain": 0, "safetensors_entries": 0, "chunks": 0}

    def check(value: bytes, where: str) -> None:
        assert not value.startswith(b"\x80"), f"{where} looks pickled"
        if plain.match(value):
            counts["plain"] += 1
            return
        json.loads(value)  # raises for anything else
        counts["json"] += 1

    chunk_key = re.compile(rb"^" + re.escape(prefix.encode()) + rb"cache:[0-9a-f]{40}:[0-9a-f]+:\d+$")
    manifest_key = re.compile(rb"^" + re.escape(prefix.encode()) + rb"cache:[0-9a-f]{40}$")
    chunk_keys = set()
    for key in client.scan_iter(match=prefix.encode() + b"*", count=1000):
        counts["keys"] += 1
        kind = client.type(key)
        if kind == b"none":
            continue  # deleted since the scan listed it (a released anchor claim, an expired entry)
        if kind == b"string" and chunk_key.match(key):
            chunk_keys.add(key)
        elif kind == b"string":
            value = client.get(key)
            if value is None:
                continue  # expired meanwhile
            check(value, key.decode())
            if manifest_key.match(key):
                manifest = json.loads(value)
                names = [key + f":{manifest['token']}:{i}".encode() for i in range(manifest["chunks"])]
                data = b"".join(client.mget(names))  # TypeError if a chunk is missing: half-written
                assert len(data) == manifest["bytes"] and hashlib.sha256(data).hexdigest() == manifest["sha256"]
                load_tensors(data)
                counts["safetensors_entries"] += 1
                counts["chunks"] += len(names)
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                check(value, f"{key.decode()}[{field.decode()}]")
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                for field, value in fields.items():
                    check(value, f"{key.decode()} entry {field.decode()}")
        else:
            raise AssertionError(f"unexpected {kind} at {key}")
    return counts
