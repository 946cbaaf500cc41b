"""The one entry point the CLI, the HTTP workers and the benchmarks call: Engine.select.

CONTRACT (other packages rely on it):

    engine = Engine(load_model("default"), cache=MemoryCache())
    result = engine.select(SelectionRequest(pool=[Example...], queries=[Example...], k=4),
                           progress=lambda phase, done, total: ..., should_cancel=lambda: False)

``request`` is the contract's SelectionRequest and ``result`` a JSON-able dict with the fields of the contract's
SelectionResult (iclsel/contract.py: each field is described there, once; the README's table is checked
against it). ``result["prompt"]`` is the natural prompt before the query: a query x is scored in
tokenizer(text + query_template with x), tokenised whole, as a user sends it.
engine.plan(request) -> plan.Plan: what select(request) would cost, without running it (a dry run).
Errors: InputError(field, message) for bad input; Cancelled when should_cancel() turned true.

Also (for benchmarks and exact checks):
    engine.evaluate(demos, queries, options=None, template=..., separator=..., context=None) -> dict
        demos: list[Example] shared by all queries (prefix-shared inference), or list[list[Example]]
        one demo list per query (e.g. per-query retrieval); context: per query, demos after the shared ones
        (result["retrieved"]). Returns {"accuracy", "macro_f1", "loss",
        "predictions": [option per query], "passes": {...}, "seconds"}.
    engine.retrieve_per_query(pool, queries, k, method)  -> list[list[Example]]
        method "bm25", "topk-embed" or "topk-sentence": the k nearest pool demos for each query, as retrieval
        users do.
    engine.model.fingerprint -> str (content hash of model id/revision/file hash and dtype)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from iclsel.contract import PARAMS, Params
from iclsel.contract import PythonRequest as SelectionRequest  # the contract, built in Python

from .cache import MemoryCache, through
from .constraints import Constraints, candidate_indices, demo_token_limit
from .context import ModelAccess, SelectionContext, SelectionProblem
from .data import Example, InputError, examples_from_records
from .defaults import DEFAULT_OPTION_SCORE, DEFAULT_SEPARATOR, DEFAULT_TEMPLATE
from .diagnostics import diagnose
from .inference import ModelRunner, PassBudgetExhausted, PassCounter
from .layout import Layout, TokenMemo, build_layout, resolve_options
from .ledger import Stats
from .loading import SentenceModel, load_sentence_model
from .plan import Plan, plan
from .outcome import macro_f1, query_losses, summarize
from .retrieval import top_k_ascending
from .runs import CacheKeys
from .methods import METHODS
from .selectors import search_params
from .strategy import PER_QUERY, SENTENCE, Neighbours, Strategies, sentence_seconds, strategy_for
from .tasks import AnchorTask
from .warm import WarmStart, resume

__all__ = ["Cancelled", "Engine", "SelectionRequest"]

ProgressFn = Callable[[str, int, int], None]


class Cancelled(RuntimeError):
    """The caller asked to stop (should_cancel() returned True)."""


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


def _cancel_checkpoint(should_cancel: Callable[[], bool] | None) -> Callable[[], None]:
    """A checkpoint for the model runner: raises Cancelled once ``should_cancel()`` turns true."""
    def checkpoint() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("selection cancelled")
    return checkpoint


def constraints(request: SelectionRequest) -> Constraints:
    """What any method must honour (models/constraints.py)."""
    return Constraints(request.max_prompt_tokens, request.min_per_label, request.exclude, request.where)


def _validate(request: SelectionRequest) -> tuple[SelectionRequest, Params]:
    """Request-level checks before any model work -> the request on its examples (ids as strings) and the
    method's parsed params."""
    if getattr(request, "invalid", None) is not None:  # a PythonRequest: checked here
        raise request.invalid
    params = PARAMS[request.method].parse(request.params, request.k)
    constraints(request).validate()
    if request.max_prompt_tokens is not None and params.retrieve:
        raise InputError("max_prompt_tokens", "cannot bound the per-query prompts of params.retrieve")
    pool = examples_from_records([example.to_dict() for example in request.pool], "pool")
    queries = examples_from_records([example.to_dict() for example in request.queries], "queries")
    return request.model_copy(update={"pool": pool, "queries": queries}), params


