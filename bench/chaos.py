"""Sustained chaos: the Redis-mode service under mixed load and repeated, overlapping faults.

    python -m bench.chaos --seconds 600 [--workers 2] [--clients 4] [--seed 0]
                          [--out bench/results/chaos.json] [--docs docs/reliability.md]

Starts its own redis-server (free port, append-only file fsynced on every write), the API
(`iclsel serve`) and N workers (`iclsel worker`) on the tiny model (built on the spot; `--model` for a
Hugging Face folder), all as real processes. Concurrent clients send repeated and distinct selections,
pool uploads, selections by pool id and pool deletes, cancels of running jobs and long polls, while a
seeded schedule injects faults:
    kill -9 of a random worker every 30-90 s, restarted at once under the same name;
    one Redis kill -9 and restart (same port, same append-only file);
    one API kill -9 and restart (same port);
    one SIGSTOP of a worker (the one running a job, when one is) for 2-3 x ICLSEL_CLAIM_IDLE_S, then SIGCONT.
Runs shorter than 600 s compress the schedule by seconds / 600 (never below a quarter: a 60-s run
kills a worker every 7.5-22.5 s), so every kind of fault happens in every run.

Afterwards it waits for every job it was answered 200 or 202 for, then checks each against Redis:
its final status (lost = never finished and not cancelled), how many results were written for it
(the job hash's "finishes" counter: completed_twice), its result against an undisturbed run of the same
spec on an in-process engine (wrong_results), and every anchor-cache entry (it must load whole and
match its hash). It writes the figures as JSON (--out) and, with --docs, a table in that file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.stack import Api, Process, RedisServer, rss_mb

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "chaos:"
CLAIM_IDLE_S, HEARTBEAT_S = 3.0, 0.5
DOCS_START, DOCS_END = "<!-- chaos:start -->", "<!-- chaos:end -->"

POSITIVE = ["a wonderful, moving film", "brilliant and funny", "I loved every minute", "a charming story, well told",
            "great acting throughout", "moving and beautifully shot", "a joy from start to finish", "clever, warm and sharp"]
NEGATIVE = ["boring plot and terrible dialogue", "awful, dull, the worst movie", "a waste of time", "flat and far too long",
            "the acting was wooden", "a mess from start to finish", "tedious and predictable", "I walked out halfway"]
BANK = [{"input": text, "output": "positive"} for text in POSITIVE] + [{"input": text, "output": "negative"} for text in NEGATIVE]
FINISHED = ("succeeded", "failed", "cancelled")


# ---------------------------------------------------------------- requests

def records(rng: random.Random, count: int, tag: str) -> list[dict]:
    """count labelled examples from the bank, made distinct by tag."""
    return [{"id": f"{tag}-{i}", "input": f"{example['input']} ({tag})", "output": example["output"]}
            for i, example in enumerate(rng.sample(BANK, count))]


def queries(count: int, tag: str) -> list[dict]:
    words = ("great", "dull", "moving", "awful", "brilliant", "boring")
    return [{"input": f"{tag} {i}: a {words[i % len(words)]} film", "output": "positive" if i % 2 == 0 else "negative"}
            for i in range(count)]


HOT_METHODS = ("gradient", "gradient", "gradre", "exact", "bm25", "random", "gradient", "topk-embed")


def hot_selection(i: int) -> dict:
    """One of eight requests many clients send again and again (the same job each time)."""
    pool = [{"id": f"hot-{j}", **example} for j, example in enumerate(BANK[::2])]
    return {"pool": pool, "queries": queries(4, "hot"), "k": 2 + i % 2, "method": HOT_METHODS[i], "seed": i}


def distinct_selection(rng: random.Random, tag: str, seed: int) -> dict:
    method = rng.choices(("gradient", "gradre", "random", "bm25"), weights=(6, 2, 1, 1))[0]
    return {"pool": records(rng, rng.randint(6, 10), tag), "queries": queries(rng.randint(3, 6), tag),
            "k": rng.randint(2, 3), "method": method, "seed": seed}


def long_selection(rng: random.Random, tag: str) -> dict:
    """A job that runs for seconds (re-anchoring at every move over 40 queries in 2-query chunks): to cancel."""
    return {"pool": records(rng, 8, tag), "queries": queries(40, tag), "k": 2, "method": "gradient",
            "params": {"evaluator": "exact"}}


# ---------------------------------------------------------------- what the run records

@dataclass
class Reply:
    kind: str
    at_s: float
    seconds: float
    status: int | None  # None: transport error (no answer)
    error: str | None = None


@dataclass
class TrackedJob:
    id: str
    kind: str
    accepted: int = 0  # answers 200/202
    cancel_asked: bool = False
    first_result: dict | None = None  # the result in the first 200 answer with one


@dataclass
class Life:
    """One process from its start to its end (a restarted worker is a new life under the same name)."""
    name: str
    pid: int
    started_s: float
    ready: bool = False
    ended_s: float | None = None
    ended_by: str | None = None
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None
    rss_peak_mb: float = 0.0

    def sample(self) -> None:
        value = rss_mb(self.pid)
        if value <= 0:
            return
        if self.ready and self.rss_start_mb is None:
            self.rss_start_mb = value
        self.rss_end_mb, self.rss_peak_mb = value, max(self.rss_peak_mb, value)


@dataclass
class Fault:
    kind: str
    at_s: float  # when it was due
    target: str = ""
    detail: dict = field(default_factory=dict)
    done_s: float | None = None  # when it had been injected
    recovered_s: float | None = None  # when the target answered again


# ---------------------------------------------------------------- the service

class Stack:
    """Redis, the API and the workers, restartable, with every process life recorded."""

    def __init__(self, folder: Path, model_dir: Path, workers: int):
        self.folder, self.lock, self.t0 = folder, threading.RLock(), time.monotonic()
        self.lives: list[Life] = []
        self.redis = RedisServer(folder)
        self.redis_life = self._life("redis", self.redis.popen.pid, ready=True)
        self.env = {"ICLSEL_MODEL": str(model_dir), "REDIS_URL": self.redis.url, "ICLSEL_REDIS_PREFIX": PREFIX,
                    "ICLSEL_HOME": str(folder / "home"), "ICLSEL_API_KEYS": "", "ICLSEL_DEVICE": "cpu",
                    "ICLSEL_HEARTBEAT_S": str(HEARTBEAT_S), "ICLSEL_CLAIM_IDLE_S": str(CLAIM_IDLE_S),
                    "ICLSEL_REDIS_TIMEOUT_S": "2", "ICLSEL_ANCHOR_CHUNK": "2", "ICLSEL_ANCHOR_WAIT_S": "30",
                    "OMP_NUM_THREADS": "1"}
        self.api = Api(self.env, folder / "api-0.log")
        self.api_life = self._life("api", self.api.popen.pid)
        self.workers: dict[str, Process] = {}
        self.worker_lives: dict[str, Life] = {}
        for i in range(workers):
            self.start_worker(f"w{i}")
        self.api.wait_ready(timeout=300, workers=workers)
        for life in self.lives:
            life.ready = True
            life.sample()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _life(self, name: str, pid: int, ready: bool = False) -> Life:
        life = Life(name, pid, round(self.now(), 2), ready)
        with self.lock:
            self.lives.append(life)
        return life

    def _end(self, life: Life, how: str) -> None:
        life.sample()
        life.ended_s, life.ended_by = round(self.now(), 2), how

    def start_worker(self, name: str) -> None:
        with self.lock:
            count = sum(life.name == name for life in self.lives)
            process = Process("iclsel.workers.main", ["--name", name, "--log-level", "warning"], self.env,
                              self.folder / f"{name}-{count}.log")
            self.workers[name], self.worker_lives[name] = process, self._life(name, process.popen.pid)

    def kill_worker(self, name: str) -> None:
        with self.lock:
            process, life = self.workers[name], self.worker_lives[name]
        self._end(life, "kill -9")
        process.signal(signal.SIGKILL)
        process.popen.wait()
        process.stop()
        self.start_worker(name)

    def restart_redis(self, down_s: float) -> None:
        self._end(self.redis_life, "kill -9")
        self.redis.kill()
        time.sleep(down_s)
        self.redis.start()
        self.redis_life = self._life("redis", self.redis.popen.pid, ready=True)

    def restart_api(self) -> None:
        self._end(self.api_life, "kill -9")
        self.api.signal(signal.SIGKILL)
        self.api.popen.wait()
        self.api.stop()
        count = sum(life.name == "api" for life in self.lives)
        self.api = Api(self.env, self.folder / f"api-{count}.log", port=self.api.port)
        self.api_life = self._life("api", self.api.popen.pid)
        self.api.wait_ready(timeout=120)
        self.api_life.ready = True

    def busy_worker(self) -> str | None:
        """A worker holding a job's stream entry now (running it), if any."""
        import redis

        try:
            client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=2)
            consumers = client.xpending(PREFIX + "jobs", "workers").get("consumers") or []
        except redis.RedisError:
            return None
        busy = [entry["name"] for entry in consumers if entry["pending"] and entry["name"] in self.workers]
        return busy[0] if busy else None

    def monitor(self, stop: threading.Event) -> None:
        """Sample every live process's RSS each second; a worker is ready once it has sent a heartbeat."""
        import redis

        client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=2)
        while not stop.wait(1.0):
            with self.lock:
                live = [life for life in self.lives if life.ended_s is None]
            try:
                beats = {name: json.loads(entry) for name, entry in client.hgetall(PREFIX + "workers").items()}
            except redis.RedisError:
                beats = {}
            for life in live:
                beat = beats.get(life.name)
                if beat and beat["expires_at"] - 3 * HEARTBEAT_S >= time.time() - (self.now() - life.started_s):
                    life.ready = True
                life.sample()

    def stop(self) -> None:
        for life in self.lives:
            if life.ended_s is None:
                self._end(life, "end of run")
        for process in [self.api, *self.workers.values()]:
            process.stop()
        self.redis.stop()


