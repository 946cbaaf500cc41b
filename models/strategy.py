"""params.strategy "auto": which prompt a request gets, decided on examples the search never scored.

A request can be answered with a searched set of demos (strategy "set"), with each query's k nearest pool demos
(per-query retrieval, no search: "topk-embed" by the model's own mean-pooled hidden states, "topk-sentence" by a
sentence-embedding model, "bm25" by words) or with both: the set's first k - k//2 demos shared, then each query's
k//2 nearest other pool demos by the model's embedding ("hybrid") or by the sentence model ("hybrid-sentence");
the hybrids are auto's candidates only: they reuse the searched set, no search of their own. Which is best depends
on the task and the model (bench/FINDINGS.md), so "auto" measures it, among the prompts of params.compare (by
default set, topk-embed, hybrid, topk-sentence and hybrid-sentence):

    if gate(start, retrievals on the queries): return it   # params.gate: no search, no held-out check
    set = search(queries)                                  # the usual gradient search, on every query
    held_out = balanced sample of the pool demos outside the set (params.validation of them)
    checks = [check(name, scores of each strategy's prompts on held_out) for each strategy]
    chosen = best(checks)                                  # accuracy; a tie goes to the earlier strategy,
                                                           # the sentence model's only by a clear win

The held-out demos were candidates of the search but never its queries, so the set's figure on them is not fitted;
retrieval never looks at labels, and a held-out demo never retrieves itself. Every strategy runs on the same
held-out demos, so the report gives each one's interval and the chosen minus the runner-up as a paired interval.
They stand for the queries as far as the pool resembles them.

The gate (params.gate, with at least MIN_GATE_QUERIES queries) comes first: the search's start (its label-balanced
first set, run through the search's own cached exact runs; a cold search's, also where the search resumes a grown
pool's parent, whose set was fitted to the queries) and the per-query retrievals run on the queries themselves
(params.gate_queries of them at most, drawn at random), which neither is fitted to; when the better retrieval answers
a params.gate share of those queries more than the start, the search could not close the gap often enough to pay for
itself (bench/experiments/README.md), and auto returns it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch

from iclsel.contract import HYBRIDS, MIN_GATE_QUERIES, RETRIEVALS, GradientParams, Params, majority_last

from .cache import content_key, through
from .context import stratified_rows
from .data import Example, InputError
from .defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE
from .inference import ModelRunner, PassCounter, layer_share
from .layout import resolve_options
from .ledger import Stats
from .outcome import query_losses, summarize
from .plan import Plan, Work, embeddings, row_weight
from .retrieval import bm25_similarity, cosine_similarity, top_k_ascending

SENTENCE = "topk-sentence"  # per-query retrieval by the sentence-embedding model (Engine.sentences)
PER_QUERY = RETRIEVALS  # strategies that retrieve per query instead of searching
HYBRID = "hybrid"  # auto's candidate: the searched set's head shared, then each query's nearest by embedding
# the candidates whose retrieval is the sentence model's: returned only when the check beats every other candidate
# by this share of the validation queries (2 of the default 32): its retrieval is 6 points under topk-embed on sms
# (dev seeds) and a one-answer win on 32 demos is a coin toss (bench/experiments/README.md: a sentence-embedding
# model for retrieval; a hybrid whose neighbours come from the sentence model)
BY_SENTENCE = (SENTENCE, *(name for name, by in HYBRIDS.items() if by == SENTENCE))
SENTENCE_MARGIN = 1 / 16
BOOTSTRAP_DRAWS = 2000
SENTENCE_CALIBRATION = 32  # pool inputs a plan times the sentence model on (one of its batches)
MIN_HELD_OUT = 4  # auto needs at least this many pool demos outside the set to validate on


def gate_rows(queries: int, size: int | None, seed: int) -> list[int]:
    """The rows of the queries the gate runs on: all of them (``size`` None or at least their number), or a random
    ``size`` of them (uniform, so that the gate's figures keep the queries' label mix), in query order."""
    if size is None or queries <= size:
        return list(range(queries))
    rng = np.random.default_rng([seed, 0x6A7E])
    return sorted(rng.choice(queries, size=size, replace=False).tolist())


def held_out(pool_gold: np.ndarray, chosen: list[int], size: int, seed: int) -> list[int]:
    """pool_gold [n] (-1: a label outside the options) -> up to ``size`` pool indices outside ``chosen`` with a
    label among the options, label-balanced where the labels allow, in pool order."""
    outside = np.array([i for i in range(len(pool_gold)) if i not in set(chosen) and pool_gold[i] >= 0],
                       dtype=np.int64)
    rng = np.random.default_rng([seed, 0x5EED])
    rows = stratified_rows(pool_gold[outside], min(size, len(outside)), rng)
    return sorted(outside[rows].tolist())


@dataclass
class Check:
    """One strategy's prompts on the validation queries."""
    strategy: str
    correct: np.ndarray  # [V] 1.0 where the prompt's top option is the gold one
    loss: np.ndarray  # [V] -log p(gold option)

    @classmethod
    def of(cls, strategy: str, scores: torch.Tensor, gold: torch.Tensor) -> "Check":
        """scores [V, O] option log-probabilities, gold [V]."""
        correct = (scores.argmax(-1) == gold).double().numpy()
        return cls(strategy, correct, query_losses(scores.double(), gold).numpy())

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    def rank_key(self) -> float:
        return -self.accuracy


