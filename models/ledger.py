"""What one selection job has spent and done: the pass Ledger (max_passes, the cache's work, diagnostics, the
returned set's reserve) and the job's Stats (timings, cache hits and misses, sets explored)."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import torch

from .inference import ModelRunner


def fitting(passes: float, cost: int) -> float:
    """How many steps of ``cost`` fit in ``passes`` (infinite passes: infinitely many)."""
    return passes if math.isinf(passes) else max(0, passes // cost)


class Ledger:
    """Pass accounting of one job, in forward-equivalents: what the runner's counter spent (within its limit,
    max_passes), what was kept back for the returned set's exact run, what went to diagnostics only, and the
    cache entries this job used without computing them (each charged once, at what it cost to compute)."""

    def __init__(self, runner: ModelRunner, n_queries: int):
        self.runner = runner
        self.n_queries = n_queries
        self._diagnostic = 0  # forward-equivalents spent on diagnostics only
        self._final_reserve = 0  # kept back (max_passes) for the returned set's exact run
        self._cached_work = 0  # forward-equivalents of cache entries this job used without computing them
        self._charged: set[str] = set()  # cache keys this job computed or has charged

    @property
    def diagnostic_passes(self) -> int:
        return self._diagnostic

    @contextmanager
    def diagnostic(self):
        """Model work inside is for diagnostics only: counted apart from the selection's cost."""
        before = self.runner.counter.forward_equivalent
        try:
            yield
        finally:
            self._diagnostic += self.runner.counter.forward_equivalent - before

    def reserve_final(self, passes: int) -> None:
        """Keep ``passes`` back from the method, for the returned set's exact run (0: release them)."""
        self._final_reserve = passes

    def passes_left(self) -> float:
        """Forward-equivalents a method may still spend within max_passes (the returned set's exact run kept
        back); infinite without a limit. Counted on work(), not on what ran, so that a job decides the same under
        max_passes whatever the cache held (a cached job runs less, never more, than the limit allows)."""
        limit = self.runner.counter.limit
        return math.inf if limit is None else limit - self.work() - self._final_reserve

    def exact_runs_left(self) -> float:
        """Exact runs on every query that fit in passes_left()."""
        return fitting(self.passes_left(), self.runner.exact_cost(self.n_queries))

    def anchor_cost(self, mode: str) -> int:
        """Forward-equivalents of an anchor pass on every query, at most."""
        return self.runner.anchor_cost(mode, self.n_queries)

    def anchors_left(self, mode: str) -> float:
        """Anchor passes on every query that fit in passes_left()."""
        return fitting(self.passes_left(), self.anchor_cost(mode))

    def work(self) -> int:
        """Forward-equivalents of the model work this job has used: run here, or found in the cache (each
        entry charged once, at what it cost to compute). A budget over it (the subsample search's) makes the
        same decisions whatever the cache held: after a retry, beside other jobs, with other workers' chunks."""
        return self.runner.counter.forward_equivalent + self._cached_work

    def found(self, key: str, cost: torch.Tensor | None) -> None:
        """Charge a cache entry this job found, once."""
        if key not in self._charged:
            self._charged.add(key)
            self._cached_work += 0 if cost is None else int(cost)

    def computed(self, key: str) -> None:
        """A cache entry this job computed (its passes are on the counter already)."""
        self._charged.add(key)


class Stats:
    """What a job reports about itself: seconds per phase, cache hits and misses, sets explored."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.explored = 0  # subsets whose outcome was estimated or run

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def record(self, name: str, seconds: float) -> None:
        self.timings[name] = seconds

    def explore(self, subsets: int) -> None:
        self.explored += subsets

    def looked_up(self, hits: int, misses: int) -> None:
        self.cache_hits += hits
        self.cache_misses += misses