# ---------------------------------------------------------------- faults

def fault_schedule(seconds: float, workers: int, rng: random.Random) -> list[Fault]:
    """Seeded faults for a run of `seconds`: worker kills every 30-90 s and one each of the others,
    compressed by seconds / 600 (at least a quarter), all due in the first 90 % of the run."""
    scale, end = max(seconds / 600, 0.25), 0.9 * seconds
    faults = []
    at = rng.uniform(30, 90) * scale
    while at < end:
        faults.append(Fault("kill -9 worker", round(at, 2), f"w{rng.randrange(workers)}"))
        at += rng.uniform(30, 90) * scale
    faults.append(Fault("redis kill -9 + restart", round(rng.uniform(0.15, 0.3) * seconds, 2), "redis",
                        {"down_s": round(rng.uniform(1, 3), 2)}))
    faults.append(Fault("api kill -9 + restart", round(rng.uniform(0.4, 0.55) * seconds, 2), "api"))
    faults.append(Fault("worker SIGSTOP + SIGCONT", round(rng.uniform(0.6, 0.75) * seconds, 2),
                        f"w{rng.randrange(workers)}", {"stopped_s": round(rng.uniform(2, 3) * CLAIM_IDLE_S, 2)}))
    return sorted(faults, key=lambda fault: fault.at_s)