def choose(checks: list[Check], seed: int) -> tuple[Check, dict]:
    """The best check (highest accuracy; the earlier on a tie: on the dev seeds breaking ties by the held-out
    loss changed two picks, one 6.5 points worse on the test queries, one 1 point better; bench/experiments; the
    sentence model's candidates, BY_SENTENCE, only by a clear win over the best of the others, SENTENCE_MARGIN) and
    the report: each check's accuracy with a 95% bootstrap interval over the validation queries, the chosen first,
    and the chosen minus the next as a paired one (the same resampled queries for both)."""
    ranked = sorted(checks, key=Check.rank_key)  # stable: the earlier of equals stays first
    others = [c for c in ranked if c.strategy not in BY_SENTENCE]
    if others:
        clear = [c for c in ranked if c.strategy in BY_SENTENCE and clear_win(c, others[0])]
        best = clear[0] if clear else others[0]
        ranked = [best, *(c for c in ranked if c is not best)]
    return ranked[0], report_of(ranked, seed)


def report_of(ranked: list[Check], seed: int) -> dict:
    """Each check's accuracy with a 95% bootstrap interval over its queries, in this order, and the first minus the
    second as a paired interval (the same resampled queries for both)."""
    best = ranked[0]
    rng = np.random.default_rng([seed, 0xB007])
    n = len(best.correct)
    draws = rng.integers(0, n, size=(BOOTSTRAP_DRAWS, n))  # [B, V] resampled validation queries
    report = {"checks": [{"strategy": c.strategy, "accuracy": c.accuracy,
                          "accuracy_ci95": _interval(c.correct[draws].mean(1)),
                          "loss": float(c.loss.mean())} for c in ranked],
              "margin_ci95": None}
    if len(ranked) > 1:
        report["margin_ci95"] = _interval((best.correct - ranked[1].correct)[draws].mean(1))
    return report


def gate(start: Check, retrievals: list[Check], share: float) -> Check | None:
    """The retrieval auto returns without a search, or None: the better of ``retrievals`` (the first, unless a
    sentence-model one wins clearly: clear_win) when it answers at least ``share`` of the queries more than the
    search's ``start``."""
    best = retrievals[0]
    for check in retrievals[1:]:
        if check.strategy in BY_SENTENCE and clear_win(check, best):
            best = check
    lead = best.correct.sum() - start.correct.sum()
    return best if lead >= share * len(start.correct) - 1e-9 else None


def clear_win(check: Check, other: Check) -> bool:
    """check answers at least SENTENCE_MARGIN of the validation queries more than other does."""
    return check.correct.sum() - other.correct.sum() >= math.ceil(SENTENCE_MARGIN * len(check.correct) - 1e-9)


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def embedding_key(fingerprint: str, texts: list[str], embedding: str = "mean-last-hidden") -> str:
    """The cache key of these texts' embeddings by a model (the language model's mean-pooled last hidden state, no
    special tokens, or "mean-layer-<l>": after decoder layer l; or embedding="sentence": the sentence model's)."""
    return content_key("embed", {"v": 1, "model": fingerprint, "embedding": embedding, "texts": texts})


