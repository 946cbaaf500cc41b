"""The Grafana dashboard (docker/grafana/dashboards/iclsel.json) against a real Prometheus scraping a real
iclsel service: after one selection, every PromQL expression of every panel returns data.

Prometheus is Debian's `prometheus` package (`./run.sh test` installs it when it is missing), started here on
a free port with docker/prometheus.yml, its target pointed at the test server and a 1 s scrape interval.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import httpx
import pytest
import yaml

from iclsel.client import Client
from service_fixtures import Api, Process, embedded_env, free_port, require_binary, selection

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docker/grafana/dashboards/iclsel.json"
RATE_INTERVAL = "1m"  # what Grafana puts for $__rate_interval; the test's scrapes are 1 s apart


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, with Grafana's $__rate_interval filled in."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL))
            for panel in panels for target in panel["targets"]]


class Prometheus(Process):
    def __init__(self, target: str, folder: Path):
        binary = require_binary("prometheus")
        config = yaml.safe_load((ROOT / "docker/prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.job = job["job_name"]
        self.url = f"http://127.0.0.1:{free_port()}"
        super().__init__("", [f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                              f"--web.listen-address={self.url.removeprefix('http://')}"], {}, folder / "prometheus.log",
                         program=binary)

    def query(self, expr: str) -> list[dict]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert reply["status"] == "success", (expr, reply)
        return reply["data"]["result"]

    def wait_until(self, expr: str, holds, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(expr)
                if result and holds(float(result[0]["value"][1])):
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if self.popen.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.popen.returncode}:\n{self.tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prometheus: {expr} did not hold within {timeout} s")


@pytest.fixture(scope="module")
def scraped(tiny_model_dir, tmp_path_factory):
    """A Prometheus that scraped the service before and after one selection."""
    folder = tmp_path_factory.mktemp("dashboard")
    api = Api(embedded_env(tiny_model_dir), folder / "server.log")
    prometheus = None
    try:
        prometheus = Prometheus(api.url.removeprefix("http://"), folder)  # starts while the model loads
        api.wait_ready()
        prometheus.wait_until('sum(iclsel_workers)', lambda workers: workers == 1)  # scraped before the selection
        with Client(api.url) as client:
            client.select(**selection(), timeout=60)
        prometheus.wait_until('sum(iclsel_jobs_total{status="succeeded"})', lambda jobs: jobs >= 1)
        yield prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        api.stop()


def test_the_dashboard_covers_what_users_watch():
    titles = " | ".join(title.lower() for title, _ in dashboard_queries())
    for topic in ("requests per second by route", "latency by route", "jobs", "queue depth", "workers",
                  "cache hit ratio", "model passes", "phase durations", "estimate error"):
        assert topic in titles, topic


@pytest.mark.parametrize("title, expr", dashboard_queries(), ids=[f"{i}" for i, _ in enumerate(dashboard_queries())])
def test_every_dashboard_query_returns_data(scraped, title, expr):
    """Polled until it holds: a rate needs the scrapes after the selection, which come when they come."""
    deadline = time.monotonic() + 120  # only keeps a broken query from hanging the suite
    while True:
        result = scraped.query(expr)
        values = [float(series["value"][1]) for series in result]
        if any(math.isfinite(value) for value in values):
            return
        assert time.monotonic() < deadline, f"{title}: {expr} returned {'only ' + str(values) if result else 'nothing'}"
        time.sleep(0.2)