def inject(stack: Stack, fault: Fault, start: float) -> None:
    time.sleep(max(0.0, start + fault.at_s - time.monotonic()))
    if fault.kind == "kill -9 worker":
        fault.detail["pid"] = stack.workers[fault.target].popen.pid
        fault.detail["was_running_a_job"] = stack.busy_worker() == fault.target
        stack.kill_worker(fault.target)
    elif fault.kind.startswith("redis"):
        stack.restart_redis(fault.detail["down_s"])
    elif fault.kind.startswith("api"):
        stack.restart_api()
        fault.recovered_s = round(time.monotonic() - start, 2)
    else:  # SIGSTOP: the worker running a job if one does within 5 s (its job must be taken over), else the drawn one
        deadline = time.monotonic() + 5
        while (busy := stack.busy_worker()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        fault.target = busy or fault.target
        fault.detail["was_running_a_job"] = busy is not None
        with stack.lock:
            process = stack.workers[fault.target]
        fault.detail["pid"] = process.popen.pid
        process.signal(signal.SIGSTOP)
        time.sleep(fault.detail["stopped_s"])
        process.signal(signal.SIGCONT)  # no-op when a kill -9 meanwhile ended this process
    fault.done_s = round(time.monotonic() - start, 2)


# ---------------------------------------------------------------- load

class Load:
    """Concurrent clients, each doing a seeded mix of actions until stopped."""

    ACTIONS = ("repeat", "distinct", "pool", "cancel", "poll")
    WEIGHTS = (30, 25, 15, 10, 20)

    def __init__(self, stack: Stack, clients: int, seed: int, start: float):
        self.stack, self.clients, self.seed, self.start = stack, clients, seed, start
        self.replies: list[Reply] = []
        self.jobs: dict[str, TrackedJob] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.distinct = 0

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(number,), daemon=True) for number in range(self.clients)]
        for thread in threads:
            thread.start()
        return threads

    def request(self, http: httpx.Client, kind: str, method: str, path: str, body=None,
                timeout: float = 30) -> httpx.Response | None:
        began = time.perf_counter()
        try:
            reply = http.request(method, self.stack.api.url + path, json=body, timeout=timeout)
        except httpx.HTTPError as error:
            with self.lock:
                self.replies.append(Reply(kind, round(time.monotonic() - self.start, 2), time.perf_counter() - began,
                                          None, type(error).__name__))
            time.sleep(0.5)  # the API is restarting
            return None
        with self.lock:
            self.replies.append(Reply(kind, round(time.monotonic() - self.start, 2), time.perf_counter() - began,
                                      reply.status_code))
        if reply.status_code in (429, 503):
            time.sleep(min(float(reply.headers.get("retry-after", "1")), 1.0))
        return reply

    def select(self, http: httpx.Client, kind: str, body: dict, wait_s: float) -> str | None:
        """POST a selection; the job id when it was accepted (200 or 202)."""
        reply = self.request(http, kind, "POST", "/v1/selections", {**body, "wait_s": wait_s}, timeout=wait_s + 30)
        if reply is None or reply.status_code not in (200, 202):
            return None
        return self.track(kind, reply.json(), accepted=True)

    def track(self, kind: str, job: dict, accepted: bool = False) -> str:
        with self.lock:
            tracked = self.jobs.setdefault(job["id"], TrackedJob(job["id"], kind))
            tracked.accepted += accepted
            if job["status"] == "succeeded" and tracked.first_result is None:
                tracked.first_result = job["result"]
        return job["id"]

    def serial(self) -> int:
        """A number no other request of this run has: it makes a request distinct."""
        with self.lock:
            self.distinct += 1
            return self.distinct

    def client(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        outstanding: list[str] = []  # this client's accepted jobs not seen finished
        with httpx.Client() as http:
            while not self.stop.is_set():
                action = rng.choices(self.ACTIONS, weights=self.WEIGHTS)[0]
                if len(outstanding) >= 3:
                    action = "poll"  # keep the backlog bounded: wait for one of ours first
                wait_s = rng.choice((0, 0, 1, 5, 10))
                if action == "repeat":
                    job = self.select(http, "repeat", hot_selection(rng.randrange(len(HOT_METHODS))), wait_s)
                elif action == "distinct":
                    serial = self.serial()
                    job = self.select(http, "distinct", distinct_selection(rng, f"d{self.seed}-{serial}", serial), wait_s)
                elif action == "pool":
                    job = self.pool_round(http, rng, wait_s)
                elif action == "cancel":
                    job = None
                    self.cancel_round(http, rng)
                else:
                    job = None
                    self.poll(http, rng, outstanding)
                if job is not None:
                    outstanding.append(job)
                time.sleep(rng.uniform(0.05, 0.4))

    def pool_round(self, http: httpx.Client, rng: random.Random, wait_s: float) -> str | None:
        serial = self.serial()
        tag = f"pool{self.seed}-{serial}"
        reply = self.request(http, "pool upload", "POST", "/v1/pools", {"examples": records(rng, 8, tag)})
        if reply is None or reply.status_code not in (200, 201):
            return None
        pool_id = reply.json()["id"]
        body = {"pool_id": pool_id, "queries": queries(rng.randint(3, 5), tag), "k": 2, "method": "gradient",
                "seed": serial}
        job = self.select(http, "by pool id", body, wait_s)
        self.request(http, "pool delete", "DELETE", f"/v1/pools/{pool_id}")  # the job has the records already
        return job

    def cancel_round(self, http: httpx.Client, rng: random.Random) -> None:
        job = self.select(http, "long", long_selection(rng, f"long{self.seed}-{self.serial()}"), 0)
        if job is None:
            return
        time.sleep(rng.uniform(0.2, 3.0))
        reply = self.request(http, "cancel", "DELETE", f"/v1/jobs/{job}")
        if reply is not None and reply.status_code == 200:
            with self.lock:
                self.jobs[job].cancel_asked = True

    def poll(self, http: httpx.Client, rng: random.Random, outstanding: list[str]) -> None:
        with self.lock:
            known = list(self.jobs)
        if not outstanding and not known:
            return
        job = outstanding[0] if outstanding else rng.choice(known)
        reply = self.request(http, "long poll", "GET", f"/v1/jobs/{job}?wait_s={rng.choice((2, 5, 10))}", timeout=40)
        if reply is not None and reply.status_code in (200, 422, 500):
            self.track(self.jobs[job].kind, reply.json())
            if job in outstanding:
                outstanding.remove(job)


# ---------------------------------------------------------------- checks

def difference(a, b, where: str) -> str | None:
    """The first place two JSON values differ (numbers within a relative 1e-4), or None."""
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return f"{where}: keys {sorted(a.keys() ^ b.keys())} in one only"
            return next((found for key in a if (found := difference(a[key], b[key], f"{where}.{key}"))), None)
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return f"{where}: {len(a)} != {len(b)} items"
            return next((found for i, (x, y) in enumerate(zip(a, b)) if (found := difference(x, y, f"{where}[{i}]"))),
                        None)
        return None if a == b else f"{where}: {a!r} != {b!r}"
    return None if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) else f"{where}: {a} != {b}"


