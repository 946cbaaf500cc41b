"""The model work of one selection job, memoised and cached by content: exact runs of sets (ExactRuns) and anchor
passes (AnchorService, which may fan chunks out to other workers). Both charge the job's Ledger and count in its
Stats (models/ledger.py); the cache keys are CacheKeys'."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Callable

import torch

from .anchor import ANCHOR_MODES, AnchorTensors
from .cache import TensorCache, content_key, through
from .data import InputError
from .estimate import AnchorEstimator
from .inference import ModelRunner, with_cost
from .layout import Layout
from .ledger import Ledger, Stats
from .outcome import on_all_rows
from .tasks import AnchorTask

Progress = Callable[[str, int, int], None]


class CacheKeys:
    """Content hashes of everything a cached tensor depends on: the model, the layout, the demos and queries."""

    def __init__(self, fingerprint: str, layout: Layout):
        self.fingerprint = fingerprint
        self.layout = layout
        self._queries_digest = hashlib.sha256(json.dumps(
            [layout.query_texts, layout.gold.tolist()], separators=(",", ":")).encode()).hexdigest()

    def key(self, namespace: str, content: dict) -> str:
        return content_key(namespace, {"v": 3, "model": self.fingerprint, "layout": self.layout.fingerprint(), **content})

    def exact(self, subset: tuple[int, ...]) -> str:
        return self.key("exact", {"demos": [self.layout.demo_texts[i] for i in subset], "queries": self._queries_digest})

    def prompt(self) -> str:
        """Every query row of the layout after all of its demos, in pool order (Engine.scores: one prompt's run)."""
        return self.key("prompt", {"demos": self.layout.demo_texts, "queries": self._queries_digest})

    def exact_rows(self, subset: tuple[int, ...], rows: list[int]) -> str:
        return self.key("exact-rows", {"demos": [self.layout.demo_texts[i] for i in subset], "rows": rows,
                                       "queries": self._queries_digest})

    def anchor(self, subset: list[int], queries: list[int], mode: str) -> str:
        layout = self.layout
        return self.key("anchor", {
            "mode": mode, "width": layout.width, "anchor": [layout.demo_texts[i] for i in subset],
            "queries": [layout.query_texts[q] for q in queries],
            "gold": [int(layout.gold[q]) for q in queries],
        })


class ExactRuns:
    """Exact option scores of sets on the job's query rows, memoised per set (and per row) and cached by content."""

    def __init__(self, runner: ModelRunner, layout: Layout, cache: TensorCache, keys: CacheKeys, ledger: Ledger,
                 stats: Stats, visible: Callable[[list[int]], list[int]], progress: Progress):
        self.runner, self.layout, self.cache, self.keys = runner, layout, cache, keys
        self.ledger, self.stats, self.visible, self.progress = ledger, stats, visible, progress
        self.n_queries = len(layout.query_ids)
        self._exact: dict[tuple[int, ...], torch.Tensor] = {}
        self._exact_rows: dict[tuple[int, ...], dict[int, torch.Tensor]] = {}  # subset -> query row -> scores [O]

    def exact(self, subset: list[int]) -> torch.Tensor:
        """Exact option scores [Q, O] of ``subset`` on the query set, NaN on rows it hides (memoised, and
        cached by content)."""
        key = tuple(int(i) for i in subset)
        if key not in self._exact:
            rows = self.visible(key)
            self._exact[key] = self._run(self.keys.exact(key), lambda: on_all_rows(
                self.runner.exact_scores(list(key), rows), rows, self.n_queries))
        return self._exact[key]

    def remember(self, subset: list[int], scores: torch.Tensor) -> None:
        """``scores`` [Q, O] are the subset's exact run (an anchor pass's), unless one is memoised already."""
        self._exact.setdefault(tuple(int(i) for i in subset), scores)

    def exact_rows(self, subset: list[int], rows: list[int]) -> torch.Tensor:
        """Exact option scores [len(rows), O] of ``subset`` on query ``rows`` only, NaN on rows it hides. Runs just
        the rows not yet run for this subset in this job (a full exact run, memoised, answers every row); each such
        run is cached by content, so the same request again (a retry, another job) finds it."""
        key = tuple(int(i) for i in subset)
        if key in self._exact:
            return self._exact[key][rows]
        known = self._exact_rows.setdefault(key, {})
        visible = set(self.visible(key))
        missing = [q for q in rows if q not in known and q in visible]
        if missing:
            scores = self._run(self.keys.exact_rows(key, missing), lambda: self.runner.exact_scores(list(key), missing))
            known.update(zip(missing, scores))
        hidden = torch.full((self.layout.n_options,), float("nan"))
        return torch.stack([known.get(q, hidden) for q in rows])

    def _run(self, cache_key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """compute()'s scores, or its entry in the cache, charged to the ledger at what it cost."""
        def run() -> dict[str, torch.Tensor]:
            with self.stats.phase("exact"):
                scores, cost = with_cost(self.runner.counter, compute)
            return {"scores": scores, "cost": cost}

        entry, found = through(self.cache, cache_key, run, self.stats)
        if found:
            self.ledger.found(cache_key, entry.get("cost"))
        else:
            self.ledger.computed(cache_key)
        return entry["scores"]

    def exact_many(self, subsets: list[list[int]], label: str = "exact") -> list[torch.Tensor]:
        results = []
        for done, subset in enumerate(subsets):
            self.progress(label, done, len(subsets))
            results.append(self.exact(subset))
        self.progress(label, len(subsets), len(subsets))
        return results


class AnchorService:
    """Anchor passes at sets (from the cache when present), in query chunks: with ``fan_out``, other workers
    compute missing chunks into the shared cache first (workers/anchors.py); what is still missing runs here."""

    def __init__(self, runs: ExactRuns, query_demo: torch.Tensor, chunk: int,
                 fan_out: Callable[[list[AnchorTask]], None] | None):
        self.runs, self.query_demo, self.chunk, self.fan_out = runs, query_demo, chunk, fan_out

    def _cached(self, key: str) -> AnchorTensors | None:
        tensors = self.runs.cache.get(key)
        return None if tensors is None else AnchorTensors.from_named(tensors)

    def anchor(self, subset: list[int], mode: str = "mean-loss") -> AnchorEstimator:
        """Anchor quantities at ``subset``, taken in the natural prompt that is run for it. Its scores are that
        prompt's exact outcome, memoised as the subset's exact run."""
        if mode not in ANCHOR_MODES:
            raise InputError("params.anchor_mode", f"must be one of {list(ANCHOR_MODES)}, not {mode!r}")
        runs = self.runs
        rows = runs.visible(subset)
        chunks = [rows[i:i + self.chunk] for i in range(0, len(rows), self.chunk)]
        keys = [runs.keys.anchor(subset, chunk, mode) for chunk in chunks]
        parts = [self._cached(key) for key in keys]
        runs.stats.looked_up(sum(part is not None for part in parts), sum(part is None for part in parts))
        runs.progress("anchor", 0, len(chunks))  # also the cancellation checkpoint
        parts = self._fan_out(subset, chunks, keys, parts, mode)
        for done, (chunk, key) in enumerate(zip(chunks, keys)):
            runs.progress("anchor", done, len(chunks))
            if parts[done] is None:
                with runs.stats.phase("anchor"):
                    tensors, cost = with_cost(runs.runner.counter, lambda: runs.runner.anchor(mode, list(subset), chunk))
                parts[done] = replace(tensors, cost=cost)
                runs.ledger.computed(key)
                runs.cache.put(key, parts[done].named())
            else:
                runs.ledger.found(key, parts[done].cost)
        runs.progress("anchor", len(chunks), len(chunks))
        merged = AnchorTensors.merge(mode, parts)
        runs.remember(subset, on_all_rows(merged.scores, rows, runs.n_queries))
        with runs.stats.phase("estimate"):
            estimator = AnchorEstimator(list(subset), merged, runs.layout.demo_ids, runs.runner.embed.weight,
                                        runs.layout.gold[rows], query_demo=self.query_demo[rows],
                                        rows=torch.tensor(rows, dtype=torch.long), n_queries=runs.n_queries)
        return estimator

    def _fan_out(self, subset: list[int], chunks: list[list[int]], keys: list[str], parts: list, mode: str) -> list:
        """Other workers compute the missing chunks (when more than one is missing) into the shared cache."""
        missing = [i for i, part in enumerate(parts) if part is None]
        if self.fan_out is None or len(missing) <= 1:
            return parts
        runs = self.runs
        with runs.stats.phase("anchor"):
            self.fan_out([AnchorTask.of(runs.layout, subset, chunks[i], mode, keys[i], runs.keys.fingerprint)
                          for i in missing])
        return [part if part is not None else self._cached(key) for part, key in zip(parts, keys)]
