"""What one selection job holds: the problem, and its ledger, stats, exact runs and anchors (models/ledger.py,
models/runs.py), with sampling within the constraints on a set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .cache import TensorCache
from .constraints import check_label_counts
from .data import Example
from .inference import ModelRunner
from .layout import Layout
from .ledger import Ledger, Stats
from .retrieval import top_k_ascending
from .runs import AnchorService, CacheKeys, ExactRuns
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


class SelectionContext:
    """What a method works with on one job: the problem (layout, pool, queries, k), and its parts by concern, each
    reached through methods: ``ledger`` (passes: max_passes, reserves, diagnostics, cached work), ``stats``
    (timings, cache hits, sets explored), ``runs`` (exact runs, memoised and cached) and ``anchors`` (anchor
    passes, cached, fanned out), plus sampling with the job's generator within the constraints on a set."""

    def __init__(self, problem: SelectionProblem, model: ModelAccess, seed: int,
                 progress: Callable[[str, int, int], None]):
        """``progress(phase, done, total)`` is called as work advances (also the cancellation checkpoint)."""
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
        self.progress = progress
        self.anchor_chunk = model.anchor_chunk
        self.stats = Stats()
        self.ledger = Ledger(self.runner, len(self.queries))
        self.runs = ExactRuns(self.runner, layout, model.cache, CacheKeys(model.fingerprint, layout), self.ledger,
                              self.stats, self.visible, progress)
        self.anchors = AnchorService(self.runs, self.query_demo, model.anchor_chunk, model.anchor_runner)

    # ---------- what methods call most, by name (each part's own methods) ----------
    def phase(self, name: str):
        return self.stats.phase(name)

    def count_explored(self, subsets: int) -> None:
        self.stats.explore(subsets)

    @property
    def explored(self) -> int:
        return self.stats.explored

    def diagnostic(self):
        return self.ledger.diagnostic()

    def passes_left(self) -> float:
        return self.ledger.passes_left()

    def exact_runs_left(self) -> float:
        return self.ledger.exact_runs_left()

    def anchor_cost(self, mode: str) -> int:
        return self.ledger.anchor_cost(mode)

    def anchors_left(self, mode: str) -> float:
        return self.ledger.anchors_left(mode)

    def work(self) -> int:
        return self.ledger.work()

    def exact(self, subset: list[int]) -> torch.Tensor:
        return self.runs.exact(subset)

    def exact_rows(self, subset: list[int], rows: list[int]) -> torch.Tensor:
        return self.runs.exact_rows(subset, rows)

    def exact_many(self, subsets: list[list[int]], label: str = "exact") -> list[torch.Tensor]:
        return self.runs.exact_many(subsets, label)

    def anchor(self, subset: list[int], mode: str = "mean-loss"):
        return self.anchors.anchor(subset, mode)

    def visible(self, subset: list[int]) -> list[int]:
        """The query rows scored for ``subset``: all, except pool demos that are in it."""
        members = {int(i) for i in subset}
        return [q for q in self.queries if int(self.query_demo[q]) not in members]

    def sample_rows(self, size: int, exclude: list[int] = ()) -> list[int]:
        """``size`` query rows, label-stratified, drawn with the job's generator, outside ``exclude`` while enough
        rows are left there (else from all rows); all of them if fewer."""
        excluded = set(exclude)
        pool = [q for q in self.queries if q not in excluded]
        if len(pool) < size:
            pool = self.queries
        gold = self.layout.gold[pool].numpy()
        return [pool[i] for i in stratified_rows(gold, min(size, len(pool)), self.rng)]

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
