"""What one selection job holds: the layout, the model runner, cached anchors, memoised exact runs, timers."""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from .anchor import ANCHOR_MODES, AnchorTensors
from .cache import TensorCache
from .constraints import check_label_counts
from .data import Example, InputError
from .estimate import AnchorEstimator
from .inference import ModelRunner, with_cost
from .layout import Layout
from .outcome import on_all_rows
from .retrieval import top_k_ascending
from .tasks import AnchorTask
from .warm import Resume


def stratified_rows(gold: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices into ``gold`` [Q], label-balanced where the labels allow: round-robin over the labels
    (in random order), each label's members in random order."""
    by_label = [list(rng.permutation(np.flatnonzero(gold == g))) for g in rng.permutation(np.unique(gold))]
    rows: list[int] = []
    while len(rows) < size:
        for members in by_label:
            if members and len(rows) < size:
                rows.append(int(members.pop()))
    return np.array(rows, dtype=np.int64)


@dataclass(frozen=True)
class SelectionProblem:
    """What a job selects for: the laid-out prompts and the examples behind them."""
    layout: Layout
    pool: list[Example]
    queries: list[Example]  # the user's queries (the layout's query rows may add pool demos after them)
    k: int  # slots searched
    # [Q] pool index of each query row that is a pool demo (params.pool_queries), -1 for the user's queries.
    # A pool demo is scored as a query only for prompts it is not in: the objective of a subset S is the mean
    # loss over visible(S). None: every row is a user's query.
    query_demo: list[int] | None = None
    min_per_label: int = 0  # each option appears at least this often in every set a method proposes or returns
    resume: Resume | None = None  # a grown pool's search resumes from its parent's (models/warm.py)


@dataclass(frozen=True)
class ModelAccess:
    """How a job reaches the model: the runner, its tokenizer, and the tensor cache keyed by its fingerprint."""
    runner: ModelRunner
    tokenizer: Any
    cache: TensorCache
    fingerprint: str
    anchor_chunk: int = 32  # query rows per cached anchor part
    anchor_runner: Callable[[list[AnchorTask]], None] | None = None  # optional: fans anchor tasks out to other workers


def fitting(passes: float, cost: int) -> float:
    """How many steps of ``cost`` fit in ``passes`` (infinite passes: infinitely many)."""
    return passes if math.isinf(passes) else max(0, passes // cost)


class SelectionContext:
    def __init__(self, problem: SelectionProblem, model: ModelAccess, seed: int,
                 *progress: Callable[[str, int, int], None]):
        """``progress(phase, done, total)`` is the last argument (bench/ callers still pass a params dict before
        it, which the context no longer reads: a method gets its parsed params from the engine)."""
        progress = progress[-1]
        layout = problem.layout
        self.runner = model.runner
        self.tokenizer = model.tokenizer
        self.pool_inputs = [example.input for example in problem.pool]
        self.pool_ids = [example.id for example in problem.pool]
        self.resume = problem.resume
        self.query_inputs = [example.input for example in problem.queries]
        self.layout = layout
        self.k = problem.k
        self.n = layout.demo_ids.shape[0]
        self.queries = list(range(len(layout.query_ids)))
        self.query_demo = torch.tensor(problem.query_demo if problem.query_demo is not None else [-1] * len(self.queries),
                                       dtype=torch.long)
        self.min_per_label = problem.min_per_label
        self.demo_label = torch.tensor([layout.options.index(o) if o in layout.options else -1
                                        for o in layout.demo_outputs], dtype=torch.long)  # [n] option of each demo
        check_label_counts(self.demo_label.tolist(), layout.n_options, self.k, self.min_per_label, layout.options)
        self.rng = np.random.default_rng(seed)
        self.cache = model.cache
        self.model_fingerprint = model.fingerprint
        self.progress = progress
        self.anchor_chunk = model.anchor_chunk
        self.anchor_runner = model.anchor_runner
        self.timings: dict[str, float] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.explored = 0  # subsets whose outcome was estimated or run
        self.diagnostic_passes = 0  # forward-equivalents spent on diagnostics only
        self.final_reserve = 0  # forward-equivalents kept back (max_passes) for the returned set's exact run
        self.cached_work = 0  # forward-equivalents of cache entries this job used without computing them
        self._charged: set[str] = set()  # cache keys this job computed or has charged
        self._exact: dict[tuple[int, ...], torch.Tensor] = {}
        self._exact_rows: dict[tuple[int, ...], dict[int, torch.Tensor]] = {}  # subset -> query row -> scores [O]
        self._queries_digest = hashlib.sha256(json.dumps(
            [layout.query_texts, layout.gold.tolist()], separators=(",", ":")).encode()).hexdigest()

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def diagnostic(self):
        """Model work inside is for diagnostics only: counted apart from the selection's cost."""
        before = self.runner.counter.forward_equivalent
        try:
            yield
        finally:
            self.diagnostic_passes += self.runner.counter.forward_equivalent - before

    # ---------- max_passes ----------
    def passes_left(self) -> float:
        """Forward-equivalents a method may still spend within max_passes (the returned set's exact run kept
        back); infinite without a limit."""
        limit = self.runner.counter.limit
        return math.inf if limit is None else limit - self.runner.counter.forward_equivalent - self.final_reserve

    def exact_runs_left(self) -> float:
        """Exact runs on every query that fit in passes_left()."""
        return fitting(self.passes_left(), self.runner.exact_cost(len(self.queries)))

    def anchor_cost(self, mode: str) -> int:
        """Forward-equivalents of anchor(subset, mode) on every query, at most."""
        return self.runner.anchor_cost(mode, len(self.queries))

    def anchors_left(self, mode: str) -> float:
        """Anchor passes on every query that fit in passes_left()."""
        return fitting(self.passes_left(), self.anchor_cost(mode))

    def work(self) -> int:
        """Forward-equivalents of the model work this job has used: run here, or found in the cache (each
        entry charged once, at what it cost to compute). A budget over it (the subsample search's) makes the
        same decisions whatever the cache held: after a retry, beside other jobs, with other workers' chunks."""
        return self.runner.counter.forward_equivalent + self.cached_work

    def _found(self, key: str, cost: torch.Tensor | None) -> None:
        """Charge a cache entry this job found, once."""
        if key not in self._charged:
            self._charged.add(key)
            self.cached_work += 0 if cost is None else int(cost)

    def visible(self, subset: list[int]) -> list[int]:
        """The query rows scored for ``subset``: all, except pool demos that are in it."""
        members = {int(i) for i in subset}
        return [q for q in self.queries if int(self.query_demo[q]) not in members]

    # ---------- exact inference (memoised per subset) ----------
    def exact(self, subset: list[int]) -> torch.Tensor:
        """Exact option scores [Q, O] of ``subset`` on the query set, NaN on rows it hides (memoised, and
        cached by content)."""
        key = tuple(int(i) for i in subset)
        if key not in self._exact:
            cache_key = self._key("exact", {"demos": [self.layout.demo_texts[i] for i in key],
                                            "queries": self._queries_digest})
            cached = self.cache.get(cache_key)
            if cached is not None:
                self.cache_hits += 1
                self._found(cache_key, cached.get("cost"))
                self._exact[key] = cached["scores"]
            else:
                self.cache_misses += 1
                rows = self.visible(key)
                with self.phase("exact"):
                    scores, cost = with_cost(self.runner.counter, lambda: on_all_rows(
                        self.runner.exact_scores(list(key), rows), rows, len(self.queries)))
                self._exact[key] = scores
                self._charged.add(cache_key)
                self.cache.put(cache_key, {"scores": scores, "cost": cost})
        return self._exact[key]

    def exact_rows(self, subset: list[int], rows: list[int]) -> torch.Tensor:
        """Exact option scores [len(rows), O] of ``subset`` on query ``rows`` only, NaN on rows it hides. Runs just
        the rows not yet run for this subset in this job (a full exact run, memoised, answers every row)."""
        key = tuple(int(i) for i in subset)
        if key in self._exact:
            return self._exact[key][rows]
        known = self._exact_rows.setdefault(key, {})
        visible = set(self.visible(key))
        missing = [q for q in rows if q not in known and q in visible]
        if missing:
            with self.phase("exact"):
                scores = self.runner.exact_scores(list(key), missing)
            known.update(zip(missing, scores))
        hidden = torch.full((self.layout.n_options,), float("nan"))
        return torch.stack([known.get(q, hidden) for q in rows])

    def sample_rows(self, size: int, exclude: list[int] = ()) -> list[int]:
        """``size`` query rows, label-stratified, drawn with the job's generator, outside ``exclude`` while enough
        rows are left there (else from all rows); all of them if fewer."""
        excluded = set(exclude)
        pool = [q for q in self.queries if q not in excluded]
        if len(pool) < size:
            pool = self.queries
        gold = self.layout.gold[pool].numpy()
        return [pool[i] for i in stratified_rows(gold, min(size, len(pool)), self.rng)]

    def exact_many(self, subsets: list[list[int]], label: str = "exact") -> list[torch.Tensor]:
        results = []
        for done, subset in enumerate(subsets):
            self.progress(label, done, len(subsets))
            results.append(self.exact(subset))
        self.progress(label, len(subsets), len(subsets))
        return results

    # ---------- anchors (cached by content) ----------
    def _key(self, namespace: str, content: dict) -> str:
        """Cache key: content hash of everything the cached tensors depend on."""
        content = {"v": 3, "model": self.model_fingerprint, "layout": self.layout.fingerprint(), **content}
        return f"{namespace}:" + hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()

    def anchor_key(self, layout: Layout, subset: list[int], queries: list[int], mode: str) -> str:
        return self._key("anchor", {
            "mode": mode, "width": layout.width, "anchor": [layout.demo_texts[i] for i in subset],
            "queries": [layout.query_texts[q] for q in queries],
            "gold": [int(layout.gold[q]) for q in queries],
        })

    def _cached_anchor(self, key: str) -> AnchorTensors | None:
        tensors = self.cache.get(key)
        return None if tensors is None else AnchorTensors.from_named(tensors)

    def anchor(self, subset: list[int], mode: str = "mean-loss") -> AnchorEstimator:
        """Anchor quantities at ``subset`` (from the cache when present), in query chunks, taken in the natural
        prompt that is run for it. Its scores are that prompt's exact outcome, memoised as the subset's exact run."""
        if mode not in ANCHOR_MODES:
            raise InputError("params.anchor_mode", f"must be one of {list(ANCHOR_MODES)}, not {mode!r}")
        layout, runner = self.layout, self.runner
        rows = self.visible(subset)
        chunks = [rows[i:i + self.anchor_chunk] for i in range(0, len(rows), self.anchor_chunk)]
        keys = [self.anchor_key(layout, subset, chunk, mode) for chunk in chunks]
        parts = [self._cached_anchor(key) for key in keys]
        self.cache_hits += sum(part is not None for part in parts)
        self.cache_misses += sum(part is None for part in parts)
        missing = [i for i, part in enumerate(parts) if part is None]
        self.progress("anchor", 0, len(chunks))  # also the cancellation checkpoint
        if self.anchor_runner is not None and len(missing) > 1:
            # other workers compute chunks into the shared cache; whatever is not there after, runs here
            with self.phase("anchor"):
                self.anchor_runner([AnchorTask.of(layout, subset, chunks[i], mode, keys[i], self.model_fingerprint)
                                    for i in missing])
            parts = [part if part is not None else self._cached_anchor(key) for part, key in zip(parts, keys)]
        for done, (chunk, key) in enumerate(zip(chunks, keys)):
            self.progress("anchor", done, len(chunks))
            if parts[done] is None:
                with self.phase("anchor"):
                    tensors, cost = with_cost(self.runner.counter, lambda: runner.anchor(mode, list(subset), chunk))
                parts[done] = replace(tensors, cost=cost)
                self._charged.add(key)
                self.cache.put(key, parts[done].named())
            else:
                self._found(key, parts[done].cost)
        self.progress("anchor", len(chunks), len(chunks))
        merged = AnchorTensors.merge(mode, parts)
        self._exact.setdefault(tuple(int(i) for i in subset), on_all_rows(merged.scores, rows, len(self.queries)))
        with self.phase("estimate"):
            estimator = AnchorEstimator(list(subset), merged, layout.demo_ids, self.runner.embed.weight,
                                        self.layout.gold[rows], query_demo=self.query_demo[rows],
                                        rows=torch.tensor(rows, dtype=torch.long), n_queries=len(self.queries))
        return estimator

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """[N, d] mean-pooled hidden states of the model for each text."""
        return self.runner.embed_texts(self.tokenizer, texts)

    # ---------- sampling, within the constraints on a set ----------
    def random_subsets(self, count: int) -> torch.Tensor:
        """[count, k] distinct demos per row, in random slot order (each row keeps min_per_label)."""
        return torch.from_numpy(np.stack([self.random_subset() for _ in range(count)])).long()

    def random_subset(self) -> np.ndarray:
        """[k] distinct demos, in random order: min_per_label of each label drawn first, the rest from the others."""
        if self.min_per_label == 0:
            return self.rng.choice(self.n, self.k, replace=False)
        labels = self.demo_label.numpy()
        chosen = [int(i) for label in range(self.layout.n_options)
                  for i in self.rng.choice(np.flatnonzero(labels == label), self.min_per_label, replace=False)]
        rest = np.setdiff1d(np.arange(self.n), chosen)
        chosen += [int(i) for i in self.rng.choice(rest, self.k - len(chosen), replace=False)]
        return self.rng.permutation(np.array(chosen))

    def allowed(self, subsets: torch.Tensor) -> torch.Tensor:
        """subsets [S, k] -> [S] bool: the set holds min_per_label demos of every label."""
        if self.min_per_label == 0:
            return torch.ones(subsets.shape[0], dtype=torch.bool)
        labels = self.demo_label[subsets]  # [S, k]
        counts = torch.stack([(labels == o).sum(1) for o in range(self.layout.n_options)], dim=1)  # [S, O]
        return (counts >= self.min_per_label).all(1)

    def top_k(self, scores: np.ndarray) -> list[int]:
        """The k best demos by ``scores`` (best last, as retrieval.top_k_ascending) that keep min_per_label: each
        label's best min_per_label first, then the best of the rest."""
        if self.min_per_label == 0:
            return top_k_ascending(scores, self.k)
        order = [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))]  # best first, ties by index
        labels = self.demo_label.tolist()
        chosen = [i for label in range(self.layout.n_options)
                  for i in [j for j in order if labels[j] == label][:self.min_per_label]]
        chosen += [i for i in order if i not in set(chosen)][:self.k - len(chosen)]
        return sorted(chosen, key=order.index, reverse=True)

    def balanced_subset(self) -> list[int]:
        """k demos cycling over the labels (shuffled within and across labels), in random slot order."""
        outputs = [self.layout.demo_outputs[i] for i in range(self.n)]
        by_label: dict[str, list[int]] = {}
        for index in self.rng.permutation(self.n):
            by_label.setdefault(outputs[index], []).append(int(index))
        labels = sorted(by_label)
        self.rng.shuffle(labels)
        chosen: list[int] = []
        while len(chosen) < self.k:
            for label in labels:
                if by_label[label] and len(chosen) < self.k:
                    chosen.append(by_label[label].pop())
        return [chosen[i] for i in self.rng.permutation(self.k)]