class Neighbours:
    """Each text's nearest pool demos, by "bm25" (no model), "topk-embed" (cosine of the language model's mean-pooled
    hidden states) or "topk-sentence" (cosine of the sentence model's embeddings). The pool is embedded once per
    embedding, on first use, and the texts asked about once, unless the engine's cache holds those embeddings (an
    earlier request on the same texts and model). What runs is counted on ``counter``: the language model's rows as
    passes, the sentence model's texts as sentence_texts (not model passes); like the passes a request reports for
    cached anchors, it counts only what ran. ``layer``: topk-embed pools the output of that decoder layer instead of
    the last hidden state (auto's candidates: LoadedModel.auto_layer), a pass stopped there counted as its share."""

    def __init__(self, engine: Any, pool: list[Example], counter: PassCounter, checkpoint=lambda: None,
                 stats: Stats | None = None, vote_order: tuple[str, ...] = (), layer: int | None = None):
        self.engine, self.pool, self.counter, self.checkpoint = engine, pool, counter, checkpoint
        self.layer = layer
        self.vote_order = vote_order  # the retrievals whose k nearest come in vote order (majority_last); the
        # others in similarity order (the nearest last)
        self.stats = stats or Stats()  # the cache's hits and misses
        self._runner: ModelRunner | None = None
        self._pool_vectors: dict[str, torch.Tensor] = {}  # by -> [n, d]
        self._text_vectors: dict[str, dict[str, torch.Tensor]] = {}  # by -> text -> [d]: each text embedded once

    def similarity(self, texts: list[str], by: str, itself: list[int] | None = None) -> np.ndarray:
        """[T, n] similarity of each text to each pool demo (``itself``: the texts are these pool demos, whose
        embeddings are the pool's)."""
        if by == "bm25":
            return bm25_similarity([d.input for d in self.pool], texts)
        if by not in self._pool_vectors:
            self._pool_vectors[by] = self._cached([d.input for d in self.pool], by)
        pool_vectors = self._pool_vectors[by]
        vectors = pool_vectors[itself] if itself is not None else self._embed(texts, by)
        return cosine_similarity(pool_vectors, vectors)

    def _embed(self, texts: list[str], by: str) -> torch.Tensor:
        """[T, d] the texts' embeddings by the language model ("topk-embed") or the sentence model; a text this
        request embedded already (the gate's queries, then the answer's) is not run again."""
        known = self._text_vectors.setdefault(by, {})
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            known.update(zip(missing, self._cached(missing, by)))
        return torch.stack([known[text] for text in texts])

    def _cached(self, texts: list[str], by: str) -> torch.Tensor:
        """[T, d] these texts' embeddings: from the engine's cache (an earlier request embedded the same texts by the
        same model), else run and cached (one entry, all or nothing)."""
        key = (embedding_key(self.engine.sentences.fingerprint, texts, "sentence") if by == SENTENCE
               else embedding_key(self.engine.model.fingerprint, texts, "mean-last-hidden" if self.layer is None
                                  else f"mean-layer-{self.layer}"))
        return through(self.engine.cache, key, lambda: {"vectors": self._run(texts, by)}, self.stats)[0]["vectors"]

    def _run(self, texts: list[str], by: str) -> torch.Tensor:
        if by == SENTENCE:
            self.checkpoint()
            self.counter.sentence_texts += len(texts)
            return self.engine.sentences.embed(texts)
        if self._runner is None:
            layout = self.engine.layout(self.pool, self.pool[:1], 1, None, DEFAULT_TEMPLATE, DEFAULT_SEPARATOR)
            self._runner = self.engine._runner(layout, self.checkpoint, counter=self.counter)
        return self._runner.embed_texts(self.engine.model.tokenizer, texts, self.layer)

    def nearest(self, texts: list[str], by: str, k: int, itself: list[int] | None = None,
                exclude: list[int] = ()) -> list[list[int]]:
        """Per text, the pool indices of its k nearest demos, best last; ``itself``: per text, the pool index of
        the demo it is (never its own neighbour); ``exclude``: pool indices no text gets (a prompt's shared demos)."""
        if not texts:
            return []
        similarity = self.similarity(texts, by, itself)
        for row, demo in enumerate(itself or []):
            similarity[row, demo] = -np.inf
        similarity[:, list(exclude)] = -np.inf
        nearest = [top_k_ascending(row, k) for row in similarity]
        if by in self.vote_order:
            labels = [d.output for d in self.pool]
            nearest = [majority_last(ids, labels) for ids in nearest]
        return nearest


