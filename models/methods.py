"""A selection method is one object: its Params (the contract's model: types, defaults, checks),
``select(ctx, params) -> Choice`` (the algorithm, models/selectors.py) and ``cost(ctx, params, costs)`` (the
(fewest, most) Work it can do on a job, what a dry run plans with: models/plan.py), side by side.

METHODS registers them by name; the contract's PARAMS (iclsel/contract.py, torch-free, for the API) names the
same methods with the same Params, which tests/test_seams.py checks. A new method is a Params model in the
contract and a Method here; a new param is a field of its Params model and its use in the method.
"""

from __future__ import annotations

import math
from typing import Callable

from iclsel.contract import PARAMS, ExactParams, GradientParams, GradreParams, Params

from . import selectors
from .context import SelectionContext
from .ledger import fitting
from .plan import Costs, Work, embeddings


class Method:
    """A method by name (its Params: the contract's PARAMS[name]), its select(ctx, params) and its cost; this base
    costs only the returned set's exact run (and any retrieval embeddings)."""

    def __init__(self, name: str, select: Callable[[SelectionContext, Params], selectors.Choice]):
        self.name, self.select = name, select

    @property
    def Params(self) -> type[Params]:  # noqa: N802 (a class, as the contract names it)
        return PARAMS[self.name]

    def cost(self, ctx: SelectionContext, params: Params, costs: Costs) -> tuple[Work, Work]:
        return costs.fixed(costs.embed + costs.final)


class TopkEmbed(Method):
    def cost(self, ctx: SelectionContext, params: Params, costs: Costs) -> tuple[Work, Work]:
        rows = ctx.n + len(ctx.query_inputs)  # one embedding per demo and query
        return costs.fixed(costs.embed + embeddings(rows, ctx.runner.batch_size) + costs.final)


class Exact(Method):
    def cost(self, ctx: SelectionContext, params: ExactParams, costs: Costs) -> tuple[Work, Work]:
        subsets = min(params.subsets, fitting(costs.limit - costs.embed.passes, costs.full.passes))
        return costs.fixed(costs.embed + costs.full * subsets + costs.final)


class Gradre(Method):
    def cost(self, ctx: SelectionContext, params: GradreParams, costs: Costs) -> tuple[Work, Work]:
        anchor, full, room = costs.anchor(params.anchor_mode), costs.full, costs.limit - costs.embed.passes
        anchors = min(params.anchors, fitting(room, anchor.passes))
        checks = min(params.checks, params.subsets, fitting(room - anchors * anchor.passes, full.passes))
        return costs.fixed(costs.embed + anchor * anchors + full * (checks + 1))  # the returned set is checked


class Gradient(Method):
    """The gradient search: adaptive, so its cost is a range (no move in the first round .. every round moves,
    or the budget)."""

    def cost(self, ctx: SelectionContext, params: GradientParams, costs: Costs) -> tuple[Work, Work]:
        p = selectors.search_params(ctx, params)  # draws the starts, as the search does, from the job's generator
        before = costs.embed + (costs.full * len(p.starts) if len(p.starts) > 1 else Work(0, 0))
        if p.evaluator == "subsample":
            return self._subsample_cost(ctx, p, costs, before)
        full, anchor = costs.full, costs.anchor(p.mode)
        if p.evaluator == "exact":
            batch = full * (ctx.k if p.propose == "per-slot" else p.candidates)
            return (before + anchor + batch * (1 + p.patience),
                    before + (anchor + batch * (1 + p.patience)) * p.rounds + anchor)
        # first-order: an anchor per move; the checks run exactly
        return before + anchor + full * p.checks, before + anchor * (p.rounds + 1) + full * p.checks

    @staticmethod
    def _subsample_cost(ctx: SelectionContext, p: selectors.SearchParams, costs: Costs,
                        before: Work) -> tuple[Work, Work]:
        n_queries, full = len(ctx.queries), costs.full
        # the start's gradient and exact value (one pass, unless a resumed search ranks at its parent's anchor)
        start = costs.anchor(p.mode) + (full if p.rank_anchor else Work(0, 0))
        proposals = ctx.k * min(p.per_slot, ctx.n - ctx.k)
        rows = ctx.runner.rows_per_query
        screen = min(p.screen, n_queries)
        fresh = min(p.sample, n_queries - screen)  # the finalists' rows beyond the screen
        least = Work((proposals * screen + p.finalists * fresh) * rows, proposals + p.finalists)
        most_batch = least + Work((screen + fresh) * rows, 2)  # the current set on both samples as well
        room = min(p.budget or math.inf, costs.limit - before.passes) - start.passes
        most = min(p.rounds * (1 + p.patience), fitting(room, selectors.batch_cost(ctx, p, proposals)))
        fewest = min(1 + p.patience, most)  # no move in the first round
        # diagnostics: checks - 1 evaluated sets and the returned one (the start's run when it never moved)
        return (before + start + least * fewest + full * (p.checks - 1),
                before + start + most_batch * most + full * p.checks)


METHODS: dict[str, Method] = {method.name: method for method in (
    Gradient("gradient", selectors.select_gradient),
    Gradre("gradre", selectors.select_gradre),
    Exact("exact", selectors.select_exact),
    Method("random", selectors.select_random),
    Method("bm25", selectors.select_bm25),
    TopkEmbed("topk-embed", selectors.select_topk_embed),
)}