def _candidates(request: SelectionRequest) -> SelectionRequest:
    """The request on the pool demos that exclude and where keep (the request itself when they keep all)."""
    keep = candidate_indices(request.pool, constraints(request), request.k)
    return request if len(keep) == len(request.pool) else _on_pool(request, keep)


def _on_pool(request: SelectionRequest, keep: list[int]) -> SelectionRequest:
    return request.model_copy(update={"pool": [request.pool[i] for i in keep]})


@dataclass
class _ScoredQueries:
    """The query rows a selection scores: the user's queries, then (params.pool_queries) the pool's demos, each
    scored only for prompts it is not in, so the search's objective rests on n - k more labelled queries."""
    examples: list[Example]
    query_demo: list[int]  # per row: the pool index of a row that is a pool demo, -1 for the user's queries


def _scored_queries(request: SelectionRequest, pool_queries: bool) -> _ScoredQueries:
    return _ScoredQueries(list(request.queries) + (list(request.pool) if pool_queries else []),
                          [-1] * len(request.queries) + (list(range(len(request.pool))) if pool_queries else []))


@dataclass
class _Prepared:
    """A request made ready to select on: its candidate pool, scored queries, layout and runner."""
    request: SelectionRequest  # on the candidate demos only (the constraints' filters applied)
    scored: _ScoredQueries
    layout: Layout
    runner: ModelRunner
    params: Params  # the method's, parsed
    pool_size: int  # demos in the request's own pool

    @property
    def retrieve(self) -> int:
        return self.params.retrieve


@dataclass
class _Neighbours:
    similarity: np.ndarray  # [queries + targets, n] by params.retrieve_by, -inf where a pool query meets itself
    context: list[list[Example]]  # per scored query row, its nearest demos (best last)
    seconds: float
    by: str  # params.retrieve_by
    slots: int  # params.retrieve


def _retrieved(neighbours: _Neighbours, selected: list[int], n_scored: int, n_queries: int) -> list[list[int]]:
    """The prompts returned: each query's and target's ``neighbours.slots`` nearest demos outside the shared ones (the
    search's rows kept theirs fixed, so a row whose neighbour joined the shared slots held it twice)."""
    outside = neighbours.similarity.copy()
    outside[:, selected] = -np.inf
    rows = list(range(n_queries)) + list(range(n_scored, len(outside)))
    return [top_k_ascending(outside[row], neighbours.slots) for row in rows]


def _shown(demos, context) -> list[Example]:
    """Every demo that some prompt shows: the shared ones or each query's, and each query's context."""
    lists = [demos] if not demos or not isinstance(demos[0], (list, tuple)) else list(demos)
    return [d for chosen in lists + list(context or []) for d in chosen]