def result_difference(a: dict, b: dict) -> str | None:
    """Where two results differ in what must not depend on where or how often a job ran (the chosen demos,
    the scores, the estimated and exact figures, the prompt); None when they agree."""
    return next((found for part in ("selected", "scores", "estimate", "exact", "prompt")
                 if (found := difference(a[part], b[part], part))), None)


def drain(queue, jobs: list[str], timeout: float) -> float:
    """Wait until every job has finished (or timeout); seconds waited."""
    began = time.monotonic()
    waiting = set(jobs)
    while waiting and time.monotonic() - began < timeout:
        for job in list(waiting):
            record = queue.get(job)
            if record is not None and record["status"] in FINISHED:
                waiting.discard(job)
        if waiting:
            time.sleep(0.5)
    return time.monotonic() - began


def check(stack: Stack, load: Load, model_dir: Path, drain_s: float) -> dict:
    import redis

    from iclsel.settings import Settings
    from iclsel.workers.redis_cache import RedisTensorCache
    from iclsel.workers.redis_queue import RedisQueue

    settings = Settings(redis_url=stack.redis.url, redis_prefix=PREFIX, model=str(model_dir), device="cpu",
                        anchor_chunk=2, home=stack.folder / "home")
    queue = RedisQueue(settings)
    accepted = [job for job in load.jobs.values() if job.accepted]
    waited = drain(queue, [job.id for job in accepted], drain_s)

    records = {job.id: queue.get(job.id) for job in accepted}
    counters = {job.id: queue.client.hmget(queue.job_key(job.id), "finishes", "stale_finishes") for job in accepted}
    finishes = {job: int(written or 0) for job, (written, _) in counters.items()}
    dropped = sum(int(stale or 0) for _, stale in counters.values())
    statuses = Counter(record["status"] if record else "missing" for record in records.values())
    lost = sorted(job for job, record in records.items() if record is None or record["status"] not in FINISHED)
    failed = Counter((record["error"] or {}).get("message", "?") for record in records.values()
                     if record and record["status"] == "failed")
    cancelled_unasked = sorted(job.id for job in accepted if records[job.id] and records[job.id]["status"] == "cancelled"
                               and not job.cancel_asked)

    print(f"checking {statuses['succeeded']} results against an undisturbed in-process run ...", file=sys.stderr)
    from iclsel.workers.jobs import load_worker_model, make_engine, run_job

    import torch

    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1); faster than 2 threads on a shared 2-core machine
    engine = make_engine(load_worker_model(settings), settings, cache=None)
    wrong, answers_changed, reference_s = {}, [], time.monotonic()
    for job in accepted:
        record = records[job.id]
        if not record or record["status"] != "succeeded":
            continue
        status, reference, error = run_job(engine, record["spec"], lambda *_: None, lambda: False)
        difference = f"reference run {status}: {error}" if status != "succeeded" else \
            result_difference(record["result"], reference)
        if difference:
            wrong[job.id] = difference
        if job.first_result is not None and result_difference(job.first_result, record["result"]):
            answers_changed.append(job.id)
    reference_s = time.monotonic() - reference_s

    cache = RedisTensorCache(redis.Redis.from_url(stack.redis.url), PREFIX, settings.cache_ttl_s)
    manifests = cache.manifest_keys()
    torn = [key for key in manifests if cache.read(key) is None and cache.client.exists(key)]
    pending = queue.client.xpending(queue.stream, "workers")["pending"]
    attempts = Counter(str(record.get("attempts")) for record in records.values() if record)
    twice = sorted(job for job, count in finishes.items() if count > 1)
    return {
        "accepted": len(accepted), "succeeded": statuses["succeeded"], "failed": statuses["failed"],
        "failed_reasons": dict(failed), "cancelled": statuses["cancelled"],
        "cancel_asked": sum(job.cancel_asked for job in accepted), "cancelled_unasked": len(cancelled_unasked),
        "lost": len(lost), "lost_jobs": {job: (records[job] or {}).get("status", "missing") for job in lost[:20]},
        "completed_twice": len(twice), "stale_results_dropped": dropped,
        "completed_twice_jobs": {job: {"finishes": finishes[job], "attempts": records[job]["attempts"],
                                       "result_unchanged": job not in wrong} for job in twice[:20]},
        "wrong_results": len(wrong), "wrong_result_jobs": dict(list(wrong.items())[:20]),
        "results_checked": statuses["succeeded"], "answers_changed_later": len(answers_changed),
        "attempts_histogram": dict(sorted(attempts.items())),
        "cache_entries_checked": len(manifests), "cache_entries_torn": len(torn),
        "stream_pending_after": pending, "stream_length_after": queue.client.xlen(queue.stream),
        "anchor_stream_length_after": queue.client.xlen(queue.anchor_stream),
        "redis_dataset_mb": round(queue.client.info("memory")["used_memory_dataset"] / 2**20, 1),
        "redis_keys": queue.client.dbsize(),
        "drain_s": round(waited, 1), "reference_s": round(reference_s, 1),
    }