def sentence_seconds(engine: Any, pool: list[Example], texts: float) -> float:
    """Seconds the sentence model takes for ``texts`` texts (not passes of the language model), at its rate on up
    to SENTENCE_CALIBRATION of the pool's inputs (the faster of two runs: the first also warms up)."""
    if texts == 0:
        return 0.0
    sample = [demo.input for demo in pool[:SENTENCE_CALIBRATION]]
    best = math.inf
    for _ in range(2):
        started = time.perf_counter()
        engine.sentences.embed(sample)
        best = min(best, time.perf_counter() - started)
    return texts * best / len(sample)


def strategy_for(request, params: Params) -> tuple[str, str | None]:
    """(the strategy a request runs, why: None for a method without strategies). Auto validates only what
    per-query retrieval can also honour; otherwise it runs the set search and says why."""
    strategy = getattr(params, "strategy", None)
    if strategy is None:
        return "set", None
    unmet = [name for name, given in (("min_per_label", request.min_per_label), ("max_prompt_tokens",
             request.max_prompt_tokens), ("params.pool_queries", params.pool_queries),
             ("params.retrieve", params.retrieve)) if given]
    if strategy in PER_QUERY and unmet:
        raise InputError("params.strategy", f"{strategy!r} retrieves per query and cannot honour {unmet[0]}")
    if strategy == "auto":
        if unmet:
            return "set", f"{unmet[0]} (only the set search honours it)"
        if len(request.pool) - request.k < MIN_HELD_OUT:
            return "set", f"fewer than {MIN_HELD_OUT} pool demos outside the set to validate on"
        return "auto", "validation"
    return strategy, "request"