class Engine:
    """Holds a loaded model and an anchor cache; runs selections and evaluations."""

    def __init__(self, model, cache=None, batch_size: int = 8, anchor_chunk: int = 32, anchor_runner=None,
                 sentence_model: str | SentenceModel | None = None):
        self.model = model  # LoadedModel
        # the sentence-embedding model of "topk-sentence" retrieval: a SentenceModel, or its spec (None: the
        # ICLSEL_SENTENCE_MODEL setting), loaded on first use
        self._sentences = sentence_model
        self.encode_all = TokenMemo(model.tokenizer)
        self.cache = cache if cache is not None else MemoryCache()
        self.batch_size = batch_size
        self.anchor_chunk = anchor_chunk
        # anchor_runner(tasks: list[AnchorTask]) -> None: optional hook that has other workers compute anchor
        # tasks (models/tasks.py) into the shared cache; chunks still missing afterwards run locally.
        self.anchor_runner = anchor_runner

    @property
    def sentences(self) -> SentenceModel:
        """The sentence model, loaded on the language model's device the first time it is asked for (a request that
        retrieves by it; a worker's engine at start: workers/jobs.py make_engine)."""
        if not isinstance(self._sentences, SentenceModel):
            from iclsel.settings import get_settings

            spec = self._sentences if self._sentences is not None else get_settings().sentence_model
            self._sentences = load_sentence_model(spec, str(self.model.device))
        return self._sentences

    def layout(self, pool, queries, k, options, template, separator, max_slot_tokens=None, query_context=None,
               option_score=DEFAULT_OPTION_SCORE):
        return build_layout(self.model.tokenizer, pool, queries, k, options, template, separator,
                            self.model.max_positions, max_slot_tokens=max_slot_tokens,
                            encode_all=self.encode_all,
                            query_context=query_context, option_score=option_score)

    def _runner(self, layout, checkpoint=lambda: None, counter=None):
        return ModelRunner(self.model.model, layout, batch_size=self.batch_size, checkpoint=checkpoint,
                           counter=counter)

    def select(self, request: SelectionRequest, progress: ProgressFn | None = None,
               should_cancel: Callable[[], bool] | None = None) -> dict:
        progress = progress or _no_progress
        checkpoint = _cancel_checkpoint(should_cancel)
        checked, params = _validate(request)
        strategy, by = strategy_for(checked, params)
        if strategy == "set":
            result = self._select_set(request, progress, checkpoint)
            if by is not None:
                result["strategy"] = {"chosen": "set", "by": by, "search_queries": len(checked.queries),
                                      "searched": [d["id"] for d in result["selected"]],
                                      "validation_queries": 0, "checks": [], "margin_ci95": None,
                                      "gate": None}
            return result
        return Strategies(self, _candidates(checked), params, progress, checkpoint).select(strategy)

    def _select_set(self, request: SelectionRequest, progress: ProgressFn, checkpoint) -> dict:
        """The method's own selection (for gradient: strategy "set")."""
        started = time.perf_counter()
        progress("layout", 0, 1)
        prepared = self._prepare(request, checkpoint)
        request, scored, layout, runner, params = (prepared.request, prepared.scored, prepared.layout,
                                                   prepared.runner, prepared.params)
        retrieve = params.retrieve
        neighbours = self._neighbours(request, scored, runner, retrieve, params.retrieve_by) if retrieve else None
        if neighbours is not None:
            layout = self.layout(request.pool, scored.examples, request.k - retrieve, request.options,
                                 request.template, request.separator, params.max_slot_tokens,
                                 query_context=neighbours.context, option_score=request.option_score)
            runner = self._runner(layout, checkpoint, counter=runner.counter)
        ctx = self._context(prepared, layout, runner, lambda phase, done, total: (checkpoint(), progress(phase, done, total)))
        ctx.stats.record("layout", time.perf_counter() - started)
        if neighbours is not None:
            ctx.stats.record("retrieve", neighbours.seconds)
        if request.max_passes is not None and params.evaluate_selected:
            ctx.ledger.reserve_final(runner.exact_cost(len(ctx.queries)))
        with ctx.phase("select"):
            try:
                choice = METHODS[request.method].select(ctx, params)
            except PassBudgetExhausted as error:  # a step the method cannot do without
                raise InputError("max_passes", f"is too small for method {request.method!r}: {error}") from None
        ctx.ledger.reserve_final(0)
        selection_passes = runner.counter.forward_equivalent - ctx.ledger.diagnostic_passes
        retrieved = None if neighbours is None else _retrieved(neighbours, choice.selected, len(scored.examples),
                                                                 len(request.queries))
        try:
            exact_outcome = self._evaluate_selected(request, ctx, choice, retrieved, params, checkpoint)
        except PassBudgetExhausted:  # only where a method spent what was kept back for it
            exact_outcome = None
            choice.notes["budget_exhausted"] = True
        diagnostics = None
        if choice.checks:
            with ctx.phase("diagnostics"):
                diagnostics = diagnose(choice.checks, layout.gold, [d.id for d in request.pool])
        ctx.stats.record("total", time.perf_counter() - started)
        progress("done", 1, 1)
        result = self._result(request, ctx, choice, retrieved, neighbours, exact_outcome, diagnostics, selection_passes)
        if request.max_passes is not None:
            result["budget"] = {"max_passes": request.max_passes, "spent": runner.counter.forward_equivalent,
                                "budget_exhausted": bool(choice.notes.get("budget_exhausted", False))}
        if constraints(request) != Constraints():
            result["constraints"] = {"candidates": len(request.pool), "pool": prepared.pool_size,
                                     "prompt_tokens": len(result["prompt"]["token_ids"]),
                                     "max_prompt_tokens": request.max_prompt_tokens,
                                     "min_per_label": request.min_per_label}
        return result

    def start_scores(self, request: SelectionRequest, counter: PassCounter, checkpoint) -> torch.Tensor:
        """[Q, O] option scores on the queries of the set search's first start on ``request`` (its label-balanced
        draw, from the job's generator as the search draws it), run on ``counter`` through the search's exact runs
        (cached by content: a search that follows finds the run)."""
        prepared = self._prepare(request, checkpoint)
        runner = self._runner(prepared.layout, checkpoint, counter=counter)
        ctx = self._context(prepared, prepared.layout, runner, _no_progress)
        return ctx.exact(search_params(ctx, prepared.params).starts[0])

    def plan(self, request: SelectionRequest) -> Plan:
        """What ``select(request)`` will cost (passes and seconds on this model and machine), without running it:
        models/plan.py. The only model work is a short calibration run."""
        checked, params = _validate(request)
        strategy, _ = strategy_for(checked, params)
        if strategy == "set":
            return self._plan_set(request)
        return Strategies(self, _candidates(checked), params, _no_progress, lambda: None).plan(strategy)

    def _plan_set(self, request: SelectionRequest) -> Plan:
        prepared = self._prepare(request, lambda: None)
        ctx = self._context(prepared, prepared.layout, prepared.runner, _no_progress)
        request = prepared.request
        texts = (len(request.pool) + len(prepared.scored.examples) + len(request.targets)) if prepared.retrieve else 0
        by = prepared.params.retrieve_by  # the language model's embeddings are passes; the sentence model's, seconds
        prepared.runner.counter.limit = None  # the calibration is not the job's
        priced = plan(ctx, METHODS[request.method], prepared.params, request.max_passes,
                      texts if by == "topk-embed" else 0)
        if by != SENTENCE:
            return priced
        return replace(priced, estimated_seconds=round(priced.estimated_seconds
                                                       + sentence_seconds(self, request.pool, texts), 3))

    def _prepare(self, request: SelectionRequest, checkpoint) -> "_Prepared":
        """Validate, keep the candidate demos, lay the prompts out and make the runner (max_passes on its counter)."""
        request, params = _validate(request)
        pool_size = len(request.pool)
        request = _candidates(request)
        scored = _scored_queries(request, params.pool_queries)
        layout = self.layout(request.pool, scored.examples, request.k, request.options, request.template,
                             request.separator, params.max_slot_tokens, option_score=request.option_score)
        if request.max_prompt_tokens is not None:
            request, scored, layout = self._fitting_prompts(request, scored, layout, params)
        runner = self._runner(layout, checkpoint)
        runner.counter.limit = request.max_passes
        return _Prepared(request, scored, layout, runner, params, pool_size)

    def _context(self, prepared: "_Prepared", layout, runner, progress: ProgressFn) -> SelectionContext:
        request = prepared.request
        k = request.k - prepared.retrieve
        # a grown pool's search resumes from its parent's by pool position: only while no constraint dropped a demo
        warm = None if request.warm_start is None else WarmStart.from_dict(request.warm_start)
        resumes = warm is not None and len(request.pool) == prepared.pool_size
        problem = SelectionProblem(layout, request.pool, request.queries, k, query_demo=prepared.scored.query_demo,
                                   min_per_label=request.min_per_label,
                                   resume=resume(warm, request.pool, k, request.method) if resumes else None)
        model = ModelAccess(runner, self.model.tokenizer, self.cache, self.model.fingerprint,
                            anchor_chunk=self.anchor_chunk, anchor_runner=self.anchor_runner)
        return SelectionContext(problem, model, request.seed, progress)

    def _fitting_prompts(self, request: SelectionRequest, scored: "_ScoredQueries", layout, params: Params):
        """max_prompt_tokens: keep the demos short enough that any k of them fit (constraints.demo_token_limit);
        -> the request, scored queries and layout on them."""
        limit = demo_token_limit(request.max_prompt_tokens, len(layout.special_ids), request.k)
        keep = [i for i, length in enumerate(layout.demo_lengths.tolist()) if length <= limit]
        if len(keep) < request.k:
            raise InputError("max_prompt_tokens", f"{request.max_prompt_tokens} tokens fit k = {request.k} demos of "
                                                  f"at most {limit} tokens each; {len(keep)} candidate demos are that short")
        if len(keep) < len(request.pool):
            request = _on_pool(request, keep)
            scored = _scored_queries(request, params.pool_queries)
            layout = self.layout(request.pool, scored.examples, request.k, request.options, request.template,
                                 request.separator, params.max_slot_tokens, option_score=request.option_score)
        return request, scored, layout

    def _neighbours(self, request: SelectionRequest, scored: "_ScoredQueries", runner: ModelRunner,
                    retrieve: int, by: str) -> "_Neighbours":
        """params.retrieve: k - retrieve shared slots are searched; each query row carries its own ``retrieve``
        nearest demos by ``by`` (params.retrieve_by) between the shared demos and the query (a pool query never
        retrieves itself)."""
        embed_started = time.perf_counter()
        similarity = Neighbours(self, request.pool, runner.counter, runner.checkpoint).similarity(
            [q.input for q in scored.examples] + request.targets, by)  # [rows + targets, n]
        seconds = time.perf_counter() - embed_started
        for row, demo in enumerate(scored.query_demo):
            if demo >= 0:
                similarity[row, demo] = -np.inf
        context = [[request.pool[i] for i in top_k_ascending(row, retrieve)]
                   for row in similarity[:len(scored.examples)]]
        return _Neighbours(similarity, context, seconds, by, retrieve)

    def _evaluate_selected(self, request: SelectionRequest, ctx: SelectionContext, choice, retrieved, params: Params,
                           checkpoint):
        """The returned prompts' exact outcome on the user's queries (params.evaluate_selected), or None."""
        if not params.evaluate_selected:
            return None
        layout = ctx.layout
        with ctx.diagnostic():
            user_rows = slice(0, len(request.queries))  # the user's query set, not the pool queries
            if retrieved is None:
                return summarize(ctx.exact(choice.selected)[user_rows], layout.gold[user_rows])
            # the returned prompts, run exactly
            final = self.layout(request.pool, request.queries, request.k - params.retrieve, request.options,
                                request.template, request.separator, params.max_slot_tokens,
                                query_context=[[request.pool[i] for i in ids]
                                               for ids in retrieved[:len(request.queries)]],
                                option_score=request.option_score)
            scores = self._runner(final, checkpoint, counter=ctx.runner.counter).exact_scores(
                choice.selected, list(range(len(request.queries))))
            return summarize(scores, final.gold)

    def _result(self, request: SelectionRequest, ctx: SelectionContext, choice, retrieved, neighbours,
                exact_outcome, diagnostics, selection_passes) -> dict:
        """The CONTRACT's result dict."""
        layout = ctx.layout
        estimate = None
        if choice.estimated_loss is not None:
            estimate = {"loss": choice.estimated_loss, "accuracy": choice.estimated_accuracy}
        return {
            "method": request.method,
            "k": request.k,
            "seed": request.seed,
            "options": layout.options,
            "params": request.params,
            "selected": [request.pool[i].to_dict() for i in choice.selected],
            "prompt": {"text": layout.prefix_text(choice.selected), "token_ids": layout.prefix_ids(choice.selected),
                       "query_template": layout.template.split("{output}")[0].rstrip()},
            "retrieved": None if retrieved is None else {
                "slots": neighbours.slots, "by": neighbours.by,
                "queries": [[request.pool[i].id for i in ids] for ids in retrieved[:len(request.queries)]],
                "targets": [[request.pool[i].id for i in ids] for ids in retrieved[len(request.queries):]]},
            "scores": {demo.id: float(score) for demo, score in zip(request.pool, choice.scores)},
            "estimate": estimate,
            "exact": exact_outcome,
            "diagnostics": diagnostics,
            "explored_subsets": ctx.stats.explored,
            "notes": choice.notes,
            "passes": {**ctx.runner.counter.as_dict(), "selection_forward_equivalent": selection_passes,
                       "diagnostics_forward_equivalent": ctx.ledger.diagnostic_passes},
            "timings": {name: round(seconds, 4) for name, seconds in ctx.stats.timings.items()},
            "cache": {"hits": ctx.stats.cache_hits, "misses": ctx.stats.cache_misses},
            "model": self.model.describe(),
        }

    def evaluate(self, demos, queries, options=None, template: str = DEFAULT_TEMPLATE,
                 separator: str = DEFAULT_SEPARATOR, context=None, option_score: str = DEFAULT_OPTION_SCORE) -> dict:
        """Exact held-out scores of fixed demos (shared) or one demo list per query, in the natural prompt (the one
        `select` runs and returns). ``context``: per query, demos placed after the shared ones (what `select`
        returns with params.retrieve: result["retrieved"])."""
        started = time.perf_counter()
        shown = _shown(demos, context)
        options = resolve_options(shown, list(queries), options)
        counter = PassCounter()
        scores = self.scores(demos, queries, options, template, separator, context, counter,
                             option_score=option_score)
        gold = torch.tensor([options.index(q.output) for q in queries])
        predictions = scores.argmax(-1)
        return {
            "accuracy": float((predictions == gold).float().mean()),
            "macro_f1": macro_f1(predictions, gold, len(options)),
            "loss": float(query_losses(scores, gold).mean()),
            "predictions": [options[int(p)] for p in predictions],
            "passes": counter.as_dict(),
            "seconds": time.perf_counter() - started,
        }

    def scores(self, demos, queries, options: list[str], template: str, separator: str, context=None,
               counter: PassCounter | None = None, checkpoint=lambda: None,
               option_score: str = DEFAULT_OPTION_SCORE, stats: Stats | None = None) -> torch.Tensor:
        """[Q, O] option log-probabilities of each query in its natural prompt: ``demos`` shared by all queries or
        one list per query, then (``context``) each query's own demos. Queries with the same demos share one
        prefix run, cached by content (a request that comes back, or auto's checks of a prompt it ran before, finds
        it; ``counter`` counts only what ran, ``stats`` the cache's hits and misses)."""
        if not demos and context is not None:  # no shared demos: each query's own are its whole prompt
            demos, context = context, None
        per_query = bool(demos) and isinstance(demos[0], (list, tuple))
        if context is not None and len(context) != len(queries):
            raise InputError("context", f"one demo list per query: {len(context)} lists for {len(queries)} queries")
        groups: dict[tuple[str, ...], list[int]] = {}
        by_id = {}
        for q in range(len(queries)):
            chosen = demos[q] if per_query else demos
            by_id.update({d.id: d for d in chosen})
            groups.setdefault(tuple(d.id for d in chosen), []).append(q)
        scores = torch.zeros((len(queries), len(options)), dtype=torch.float64)
        for ids, members in groups.items():
            layout = self.layout([by_id[i] for i in ids], [queries[q] for q in members], len(ids), options,
                                 template, separator,
                                 query_context=None if context is None else [context[q] for q in members],
                                 option_score=option_score)
            entry, _ = through(self.cache, CacheKeys(self.model.fingerprint, layout).prompt(), lambda: {
                "scores": self._runner(layout, checkpoint, counter=counter).exact_scores(
                    list(range(len(ids))), list(range(len(members))))}, stats)
            scores[members] = entry["scores"].double()
        return scores

    def retrieve_per_query(self, pool, queries, k: int, method: str, vote_order: bool = False) -> list[list]:
        """The k most similar pool demos for each query, by a per-query strategy (PER_QUERY): the nearest last, as
        the per-query methods return them, or in vote order (Neighbours)."""
        if k < 1 or k > len(pool):
            raise InputError("k", f"must be between 1 and the pool size {len(pool)}")
        if method not in PER_QUERY:
            raise InputError("method", f"must be one of {', '.join(PER_QUERY)}")
        neighbours = Neighbours(self, pool, PassCounter(), vote_order=(method,) if vote_order else ())
        return [[pool[i] for i in ids] for ids in neighbours.nearest([q.input for q in queries], method, k)]