# ---------------------------------------------------------------- figures

def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def latency(replies: list[Reply]) -> dict:
    answered = [reply for reply in replies if reply.status is not None]
    by_kind = {}
    for kind in sorted({reply.kind for reply in answered}):
        seconds = [reply.seconds for reply in answered if reply.kind == kind]
        by_kind[kind] = {"requests": len(seconds), "p50_ms": percentile(seconds, 0.5), "p95_ms": percentile(seconds, 0.95)}
    seconds = [reply.seconds for reply in answered]
    return {"p50_ms": percentile(seconds, 0.5), "p95_ms": percentile(seconds, 0.95), "by_kind": by_kind}


def process_figures(lives: list[Life]) -> list[dict]:
    rows = []
    for life in lives:
        row = asdict(life)
        del row["ready"]
        for key in ("rss_start_mb", "rss_end_mb", "rss_peak_mb"):
            row[key] = None if row[key] is None else round(row[key], 1)
        row["rss_growth_mb"] = (None if life.rss_start_mb is None or life.rss_end_mb is None
                                else round(life.rss_end_mb - life.rss_start_mb, 1))
        rows.append(row)
    return rows


def invariants(jobs: dict, processes: list[dict], faults: list[dict]) -> dict:
    """What must hold. RSS growth is the service's processes' (API, workers): Redis grows with what it keeps
    (jobs for ICLSEL_JOB_TTL_S, cache entries for ICLSEL_CACHE_TTL_S), reported apart as its dataset size."""
    growth = [row["rss_growth_mb"] for row in processes if row["rss_growth_mb"] is not None and row["name"] != "redis"]
    kinds = {fault["kind"] for fault in faults if fault["done_s"] is not None}
    return {"lost_zero": jobs["lost"] == 0,
            "completed_twice_zero": jobs["completed_twice"] == 0,
            "wrong_results_zero": jobs["wrong_results"] == 0 and jobs["answers_changed_later"] == 0,
            "cache_entries_torn_zero": jobs["cache_entries_torn"] == 0,
            "rss_growth_under_100_mib": bool(growth) and max(growth) < 100,
            "every_fault_kind_injected": len(kinds) == 4}


