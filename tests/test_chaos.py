"""A 60-second chaos run (bench/chaos.py): mixed load on Redis, the API and two workers while workers are
killed and restarted, Redis and the API are killed and restarted and a worker is frozen past the claim
timeout. Nothing accepted may be lost, completed twice, or answered with a result that differs from an
undisturbed run; every cache entry must load whole. About 2.5 minutes on 2 CPU cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_a_minute_of_chaos_loses_nothing(tmp_path):
    out = tmp_path / "chaos.json"
    run = subprocess.run([sys.executable, "-m", "bench.chaos", "--seconds", "60", "--out", str(out),
                          "--keep", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert out.exists(), run.stderr[-5000:]
    report = json.loads(out.read_text())
    jobs = report["jobs"]
    print(json.dumps({key: report[key] for key in ("requests", "latency", "jobs", "invariants")}))

    kinds = {fault["kind"] for fault in report["faults"] if fault["done_s"] is not None}
    assert kinds == {"kill -9 worker", "redis kill -9 + restart", "api kill -9 + restart", "worker SIGSTOP + SIGCONT"}
    # there was load: every client had jobs accepted and some ran (how many fit in 60 s depends on the machine)
    assert jobs["accepted"] >= report["config"]["clients"] and jobs["succeeded"] >= 1, jobs
    assert jobs["lost"] == 0, jobs["lost_jobs"]
    assert jobs["completed_twice"] == 0, jobs["completed_twice_jobs"]
    assert jobs["wrong_results"] == 0 and jobs["answers_changed_later"] == 0, jobs["wrong_result_jobs"]
    assert jobs["cancelled_unasked"] == 0
    assert jobs["cache_entries_checked"] > 0 and jobs["cache_entries_torn"] == 0
    assert jobs["stream_pending_after"] == 0 and jobs["stream_length_after"] == 0
    growth = [row["rss_growth_mb"] for row in report["processes"]  # the API's and the workers' (Redis keeps data)
              if row["rss_growth_mb"] is not None and row["name"] != "redis"]
    assert growth and max(growth) < 100, report["processes"]
    assert report["ok"] and run.returncode == 0, run.stderr[-5000:]