class Strategies:
    """A gradient request whose params.strategy is auto or per-query (PER_QUERY) -> the contract's result dict.

    auto: the set search (Engine._select_set, params.strategy "set": the same search, budget and set) runs on every
    query; each strategy's prompts then run exactly on held-out pool demos (module docstring), and the best is
    returned. Auto spends the search's passes, the pool's embeddings and the validation runs; a per-query win adds
    the embeddings of the queries and targets it returns neighbours for."""

    def __init__(self, engine: Any, request, params: GradientParams, progress, checkpoint):
        self.engine, self.request, self.params = engine, request, params
        self.progress, self.checkpoint = progress, checkpoint
        self.started = time.perf_counter()
        self.options = resolve_options(request.pool, request.queries, request.options)
        self.gold = np.array([self.options.index(q.output) for q in request.queries])
        self.pool_gold = np.array([self.options.index(d.output) if d.output in self.options else -1
                                   for d in request.pool])
        self.selecting = PassCounter(limit=request.max_passes)  # embeddings and validation runs
        self.diagnostic = PassCounter()  # the returned prompts run exactly on the queries (evaluate_selected)
        self.lookups = Stats()  # auto's own cache hits and misses (prompt scores, embeddings)
        # auto's topk-embed and hybrid embed at the model's auto_layer; the topk-embed strategy at the last layer
        self.neighbours = Neighbours(engine, request.pool, self.selecting, checkpoint, self.lookups,
                                     params.vote_order, engine.model.auto_layer if params.strategy == "auto" else None)
        self.timings: dict[str, float] = {}

    def select(self, strategy: str) -> dict:
        if strategy in PER_QUERY:
            return self._result(strategy, "request", None, None)
        request = self.request
        reserved = self._reserved()
        self.selecting.limit = reserved if request.max_passes is not None else None
        gated = {}
        if self._gate_retrievals:
            returned, gated = self._gate(reserved)
            if returned is not None:
                return self._result(returned, "gate", None, gated)
        searched = self.engine._select_set(self._search_request(reserved), self.progress, self.checkpoint)
        self.progress("validate", 0, self._candidates)
        validate_started = time.perf_counter()
        index = {d.id: i for i, d in enumerate(request.pool)}
        chosen = [index[d["id"]] for d in searched["selected"]]
        rows = held_out(self.pool_gold, chosen, self.params.validation, request.seed)
        validation = [request.pool[i] for i in rows]
        texts = [d.input for d in validation]
        checks = []
        for name in self._auto_candidates:
            if name == "set":
                checks.append(self._check("set", validation, [request.pool[i] for i in chosen]))
            elif name in HYBRIDS:
                shared = chosen[:request.k - self._hybrid_slots]
                nearest = self.neighbours.nearest(texts, HYBRIDS[name], self._hybrid_slots, itself=rows,
                                                  exclude=shared)
                checks.append(self._check(name, validation, [request.pool[i] for i in shared],
                                          [[request.pool[i] for i in ids] for ids in nearest]))
            else:
                nearest = self.neighbours.nearest(texts, name, request.k, itself=rows)
                checks.append(self._check(name, validation, [[request.pool[i] for i in ids] for ids in nearest]))
            self.progress("validate", len(checks), self._candidates)
        best, report = choose(checks, request.seed)
        self.timings["validate"] = time.perf_counter() - validate_started
        report.update(validation_queries=len(validation), **gated)
        return self._result(best.strategy, "validation", searched, report)

    def _gate(self, reserved: int) -> tuple[str | None, dict]:
        """params.gate: the search's start and each of _gate_retrievals on the queries -> (the retrieval to return
        without a search, or None; its report: each prompt's accuracy on the queries, the returned first)."""
        started = time.perf_counter()
        self.progress("gate", 0, 1)
        request = self.request
        queries = [request.queries[i] for i in self._gate_query_rows]
        # the start a cold search draws, also where the search resumes a grown pool's parent (warm_start): the
        # parent's set was fitted to these queries, and the gate compares prompts that none of them was fitted to
        start = self._search_request(reserved).model_copy(update={"queries": queries, "warm_start": None})
        scores = self.engine.start_scores(start, self.selecting, self.checkpoint)
        checks = [Check.of("start", scores, torch.tensor(self.gold[self._gate_query_rows]))]
        for name in self._gate_retrievals:
            nearest = self.neighbours.nearest([q.input for q in queries], name, request.k)
            checks.append(self._check(name, queries, [[request.pool[i] for i in ids] for ids in nearest]))
        returned = gate(checks[0], checks[1:], self.params.gate)
        self.timings["gate"] = time.perf_counter() - started
        self.progress("gate", 1, 1)
        ranked = [returned, *(c for c in checks if c is not returned)] if returned is not None else checks
        report = report_of(ranked, request.seed)
        if returned is None:  # the search follows: the gate's figures say why (strategy.gate)
            return None, {"gate": report["checks"]}
        return returned.strategy, {**report, "gate": report["checks"], "validation_queries": len(queries)}

    @property
    def _gate_retrievals(self) -> tuple[str, ...]:
        """The per-query retrievals the gate runs (those of params.compare, the language model's first), or none:
        params.gate null, or fewer than MIN_GATE_QUERIES queries."""
        if self.params.gate is None or len(self.request.queries) < MIN_GATE_QUERIES:
            return ()
        return tuple(name for name in ("topk-embed", SENTENCE) if name in self.params.compare)

    @property
    def _by_id(self) -> dict[str, Example]:
        return {d.id: d for d in self.request.pool}

    def _demos(self, ids: list[list[str]]) -> list[list[Example]]:
        by_id = self._by_id
        return [[by_id[i] for i in row] for row in ids]

    @cached_property
    def _layout(self):
        """The request's prompts laid out on its first query (what a row and a demo take)."""
        return self.engine.layout(self.request.pool, self.request.queries[:1], self.request.k, self.options,
                                  self.request.template, self.request.separator)

    @cached_property
    def _rows_per_query(self) -> int:
        """Forward rows one query takes (one, or one per option when an option has several tokens)."""
        return ModelRunner(self.engine.model.model, self._layout).rows_per_query

    def _validation_size(self) -> int:
        return min(self.params.validation, len(self.request.pool) - self.request.k)

    @property
    def _hybrid_slots(self) -> int:
        """A hybrid's per-query slots: k // 2 (none with k = 1: a hybrid would be the set or per-query retrieval)."""
        return self.request.k // 2

    @property
    def _auto_candidates(self) -> tuple[str, ...]:
        """The prompts auto checks, in order: params.compare, less the hybrids with k = 1."""
        return tuple(name for name in self.params.compare if name not in HYBRIDS or self._hybrid_slots)

    @property
    def _candidates(self) -> int:
        return len(self._auto_candidates)

    @property
    def _retrieval_texts(self) -> int:
        """The texts a retrieval answer embeds: the pool, and the queries and targets (each text once)."""
        asked = [q.input for q in self.request.queries] + list(self.request.targets)
        return len(self.request.pool) + len(set(asked))

    def _reserved(self) -> int:
        """The most auto spends besides the search: embeddings of the pool, the queries and the targets, every
        strategy's prompts on the held-out demos and the gate's prompts on the queries."""
        return round((self._gate_work() + self._check_work() + self._embeddings(self._retrieval_texts)).passes)

    @cached_property
    def _gate_query_rows(self) -> list[int]:
        """The rows of the queries the gate runs on (gate_rows: params.gate_queries of them at most)."""
        return gate_rows(len(self.request.queries), self.params.gate_queries, self.request.seed)

    def plan(self, strategy: str) -> Plan:
        """What select(strategy) will cost: the set search's own plan on the search rows, plus the embeddings and
        validation runs (the fewest: a set wins and only the pool and validation rows are embedded; the most:
        every embedding), plus the gate's runs and the returned prompts' exact run (with a gate, the fewest are a
        retrieval it returns: no search, and its prompts on the gate's queries ran already); its seconds price that
        work at the search's calibration (a per-query prompt is a model call of its own, a hybrid's row carries its
        own demos: _gate_work, _check_work) and add the sentence model's texts, timed on the pool
        (_sentence_seconds)."""
        request = self.request
        everything = self._retrieval_texts
        if strategy in PER_QUERY:
            embedded = everything if strategy == "topk-embed" else 0
            calibration = self.engine._plan_set(request.model_copy(update={"params": {
                **request.params, "strategy": "set", "rounds": 0}}))
            work = self._embeddings(embedded) + self._final(per_query=True)
            seconds = (work.seconds(calibration.seconds_per_pass, calibration.seconds_per_call)
                       + self._sentence_seconds(everything if strategy == SENTENCE else 0))
            passes = round(work.passes)
            return replace(calibration, estimated_passes=passes, passes_low=passes, passes_high=passes,
                           estimated_seconds=round(seconds, 3))
        searched = self.engine._plan_set(self._search_request(self._reserved()))
        gate_work = self._gate_work()
        checked = gate_work + self._check_work()
        fewest = checked + self._embeddings(len(request.pool)) + self._final(per_query=False)  # a set wins
        most = checked + self._embeddings(everything) + self._final(  # retrieval wins, where it is a candidate
            per_query=any(name in PER_QUERY for name in self._auto_candidates))
        # the sentence model's check embeds the pool (the held-out demos are pool demos); its answer, the queries and
        # the targets too: half of them expected, like the passes
        uses_sentences = any(name in BY_SENTENCE for name in self._auto_candidates)
        sentence_texts = (len(request.pool) + everything) / 2 if uses_sentences else 0
        low = searched.passes_low + round(fewest.passes)
        if self._gate_retrievals:  # the gate returns a retrieval: no search, no check; the pool and queries embedded
            embedded = len(request.pool) + len(self._gate_query_rows) if "topk-embed" in self._gate_retrievals else 0
            returned = self._final(True, known=len(self._gate_query_rows))  # the gate ran its prompts on its rows
            low = min(low, round((gate_work + self._embeddings(embedded) + returned).passes))
        own_seconds = sum(w.seconds(searched.seconds_per_pass, searched.seconds_per_call) for w in (fewest, most)) / 2
        return replace(searched, estimated_passes=searched.estimated_passes + round(fewest.passes + most.passes) // 2,
                       passes_low=low, passes_high=searched.passes_high + round(most.passes),
                       estimated_seconds=round(searched.estimated_seconds + own_seconds
                                               + self._sentence_seconds(sentence_texts), 3))

    def _gate_work(self) -> Work:
        """The gate's runs on its queries: the start's prompt (one prefix for all) and each retrieval's per-query
        prompts (each query's demos its own prefix: a model call each)."""
        if not self._gate_retrievals:
            return Work(0, 0)
        queries = len(self._gate_query_rows)
        rows = queries * self._rows_per_query
        return Work(rows, 1) + Work(rows, queries) * len(self._gate_retrievals)

    def _check_work(self) -> Work:
        """Every candidate's prompts on the held-out demos: the set's share one prefix, a hybrid's share the set's
        head and each row carries its own neighbours, a per-query retrieval's are a model call each."""
        held_out = self._validation_size()
        rows = held_out * self._rows_per_query
        own_demos = row_weight(self._layout, self._hybrid_slots)
        work = Work(0, 0)
        for name in self._auto_candidates:
            if name == "set":
                work += Work(rows, 1)
            elif name in HYBRIDS:
                work += Work(rows, 1, rows * own_demos)
            else:
                work += Work(rows, held_out)
        return work

    def _layer_of(self, by: str) -> dict:
        """retrieved's ``layer``: the decoder layer a topk-embed answer was embedded at (null: the last)."""
        return {"layer": self.neighbours.layer} if by == "topk-embed" else {}

    def _embeddings(self, texts: int) -> Work:
        """The language model's embeddings of ``texts`` texts, in the engine's batches (stopped at the neighbours'
        layer: that share of the layers)."""
        return embeddings(texts, self.engine.batch_size, layer_share(self.neighbours.layer, self.engine.model.n_layers))

    def _final(self, per_query: bool, known: int = 0) -> Work:
        """The returned prompts' exact run on the queries (params.evaluate_selected): one prefix for a set, a model
        call per query for per-query prompts; ``known`` queries' prompts ran already (Engine.scores' cache)."""
        if not self.params.evaluate_selected:
            return Work(0, 0)
        queries = len(self.request.queries) - known
        return Work(queries * self._rows_per_query, queries if per_query else 1)

    def _sentence_seconds(self, texts: float) -> float:
        return sentence_seconds(self.engine, self.request.pool, texts)

    def _search_request(self, reserved: int):
        """The set search's request, within the passes left (module docstring)."""
        request = self.request
        max_passes = None
        if request.max_passes is not None:
            max_passes = request.max_passes - reserved
            if max_passes < 1:
                raise InputError("max_passes", f"is too small for strategy 'auto': {reserved} passes go to "
                                               f"embeddings and validation besides the search")
        return request.model_copy(update={"max_passes": max_passes, "params": {
            **request.params, "strategy": "set", "evaluate_selected": False}})

    def _check(self, strategy: str, queries: list[Example], demos, context=None) -> Check:
        scores = self.engine.scores(demos, queries, self.options, self.request.template, self.request.separator,
                                    context, self.selecting, self.checkpoint, self.request.option_score, self.lookups)
        return Check.of(strategy, scores, torch.tensor([self.options.index(q.output) for q in queries]))

    def _result(self, chosen: str, by: str, searched: dict | None, report: dict | None) -> dict:
        """The contract's result for the chosen strategy (the search's demos, scores and diagnostics are kept
        when it ran, whatever won)."""
        request, k = self.request, self.request.k
        index = {d.id: i for i, d in enumerate(request.pool)}
        texts = [q.input for q in request.queries] + list(request.targets)
        retrieve_started = time.perf_counter()
        selected: list[Example] = []
        retrieved = None
        if chosen in PER_QUERY:
            retrieved = {"slots": k, "by": chosen, **self._layer_of(chosen),
                         **self._split_rows(self.neighbours.nearest(texts, chosen, k))}
        else:
            selected = [self._by_id[d["id"]] for d in searched["selected"]]
        if chosen in HYBRIDS:  # the set's head shared, then each query's and target's nearest other demos
            selected = selected[:k - self._hybrid_slots]
            per_query = self.neighbours.nearest(texts, HYBRIDS[chosen], self._hybrid_slots,
                                                exclude=[index[d.id] for d in selected])
            retrieved = {"slots": self._hybrid_slots, "by": HYBRIDS[chosen], **self._layer_of(HYBRIDS[chosen]),
                         **self._split_rows(per_query)}
        self.timings["retrieve"] = time.perf_counter() - retrieve_started
        exact = self._exact(selected, retrieved) if self.params.evaluate_selected else None
        layout = self._layout
        chosen_ids = [index[d.id] for d in selected]
        result = {
            "method": request.method, "k": k, "seed": request.seed, "options": self.options,
            "params": request.params,
            "selected": [d.to_dict() for d in selected],
            "prompt": {"text": layout.prefix_text(chosen_ids), "token_ids": layout.prefix_ids(chosen_ids),
                       "query_template": layout.template.split("{output}")[0].rstrip()},
            "retrieved": retrieved,
            "strategy": {"chosen": chosen, "by": by,
                         "search_queries": len(request.queries) if searched else 0,
                         "searched": [d["id"] for d in searched["selected"]] if searched else [],
                         "validation_queries": 0,
                         "checks": [], "margin_ci95": None, "gate": None, **(report or {})},
            "scores": searched["scores"] if searched else {d.id: 0.0 for d in request.pool},
            "estimate": searched["estimate"] if searched and chosen == "set" else None,
            "exact": exact,
            "diagnostics": searched["diagnostics"] if searched else None,
            "explored_subsets": searched["explored_subsets"] if searched else 0,
            "notes": searched["notes"] if searched else {},
            "passes": self._passes(searched),
            "timings": {**(searched["timings"] if searched else {}),
                        **{name: round(seconds, 4) for name, seconds in self.timings.items()},
                        "total": round(time.perf_counter() - self.started, 4)},
            "cache": {"hits": (searched["cache"]["hits"] if searched else 0) + self.lookups.cache_hits,
                      "misses": (searched["cache"]["misses"] if searched else 0) + self.lookups.cache_misses},
            "model": self.engine.model.describe(),
        }
        if request.max_passes is not None:
            spent = result["passes"]["forward_equivalent"]
            result["budget"] = {"max_passes": request.max_passes, "spent": spent,
                                "budget_exhausted": bool(result["notes"].get("budget_exhausted", False))}
        self.progress("done", 1, 1)
        return result

    def _split_rows(self, per_query: list[list[int]]) -> dict:
        n = len(self.request.queries)
        ids = [[self.request.pool[i].id for i in row] for row in per_query]
        return {"queries": ids[:n], "targets": ids[n:]}

    def _exact(self, selected: list[Example], retrieved: dict | None) -> dict:
        """The returned prompts run exactly on every query (params.evaluate_selected): loss and accuracy."""
        request = self.request
        context = None if retrieved is None else self._demos(retrieved["queries"])
        scores = self.engine.scores(selected, request.queries, self.options, request.template, request.separator,
                                    context, self.diagnostic, self.checkpoint, request.option_score, self.lookups)
        return summarize(scores.float(), torch.tensor(self.gold))

    def _passes(self, searched: dict | None) -> dict:
        """The search's passes and this strategy's own (embeddings, validation: selection; the exact run of the
        returned prompts: diagnostics), added up."""
        own = {**self.selecting.as_dict()}
        for name, value in self.diagnostic.as_dict().items():
            own[name] += value
        found = searched["passes"] if searched else {}
        total = {name: found.get(name, 0) + value for name, value in own.items()}
        total["selection_forward_equivalent"] = (found.get("selection_forward_equivalent", 0)
                                                 + self.selecting.forward_equivalent)
        total["diagnostics_forward_equivalent"] = (found.get("diagnostics_forward_equivalent", 0)
                                                   + self.diagnostic.forward_equivalent)
        return total