def docs_table(report: dict) -> str:
    jobs, config, latency_ = report["jobs"], report["config"], report["latency"]
    faults = Counter(fault["kind"] for fault in report["faults"] if fault["done_s"] is not None)
    longest = {}
    for row in report["processes"]:
        if row["rss_growth_mb"] is not None and (row["name"] not in longest
                                                 or row["ended_s"] - row["started_s"] > longest[row["name"]][0]):
            longest[row["name"]] = (row["ended_s"] - row["started_s"], row)
    rss = ", ".join(f"{name} {row['rss_start_mb']:.0f} -> {row['rss_end_mb']:.0f} MiB over {span:.0f} s"
                    for name, (span, row) in sorted(longest.items()))
    statuses = ", ".join(f"{status}: {count}" for status, count in report["requests"]["statuses"].items())
    failed = "; ".join(f"{count} x {reason}" for reason, count in jobs["failed_reasons"].items()) or "none"
    lines = [
        f"`python -m bench.chaos --seconds {config['seconds']:g} --workers {config['workers']} "
        f"--clients {config['clients']} --seed {config['seed']}` ({report['recorded']}, {config['machine']}; "
        f"`bench/results/chaos.json`):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| load | {config['clients']} clients, {report['requests']['total']} requests ({statuses}) |",
        "| faults | " + ", ".join(f"{count} x {kind}" for kind, count in sorted(faults.items())) + " |",
        f"| jobs accepted (200/202) | {jobs['accepted']}: succeeded {jobs['succeeded']}, failed {jobs['failed']}, "
        f"cancelled {jobs['cancelled']} (cancel asked for {jobs['cancel_asked']}) |",
        f"| failed, why | {failed} |",
        f"| lost | {jobs['lost']} |",
        f"| completed twice | {jobs['completed_twice']} ({jobs['stale_results_dropped']} outcomes of runs whose job had "
        f"been taken over dropped) |",
        f"| wrong results | {jobs['wrong_results']} of {jobs['results_checked']} checked against an undisturbed run |",
        "| runs per job (`attempts`) | " + ", ".join(f"{n}: {c}" for n, c in jobs["attempts_histogram"].items()) + " |",
        f"| cache entries | {jobs['cache_entries_checked']} checked, {jobs['cache_entries_torn']} torn |",
        f"| latency | p50 {latency_['p50_ms']} ms, p95 {latency_['p95_ms']} ms (all answered requests; "
        f"selections wait up to `wait_s` = 10 s) |",
        f"| RSS, longest life of each process | {rss} (Redis holds {jobs['redis_keys']} keys, "
        f"{jobs['redis_dataset_mb']} MiB of data: jobs and cache entries kept for their TTLs) |",
        "| invariants | " + ", ".join(f"{name} {'yes' if held else 'NO'}" for name, held in report["invariants"].items()) + " |",
    ]
    return "\n".join(lines)


