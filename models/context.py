"""What one selection job holds: the layout, the model runner, cached anchors, memoised exact runs, timers."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from .cache import TensorCache
from .data import Example, InputError
from .estimate import AnchorEstimator
from .inference import ModelRunner
from .layout import Layout
from .outcome import on_all_rows
from .tasks import anchor_task

ANCHOR_MODES = ("label-groups", "per-query", "mean-loss")


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


class SelectionContext:
    def __init__(self, runner: ModelRunner, layout: Layout, pool: list[Example], queries: list[Example], k: int,
                 seed: int, params: dict, cache: TensorCache, model_fingerprint: str, tokenizer,
                 progress: Callable[[str, int, int], None], anchor_chunk: int = 32,
                 anchor_runner: Callable[[list[dict]], None] | None = None, query_demo: list[int] | None = None,
                 compact_prompts: bool = False):
        self.runner = runner
        self.tokenizer = tokenizer
        self.pool_inputs = [example.input for example in pool]
        self.query_inputs = [example.input for example in queries]
        self.layout = layout
        self.k = k
        self.n = layout.demo_ids.shape[0]
        self.queries = list(range(len(layout.query_ids)))
        # [Q] pool index of each query row that is a pool demo (params.pool_queries), -1 for the user's queries.
        # A pool demo is scored as a query only for prompts it is not in: the objective of a subset S is the
        # mean loss over visible(S).
        # compact_prompts: exact runs, anchors and the prompt returned use slots as wide as the subset's widest
        # demo, not the pool's (whose width grows with the pool's longest demo, and with it the anchor pass's
        # time and memory); an anchor's estimates read each demo's last that-many tokens.
        self.compact_prompts = compact_prompts
        self.query_demo = torch.tensor(query_demo if query_demo is not None else [-1] * len(self.queries),
                                       dtype=torch.long)
        self.rng = np.random.default_rng(seed)
        self.params = params
        self.cache = cache
        self.model_fingerprint = model_fingerprint
        self.progress = progress
        self.anchor_chunk = anchor_chunk
        self.anchor_runner = anchor_runner  # optional: fans anchor tasks out to other workers
        self.timings: dict[str, float] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.explored = 0  # subsets whose outcome was estimated or run
        self.diagnostic_passes = 0  # forward-equivalents spent on diagnostics only
        self._exact: dict[tuple[int, ...], torch.Tensor] = {}
        self._exact_rows: dict[tuple[int, ...], dict[int, torch.Tensor]] = {}  # subset -> query row -> scores [O]
        self._queries_digest = hashlib.sha256(json.dumps(
            [layout.query_ids, layout.gold.tolist()], separators=(",", ":")).encode()).hexdigest()

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
        before = self.runner.counter.as_dict()["forward_equivalent"]
        try:
            yield
        finally:
            self.diagnostic_passes += self.runner.counter.as_dict()["forward_equivalent"] - before

    def prompt_width(self, subset: list[int] | tuple[int, ...]) -> int:
        """Slot width of the prompt that is run and returned for ``subset``."""
        return self.layout.subset_width(list(subset)) if self.compact_prompts else self.layout.slot_width

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
            width = self.prompt_width(key)
            cache_key = self._key("exact", {"demos": [self.layout.demo_ids[i].tolist() for i in key],
                                            "queries": self._queries_digest, "width": width})
            cached = self.cache.get(cache_key)
            if cached is not None:
                self.cache_hits += 1
                self._exact[key] = cached["scores"]
            else:
                self.cache_misses += 1
                rows = self.visible(key)
                with self.phase("exact"):
                    self._exact[key] = on_all_rows(self.runner.exact_scores(list(key), rows, width=width), rows,
                                                   len(self.queries))
                self.cache.put(cache_key, {"scores": self._exact[key]})
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
                scores = self.runner.exact_scores(list(key), missing, width=self.prompt_width(key))
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
    def _key(self, kind: str, content: dict) -> str:
        """Cache key: content hash of everything the cached tensors depend on."""
        content = {"v": 1, "model": self.model_fingerprint, "layout": self.layout.fingerprint(), **content}
        return f"{kind}:" + hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()

    def anchor_key(self, subset: list[int], queries: list[int], mode: str) -> str:
        return self._key("anchor", {
            "mode": mode, "anchor": [self.layout.demo_ids[i].tolist() for i in subset],
            "width": self.prompt_width(subset),
            "queries": [self.layout.query_ids[q] for q in queries],
            "gold": [int(self.layout.gold[q]) for q in queries],
        })

    def anchor(self, subset: list[int], mode: str = "mean-loss") -> AnchorEstimator:
        """Anchor quantities at ``subset`` (from the cache when present), in query chunks, taken in the prompt that
        is run (``prompt_width``): the anchor pass is that prompt's exact run (memoised as such), and its scores
        are the zero-order term."""
        if mode not in ANCHOR_MODES:
            raise InputError("params.anchor_mode", f"must be one of {list(ANCHOR_MODES)}, not {mode!r}")
        layout = self.layout.narrowed(self.prompt_width(subset))
        runner = self.runner if layout is self.layout else ModelRunner(
            self.runner.model, layout, batch_size=self.runner.batch_size, checkpoint=self.runner.checkpoint,
            counter=self.runner.counter)
        rows = self.visible(subset)
        chunks = [rows[i:i + self.anchor_chunk] for i in range(0, len(rows), self.anchor_chunk)]
        keys = [self.anchor_key(subset, chunk, mode) for chunk in chunks]
        parts = [self.cache.get(key) for key in keys]
        self.cache_hits += sum(part is not None for part in parts)
        self.cache_misses += sum(part is None for part in parts)
        missing = [i for i, part in enumerate(parts) if part is None]
        self.progress("anchor", 0, len(chunks))  # also the cancellation checkpoint
        if self.anchor_runner is not None and len(missing) > 1:
            # other workers compute chunks into the shared cache; whatever is not there after, runs here
            with self.phase("anchor"):
                self.anchor_runner([anchor_task(layout, subset, chunks[i], mode, keys[i], self.model_fingerprint)
                                    for i in missing])
            parts = [part if part is not None else self.cache.get(key) for part, key in zip(parts, keys)]
        for done, (chunk, key) in enumerate(zip(chunks, keys)):
            self.progress("anchor", done, len(chunks))
            if parts[done] is None:
                with self.phase("anchor"):
                    parts[done] = runner.anchor(mode, list(subset), chunk)
                self.cache.put(key, parts[done])
        self.progress("anchor", len(chunks), len(chunks))
        merged = {"scores": torch.cat([p["scores"] for p in parts])}
        if mode == "per-query":
            merged.update({name: torch.cat([p[name] for p in parts]) for name in ("grad_margins", "reference", "row_count")})
            merged["row_of_query"] = torch.arange(len(rows))
        elif mode == "label-groups":
            merged.update({name: torch.stack([p[name] for p in parts]).sum(0) for name in ("grad_margins", "row_count")})
            merged.update({name: torch.cat([p[name] for p in parts]) for name in ("reference", "row_of_query")})
        else:
            merged["grad_loss_sum"] = torch.stack([p["grad_loss_sum"] for p in parts]).sum(0)
        # the anchor pass ran the prompt exactly
        self._exact.setdefault(tuple(int(i) for i in subset), on_all_rows(merged["scores"], rows, len(self.queries)))
        with self.phase("estimate"):
            estimator = AnchorEstimator(list(subset), merged, layout.demo_ids, self.runner.embed.weight,
                                        self.layout.gold[rows], query_demo=self.query_demo[rows],
                                        rows=torch.tensor(rows, dtype=torch.long), n_queries=len(self.queries))
        return estimator

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """[N, d] mean-pooled hidden states of the model for each text."""
        return self.runner.embed_texts(self.tokenizer, texts)

    # ---------- sampling ----------
    def random_subsets(self, count: int) -> torch.Tensor:
        """[count, k] distinct demos per row, in random slot order."""
        return torch.from_numpy(np.stack([self.rng.choice(self.n, self.k, replace=False) for _ in range(count)])).long()

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
