"""Service latency benchmark: selections over HTTP with the anchor gradients already cached.

    python bench/service_bench.py                 # tiny random model (built on the spot), embedded server
    python bench/service_bench.py --model default # SmolLM2-135M-Instruct
    python bench/service_bench.py --url http://host:8000 --api-key KEY   # an already running service

Measures, for a pool of --pool demos (IMDB short reviews when bench/data has them, else synthetic)
and --queries queries (--params, default {"rounds": 0}: the search ranks by the estimate around its
anchor and confirms nothing; auto's gate and checks run as they ship):
    cold        the first selection (every model run computed and cached)
    new_queries --new-queries selections on the same pool, each with another --queries queries: the
                pool's embeddings come from the cache, everything else runs
    cached      distinct selections (new jobs, a params tag the engine ignores) on the same content:
                every model run is in the cache (the anchors, the search's exact runs, auto's gate,
                checks and exact figures, the embeddings): median and p95
    repeat      the identical request again (same job: the stored result)
    concurrent  --clients clients at once, each sending --per-client distinct cached selections, and
                the same number sending one identical request: p50/p95, errors
Targets (the issue): cached median < 0.5 s; concurrent p95 < 2 s with no errors.
Writes bench/results/service.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"positive": ["wonderful", "moving", "brilliant", "funny", "charming", "great"],
         "negative": ["boring", "awful", "dull", "terrible", "slow", "weak"]}


def examples(count: int, offset: int, dataset: str | None) -> list[dict]:
    if dataset:
        from bench.data import ensure

        lines = ensure(dataset).read_text().splitlines()[offset:offset + count]
        return [{k: v for k, v in json.loads(line).items() if k in ("input", "output")} for line in lines]
    records = []
    for i in range(offset, offset + count):
        label = ("positive", "negative")[i % 2]
        words = WORDS[label]
        records.append({"input": f"review {i}: a {words[i % 6]} and {words[(i // 6) % 6]} film", "output": label})
    return records


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(latencies: list[float]) -> dict:
    return {"n": len(latencies), "median_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95),
            "max_s": max(latencies)}


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ICLSEL_MODEL": model, "REDIS_URL": "", "ICLSEL_REDIS_URL": "",
           "ICLSEL_MAX_QUEUE": "10000"}
    server = subprocess.Popen([sys.executable, "-m", "iclsel.app.server", "--port", str(port), "--log-level", "warning"],
                              env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit("server exited")
        time.sleep(0.5)
    raise SystemExit("server not ready in 600 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (default), 'default' or any ICLSEL_MODEL value")
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--api-key")
    parser.add_argument("--dataset", choices=("imdb", "synthetic"), default=None,
                        help="default: imdb when bench/data/imdb.jsonl exists, else synthetic")
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--method", default="gradient")
    parser.add_argument("--params", type=json.loads, default={"rounds": 0}, help="method parameters (JSON)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--new-queries", type=int, default=3, help="selections on the same pool with new queries")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/service.json")
    args = parser.parse_args(argv)

    dataset = args.dataset or ("imdb" if (ROOT / "bench/data/imdb.jsonl").exists() else "synthetic")
    server = None
    if args.url:
        url = args.url
    else:
        model = args.model
        if model == "tiny":
            from iclsel.models.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
        server, url = start_server(model)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    source = None if dataset == "synthetic" else dataset
    body = {"pool": examples(args.pool, 0, source), "queries": examples(args.queries, args.pool, source),
            "k": args.k, "method": args.method, "wait_s": 600}

    def select(client: httpx.Client, queries: list[dict] | None = None, **params) -> tuple[float, dict]:
        started = time.perf_counter()
        reply = client.post("/v1/selections", json={**body, "queries": queries or body["queries"],
                                                    "params": {**args.params, **params}})
        while reply.status_code == 202:  # longer than the server's max wait: poll the job
            reply = client.get(reply.headers["location"], params={"wait_s": 60})
        elapsed = time.perf_counter() - started
        if reply.status_code != 200:
            raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
        return elapsed, reply.json()

    try:
        with httpx.Client(base_url=url, headers=headers, timeout=900) as client:
            cold, job = select(client)
            result = job["result"]
            new_queries = []
            for batch in range(1, args.new_queries + 1):  # the next slices of the data: queries no call has seen
                seconds, fresh = select(client, examples(args.queries, args.pool + batch * args.queries, source))
                new_queries.append({"seconds": seconds, "passes": fresh["result"]["passes"],
                                    "timings": fresh["result"]["timings"],
                                    "strategy": fresh["result"]["strategy"]["chosen"]})
            cached, tag = [], 0
            for _ in range(args.repeats):  # distinct jobs (a tag the engine ignores), anchors all cached
                tag += 1
                seconds, job = select(client, bench_tag=tag)
                ran = job["result"]["passes"]
                assert ran["forward_equivalent"] == ran["sentence_texts"] == 0, ran  # all of it from the cache
                cached.append(seconds)
            repeat = [select(client)[0] for _ in range(args.repeats)]

            def client_run(distinct: bool) -> tuple[list[float], int]:
                nonlocal tag
                latencies, errors = [], 0
                with httpx.Client(base_url=url, headers=headers, timeout=900) as own:
                    for _ in range(args.per_client):
                        tag += 1
                        try:
                            params = {"bench_tag": tag} if distinct else {}
                            latencies.append(select(own, **params)[0])
                        except Exception:
                            errors += 1
                return latencies, errors

            concurrent = {}
            for name, distinct in (("distinct_jobs", True), ("identical_request", False)):
                with ThreadPoolExecutor(args.clients) as pool:
                    runs = list(pool.map(client_run, [distinct] * args.clients))
                latencies = [seconds for run in runs for seconds in run[0]]
                concurrent[name] = {**summary(latencies), "errors": sum(run[1] for run in runs)}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    report = {
        "setup": {"model": result["model"], "dataset": dataset, "pool": args.pool, "queries": args.queries, "k": args.k,
                  "method": args.method, "params": args.params, "clients": args.clients, "per_client": args.per_client,
                  "mode": "url" if args.url else "embedded", "machine": platform.platform(), "cpus": os.cpu_count()},
        "cold": {"seconds": cold, "passes": result["passes"], "cache": result["cache"], "timings": result["timings"],
                 "strategy": result["strategy"]["chosen"]},
        "new_queries": {**(summary([run["seconds"] for run in new_queries]) if new_queries else {}), "runs": new_queries},
        "cached": summary(cached),
        "repeat_identical": summary(repeat),
        "concurrent": concurrent,
        "targets": {"cached_median_below_0_5_s": summary(cached)["median_s"] < 0.5,
                    "concurrent_p95_below_2_s_no_errors": all(
                        c["p95_s"] < 2 and c["errors"] == 0 for c in concurrent.values())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("cold", "new_queries", "cached", "repeat_identical", "concurrent", "targets")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