def write_docs(path: Path, table: str) -> None:
    text = path.read_text()
    if DOCS_START not in text:
        raise SystemExit(f"{path} has no {DOCS_START} ... {DOCS_END} block to fill")
    head, rest = text.split(DOCS_START, 1)
    tail = rest.split(DOCS_END, 1)[1]
    path.write_text(f"{head}{DOCS_START}\n{table}\n{DOCS_END}{tail}")


# ---------------------------------------------------------------- main

def run(seconds: float, workers: int, clients: int, seed: int, model: str | None, drain_s: float,
        folder: Path) -> dict:
    if model is None:
        from iclsel.models.tiny import build_tiny_model

        model_dir = build_tiny_model(folder / "tiny-model")
    else:
        model_dir = Path(model)
    print(f"starting redis, the API and {workers} workers in {folder} ...", file=sys.stderr)
    stack = Stack(folder, model_dir, workers)
    stop_monitor = threading.Event()
    monitor = threading.Thread(target=stack.monitor, args=(stop_monitor,), daemon=True)
    monitor.start()
    faults = fault_schedule(seconds, workers, random.Random(seed))
    try:
        start = time.monotonic()
        for life in stack.lives:  # process times count from the start of the load, as the faults' do
            life.started_s = round(life.started_s - (start - stack.t0), 2)
        stack.t0 = start
        load = Load(stack, clients, seed, start)
        clients_ = load.run()
        injectors = [threading.Thread(target=inject, args=(stack, fault, start), daemon=True) for fault in faults]
        for thread in injectors:
            thread.start()
        print(f"load and faults for {seconds:g} s: {[(f.kind, f.at_s) for f in faults]}", file=sys.stderr)
        time.sleep(seconds)
        load.stop.set()
        for thread in injectors:
            thread.join(timeout=300)
        for thread in clients_:
            thread.join(timeout=120)
        load_s = time.monotonic() - start
        print(f"load stopped after {load_s:.0f} s; draining and checking ...", file=sys.stderr)
        jobs = check(stack, load, model_dir, drain_s)
        for life in stack.lives:
            life.sample()
    finally:
        stop_monitor.set()
        stack.stop()
    replies = load.replies
    processes = process_figures(stack.lives)
    fault_rows = [asdict(fault) for fault in faults]
    report = {
        "config": {"seconds": seconds, "workers": workers, "clients": clients, "seed": seed,
                   "model": model or "tiny (built on the spot)", "claim_idle_s": CLAIM_IDLE_S,
                   "heartbeat_s": HEARTBEAT_S, "schedule_scale": round(max(seconds / 600, 0.25), 3),
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"},
        "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "requests": {"total": len(replies), "load_s": round(load_s, 1),
                     "statuses": {str(k): v for k, v in sorted(Counter(r.status or 0 for r in replies).items())},
                     "transport_errors": dict(Counter(r.error for r in replies if r.error)),
                     "by_kind": dict(Counter(r.kind for r in replies))},
        "latency": latency(replies),
        "jobs": jobs,
        "processes": processes,
        "faults": fault_rows,
    }
    report["invariants"] = invariants(jobs, processes, fault_rows)
    report["ok"] = all(report["invariants"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, required=True, help="how long the load and the faults last")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a Hugging Face folder (default: the tiny random model)")
    parser.add_argument("--drain-s", type=float, default=180, help="how long to wait for accepted jobs to finish")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    parser.add_argument("--docs", type=Path, help="also write the table into this file (docs/reliability.md)")
    parser.add_argument("--keep", type=Path, help="keep logs and the append-only file in this folder")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(args.seconds, args.workers, args.clients, args.seed, args.model, args.drain_s, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="iclsel-chaos-") as folder:
            report = run(args.seconds, args.workers, args.clients, args.seed, args.model, args.drain_s, Path(folder))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.docs:
        write_docs(args.docs, docs_table(report))
    print(docs_table(report))
    print(f"wrote {args.out}; invariants {'all hold' if report['ok'] else 'BROKEN'}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
