"""The service as real processes on 127.0.0.1: a private redis-server, the API, workers, each with its log.

Used by the service tests (tests/service_fixtures.py) and by bench/chaos.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Process:
    """A service process (`python -m iclsel.app.server` or `iclsel.workers.main`, or with ``program`` that
    program) with its log in a file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log: Path, program: str | None = None):
        self.log = log
        self.handle = log.open("wb")
        command = [program, *args] if program else [sys.executable, "-m", module, *args]
        self.popen = subprocess.Popen(command, env={**os.environ, **env}, stdout=self.handle, stderr=subprocess.STDOUT)

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
    """`iclsel serve` on a free port (or the port given: a restarted API keeps its address)."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None):
        self.port = port or free_port()
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


class RedisServer:
    """A private redis-server on a free port with an append-only file in `folder`, fsynced on every
    write (so that stopping it, even with SIGKILL, loses nothing it acknowledged)."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen = None
        self.start()

    def start(self) -> None:
        import redis

        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:  # not listening yet, or still replaying the append-only file
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.popen.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: a crash; what it acknowledged is in the append-only file already."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
