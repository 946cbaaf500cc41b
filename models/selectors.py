"""Selectors, one interface: select_<name>(ctx, params) -> Choice (models/methods.py registers each with its
Params, from iclsel/contract.py, and its cost).

- gradient: a local search over single swaps (slot s <- demo i) from the best (by exact objective) of
  ``starts`` label-balanced sets. A first-order estimate (the gradient w.r.t. the demo-slot embeddings at an
  anchor) proposes the swaps; ``evaluator`` says what decides a move:
    subsample (default): one gradient at the start orders each slot's candidates; each batch screens the next
      ``per_slot`` candidates of every slot exactly on ``screen`` label-stratified queries, paired with the
      current set on the same queries, runs the ``finalists`` best on ``sample`` more, and moves on the paired
      difference over both samples if it is below zero; it stops before a batch could pass ``budget``
      (bench/FIDELITY.md: such differences rank swaps, the first-order estimate barely does);
    exact: re-anchor at every move; the best-estimated swap of each slot (propose="per-slot"; "global": the
      ``candidates`` best overall) runs on every query; move if the exact objective drops, else try the next
      batch (``patience`` times). The query-set objective never goes up;
    first-order: trust the estimate: move to the best-estimated swap while it beats the anchor, re-anchor.
  moves=same-label restricts the swaps to demos with the same label as the one they replace.
- gradre: the paper's random ensemble: random k-subsets, a few random anchors, score = mean estimated
  outcome of the subsets containing a demo.
- exact: the same sampling with exact inference for every subset (the reference, and the cost saved).
- random, bm25, topk-embed: baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from iclsel.contract import DEFAULT_BUDGET_RUNS, ExactParams, GradientParams, GradreParams, Params

from .context import SelectionContext
from .data import InputError
from .diagnostics import Check
from .estimate import estimate_with_anchors
from .outcome import objective, scored_rows
from .retrieval import bm25_similarity, cosine_similarity, set_scores


@dataclass
class Choice:
    selected: list[int]  # pool indices in slot (prompt) order
    scores: np.ndarray  # [n] influence score per demo, higher = better
    estimated_loss: float | None = None
    estimated_accuracy: float | None = None
    checks: list[Check] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


def influence_from_subsets(n: int, subsets: torch.Tensor, outcome: torch.Tensor) -> np.ndarray:
    """Paper aggregation: score[i] = mean outcome of the sampled subsets containing demo i
    (demos never sampled get the lowest observed score)."""
    outcome = outcome.double()
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, subsets.reshape(-1), outcome.repeat_interleave(subsets.shape[1]))
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, subsets.reshape(-1), torch.ones(subsets.numel(), dtype=torch.float64))
    mean = total / count.clamp_min(1)
    floor = float(mean[count > 0].min()) if bool((count > 0).any()) else 0.0
    return torch.where(count > 0, mean, torch.full_like(mean, floor)).numpy()


def _single_swaps(anchor: list[int], n: int, labels: list[str] | None = None,
                  swap_in: list[int] | None = None) -> torch.Tensor:
    """[k * (n - k), k]: every subset that replaces one slot of ``anchor`` by a demo not in it.
    With ``labels`` (one per pool demo), only by a demo of the same label: [sum over slots of
    (demos outside the anchor with that slot's label), k]. With ``swap_in``, only by one of those demos."""
    outside = [i for i in (range(n) if swap_in is None else swap_in) if i not in set(anchor)]
    base = torch.tensor(anchor, dtype=torch.long)
    swaps = [base.repeat(0, 1)]
    for slot, member in enumerate(anchor):
        replacements = [i for i in outside if labels is None or labels[i] == labels[member]]
        block = base.repeat(len(replacements), 1)
        block[:, slot] = torch.tensor(replacements, dtype=torch.long)
        swaps.append(block)
    return torch.cat(swaps)


@dataclass
class SearchParams:
    """The gradient search's parameters on one job (search_params: the contract's GradientParams and the job)."""
    evaluator: str  # what decides a move: "subsample", "exact" or "first-order" (EVALUATORS)
    rounds: int
    mode: str  # anchor_mode
    objective: str  # what a move must lower: outcome.OBJECTIVES
    move_labels: list[str] | None  # per demo, with moves=same-label (a swap keeps the replaced demo's label)
    move_set: str
    swap_budget: int  # single swaps estimated per round; 0 = all k * (n - k)
    propose: str
    candidates: int
    patience: int
    screen: int  # queries every proposal runs on (subsample evaluator)
    sample: int  # other queries the finalists run on: the paired difference that decides a move
    finalists: int  # screened proposals that run on the sample
    budget: int  # forward-equivalents the subsample search may spend (0 = no limit)
    per_slot: int  # proposals per slot and batch (subsample evaluator)
    order: str  # each slot's candidates: "gradient" (best estimate first) or "random" (subsample evaluator)
    checks: int  # evaluated subsets also run on every query, for diagnostics (subsample, first-order)
    starts: list[list[int]]
    # a resumed search (models/warm.py): the subsample evaluator's ranking anchor, and the demos swaps may put in
    rank_anchor: list[int] | None = None
    swap_in: list[int] | None = None


def search_params(ctx: SelectionContext, params: GradientParams) -> SearchParams:
    """The search's parameters on this job: the parsed params, the labels same-label moves keep, the budget
    (by default DEFAULT_BUDGET_RUNS exact runs), a resumed search's anchor and new demos, and the starts."""
    resume = ctx.resume
    return SearchParams(
        evaluator=params.evaluator, rounds=params.rounds, mode=params.anchor_mode, objective=params.objective,
        move_set=params.moves,
        # same-label: a move replaces a demo by one with the same output, so the start's label mix is kept and
        # each move changes only a demo's input text: a smaller step from the anchor than a label change.
        move_labels=ctx.layout.demo_outputs if params.moves == "same-label" else None,
        swap_budget=params.swaps, propose=params.propose, candidates=params.candidates, patience=params.patience,
        screen=params.screen, sample=params.sample, finalists=params.finalists, per_slot=params.per_slot,
        order=params.order, checks=params.checks,
        budget=DEFAULT_BUDGET_RUNS * ctx.runner.exact_cost(len(ctx.queries)) if params.budget is None else params.budget,
        rank_anchor=None if resume is None else resume.anchor, swap_in=None if resume is None else resume.new,
        # drawn last (the draws use the job's generator)
        starts=[list(resume.selected)] if resume is not None else
        [ctx.balanced_subset() if params.init == "balanced" else [int(i) for i in ctx.random_subset()]
         for _ in range(params.starts)])


@dataclass
class SearchResult:
    current: list[int]  # the set the search returns, in slot order
    estimator: object  # the AnchorEstimator whose gradient ranked the last proposals (influence scores)
    checks: list[Check]
    estimated_loss: float | None  # the evaluator's estimate of the returned set's loss
    notes: dict


def select_gradient(ctx: SelectionContext, params: GradientParams) -> Choice:
    p = search_params(ctx, params)
    current = p.starts[0]
    if len(p.starts) > 1:  # run every start exactly (forward passes only) and search from the best
        start_losses = [_objective(ctx, scores, p.objective) for scores in ctx.exact_many(p.starts, label="starts")]
        ctx.count_explored(len(p.starts))
        current = p.starts[int(np.argmin(start_losses))]
    search = {"exact": _search_exact, "subsample": _search_subsample, "first-order": _search_first_order}[p.evaluator]
    result = search(ctx, p, current)
    scores = _influence_scores(ctx, result.estimator, result.current)
    return Choice(result.current, scores, estimated_loss=result.estimated_loss, checks=result.checks,
                  notes={"evaluator": p.evaluator, **result.notes, "move_set": p.move_set, "anchor_mode": p.mode,
                         "starts": len(p.starts), "objective": p.objective, "confirmed": len(result.checks),
                         # the set whose gradient ranked the last proposals: a grown pool's search resumes there
                         "anchor": [ctx.pool_ids[i] for i in result.estimator.anchor.tolist()],
                         **({} if ctx.resume is None else {"warm_start": ctx.resume.notes()})})


def _search_exact(ctx: SelectionContext, p: SearchParams, current: list[int]) -> SearchResult:
    """evaluator=exact: at each anchor, the proposals (best first-order estimates) run on every query; move to
    the best if it lowers the exact objective, else try the next batch (patience), then re-anchor."""
    checks: list[Check] = []
    proposed_by: dict[tuple, Check] = {}
    moves = 0
    rounds_run = 0
    exhausted = False
    for round_index in range(p.rounds):
        if ctx.anchors_left(p.mode) < 1 or ctx.exact_runs_left() < ctx.k:  # max_passes: no room for one more round
            exhausted = True
            break
        ctx.progress("search", round_index, p.rounds)
        rounds_run += 1
        estimator = ctx.anchor(current, p.mode)
        with ctx.phase("estimate"):
            swaps = _allowed_swaps(ctx, current, p)
            if swaps.shape[0] == 0:
                break  # no demo left to swap in (same-label moves, every demo of each label already in)
            if 0 < p.swap_budget < swaps.shape[0]:
                swaps = swaps[torch.from_numpy(ctx.rng.choice(swaps.shape[0], p.swap_budget, replace=False))]
            estimate = estimator.estimate(swaps, objective_name=p.objective)
            ctx.count_explored(swaps.shape[0])
            batches = _proposals(swaps, estimate.objective, torch.tensor(current), p.propose, p.candidates, p.patience)
        anchor_value = estimator.objective(p.objective)
        moved = False
        for batch in batches:  # the next batch only when no swap of this one lowered the exact objective
            if ctx.exact_runs_left() < len(batch):
                exhausted = True
                break
            exact_runs = ctx.exact_many([swaps[i].tolist() for i in batch], label="confirm")
            for index, scores in zip(batch.tolist(), exact_runs):
                subset = swaps[index].tolist()
                check = Check(subset, float(estimate.loss[index]), estimator.loss, scores,
                              _margins(estimator, swaps[index]))
                checks.append(check)
                proposed_by[tuple(subset)] = check
            exact_values = [_objective(ctx, s, p.objective) for s in exact_runs]
            winner = int(np.argmin(exact_values))
            if exact_values[winner] < anchor_value:
                current = swaps[batch[winner]].tolist()
                moves += 1
                moved = True
                break
        if not moved or exhausted:
            break  # no confirmed improvement around this anchor: a local optimum of the search
    ctx.progress("search", p.rounds, p.rounds)
    # cached when the loop ended on it; else one more anchor pass, if max_passes leaves room for it
    final = ctx.anchor(current, p.mode) if rounds_run == 0 or ctx.anchors_left(p.mode) >= 1 else estimator
    returned = proposed_by.get(tuple(current)) or Check(current, final.loss, final.loss, ctx.exact(current),
                                                        _margins(final, torch.tensor(current)), is_anchor=True)
    if not any(check is returned for check in checks):
        checks.append(returned)
    return SearchResult(current, final, checks, returned.estimated_loss,
                        {"moves": moves, "rounds_run": rounds_run, "propose": p.propose, "patience": p.patience,
                         "budget_exhausted": exhausted})


def _search_subsample(ctx: SelectionContext, p: SearchParams, current: list[int]) -> SearchResult:
    """evaluator=subsample: one gradient, at the start, orders the candidates of each slot (bench/FIDELITY.md:
    the first-order estimate barely ranks swaps, so it only chooses which to try first). Each batch, the next
    ``per_slot`` candidates of every slot are screened on ``screen`` label-stratified queries, paired with the
    current set on the same queries; the ``finalists`` best then also run on ``sample`` other queries, and the
    search moves to the best of them if its paired difference over both samples is below zero (else the next
    batch, ``patience`` times); a batch that could take the search past ``budget`` forward-equivalents is not
    started. The fresh queries halve the winner's curse of the screening (the minimum of noisy differences) in
    the move and in the estimate: the start's exact value plus the accepted differences."""
    start = list(current)
    before = ctx.work()
    spent = lambda: ctx.work() - before  # noqa: E731 (the search's own work, cached or run: cache-independent)
    estimator, ranked = _ranked_candidates(ctx, p, start)
    value = _objective(ctx, ctx.exact(start), p.objective)  # the reference every paired difference adds to
    budget = min(p.budget or math.inf, spent() + ctx.passes_left())  # params.budget and max_passes
    tried = [set() for _ in range(ctx.k)]
    evaluated: dict[tuple[int, ...], tuple[float, float]] = {}  # subset -> (its estimate, the compared estimate)
    moves = rounds_run = batches_run = 0
    exhausted = False
    for round_index in range(p.rounds):
        ctx.progress("search", round_index, p.rounds)
        rounds_run += 1
        moved = False
        for _ in range(1 + p.patience):
            proposals = _next_proposals(ctx, p, ranked, current, tried)
            if not proposals:
                break
            if spent() + batch_cost(ctx, p, len(proposals)) > budget:
                exhausted = True
                break
            batches_run += 1
            screen_rows = ctx.sample_rows(p.screen)
            screened = _paired_differences(ctx, current, proposals, screen_rows, p.objective)
            evaluated.update({tuple(s): (value + d, value) for s, d in zip(proposals, screened)})
            finalists = [proposals[i] for i in np.argsort(screened, kind="stable")[:p.finalists]]
            more = [q for q in ctx.sample_rows(p.sample, exclude=screen_rows) if q not in screen_rows]
            rows = screen_rows + more  # the finalists' rows: both samples
            decided = _paired_differences(ctx, current, finalists, rows, p.objective)
            evaluated.update({tuple(s): (value + d, value) for s, d in zip(finalists, decided)})
            ctx.count_explored(len(proposals))
            winner = int(np.argmin(decided))
            if decided[winner] < 0:
                current, value = finalists[winner], value + decided[winner]
                moves += 1
                moved = True
                break
        if not moved or exhausted:
            break
    ctx.progress("search", p.rounds, p.rounds)
    checks = _diagnostic_checks(ctx, [(list(s), e, z) for s, (e, z) in evaluated.items()], current, value, p.checks)
    return SearchResult(current, estimator, checks, value,
                        {"moves": moves, "rounds_run": rounds_run, "batches": batches_run, "screen": p.screen,
                         "sample": p.sample, "finalists": p.finalists, "per_slot": p.per_slot,
                         "patience": p.patience, "evaluated": len(evaluated), "budget": p.budget,
                         "budget_exhausted": exhausted, "spent": spent()})


def _ranked_candidates(ctx: SelectionContext, p: SearchParams, start: list[int]):
    """(the estimator at the ranking anchor, each slot's candidates best estimate first) for the subsample search."""
    ranking = p.rank_anchor or start  # a resumed search ranks at the parent's anchor (cached), from its result
    estimator = ctx.anchor(ranking, p.mode)  # proposals only need the ranking within a slot
    with ctx.phase("estimate"):
        swaps = _single_swaps(ranking, ctx.n, p.move_labels, p.swap_in)  # [S, k]
        # [S]; order random is what the gradient's order must beat, drawn apart from the job's generator
        estimated = (torch.from_numpy(np.random.default_rng([0x0D3E, *ranking]).random(swaps.shape[0]))
                     if p.order == "random" else estimator.estimate(swaps).loss)
        ranked = (_ranked_per_slot(swaps, estimated, torch.tensor(ranking)) if swaps.shape[0]
                  else [[] for _ in ranking])  # no demo to swap in (same-label moves)
        ctx.count_explored(swaps.shape[0])
    return estimator, ranked


def _next_proposals(ctx: SelectionContext, p: SearchParams, ranked: list[list[int]], current: list[int],
                    tried: list[set]) -> list[list[int]]:
    """A subsample batch: the next ``per_slot`` untried candidates of every slot (by the ranking), as sets."""
    proposals = []
    for slot in range(ctx.k):
        fresh = [i for i in ranked[slot] if i not in current and i not in tried[slot]
                 and _keeps_labels(ctx, current, slot, i)][:p.per_slot]
        tried[slot].update(fresh)
        proposals += [current[:slot] + [i] + current[slot + 1:] for i in fresh]
    return proposals


def batch_cost(ctx: SelectionContext, p: SearchParams, n_proposals: int) -> int:
    """The most a subsample batch of ``n_proposals`` can run, in forward-equivalents: every proposal and the
    current set on ``screen`` rows, the finalists and it on ``sample`` more (a batch starts only if this fits)."""
    n_queries = len(ctx.queries)
    rows = (n_proposals + 1) * min(p.screen, n_queries) + (p.finalists + 1) * min(p.sample, n_queries)
    return rows * ctx.runner.rows_per_query


def _paired_differences(ctx: SelectionContext, current: list[int], subsets: list[list[int]], rows: list[int],
                        objective_name: str) -> list[float]:
    """objective(subset) - objective(current), each exact on the same query ``rows`` only."""
    base = _objective(ctx, ctx.exact_rows(current, rows), objective_name, rows)
    return [_objective(ctx, ctx.exact_rows(subset, rows), objective_name, rows) - base for subset in subsets]


def _search_first_order(ctx: SelectionContext, p: SearchParams, current: list[int]) -> SearchResult:
    """evaluator=first-order: trust the estimate alone. At each anchor move to the best-estimated single swap if
    its estimated objective is below the anchor's own, then re-anchor there. No exact run decides anything."""
    evaluated: list[tuple[list[int], float, float]] = []
    moves = rounds_run = 0
    estimator = ctx.anchor(current, p.mode)
    exhausted = False
    for round_index in range(p.rounds):
        ctx.progress("search", round_index, p.rounds)
        rounds_run += 1
        with ctx.phase("estimate"):
            swaps = _allowed_swaps(ctx, current, p)
            if swaps.shape[0] == 0:
                break
            estimate = estimator.estimate(swaps, objective_name=p.objective)
            ctx.count_explored(swaps.shape[0])
        best = int(torch.argmin(estimate.objective))
        evaluated.append((swaps[best].tolist(), float(estimate.loss[best]), estimator.loss))
        if float(estimate.objective[best]) >= estimator.objective(p.objective):
            break
        if ctx.anchors_left(p.mode) < 1:  # max_passes: no room to re-anchor at the better set
            exhausted = True
            break
        current = swaps[best].tolist()
        moves += 1
        estimator = ctx.anchor(current, p.mode)
    ctx.progress("search", p.rounds, p.rounds)
    checks = _diagnostic_checks(ctx, evaluated, current, estimator.loss, p.checks)
    return SearchResult(current, estimator, checks, estimator.loss,
                        {"moves": moves, "rounds_run": rounds_run, "budget_exhausted": exhausted})


def _allowed_swaps(ctx: SelectionContext, current: list[int], p: SearchParams) -> torch.Tensor:
    """The single swaps of ``current`` the search may take: moves=same-label, a resumed search's new demos only,
    and min_per_label kept."""
    swaps = _single_swaps(current, ctx.n, p.move_labels, p.swap_in)
    return swaps if ctx.min_per_label == 0 else swaps[ctx.allowed(swaps)]


def _keeps_labels(ctx: SelectionContext, current: list[int], slot: int, demo: int) -> bool:
    """Whether putting ``demo`` in ``slot`` of ``current`` keeps min_per_label."""
    return ctx.min_per_label == 0 or bool(ctx.allowed(torch.tensor([current[:slot] + [demo] + current[slot + 1:]]))[0])


def _per_slot_order(swaps: torch.Tensor, estimated: torch.Tensor, anchor: torch.Tensor) -> list[torch.Tensor]:
    """For each slot, the indices of the single swaps [S, k] that change it, lowest ``estimated`` [S] first."""
    order = torch.argsort(estimated)
    slot_of = (swaps != anchor).int().argmax(1)[order]  # [S] the slot each swap changes, in estimate order
    return [order[slot_of == s] for s in range(anchor.shape[0])]


def _ranked_per_slot(swaps: torch.Tensor, estimated: torch.Tensor, anchor: torch.Tensor) -> list[list[int]]:
    """For each slot, the demos a single swap there puts in, best estimate first."""
    return [swaps[indices, slot].tolist() for slot, indices in enumerate(_per_slot_order(swaps, estimated, anchor))]


def _diagnostic_checks(ctx: SelectionContext, evaluated: list[tuple[list[int], float, float]], current: list[int],
                       estimated: float, count: int) -> list[Check]:
    """Run ``count`` - 1 evaluated subsets (spread over the evaluator's range of estimates) and the returned set
    on every query, for diagnostics only (counted apart from the selection's passes): how well the evaluator
    that decided the moves estimated them. Each check's zero-order value is the estimate of the set it was
    compared to."""
    if count == 0:
        return []
    others = [e for e in evaluated if e[0] != current]
    picks = sorted(others, key=lambda e: e[1])
    count = int(min(count, 1 + ctx.exact_runs_left()))  # max_passes: the returned set's run is kept back
    if len(picks) > count - 1:
        picks = [picks[int(i)] for i in np.linspace(0, len(picks) - 1, count - 1).round()] if count > 1 else []
    with ctx.diagnostic(), ctx.phase("checks"):
        checks = [Check(subset, est, zero, ctx.exact(subset)) for subset, est, zero in picks]
        checks.append(Check(current, estimated, estimated, ctx.exact(current), is_anchor=True))
    return checks


def _influence_scores(ctx: SelectionContext, estimator, current: list[int]) -> np.ndarray:
    """score[i] = mean over the returned set's slots of (mean estimated loss of a swap in that slot - estimated
    loss with i there); a member's score is its slot's mean swap loss minus the set's estimated loss, over k."""
    with ctx.phase("estimate"):
        swaps = _single_swaps(current, ctx.n)
        swap_loss = estimator.estimate(swaps).loss.view(ctx.k, ctx.n - ctx.k)  # [k, n-k]
        at_anchor = estimator.anchor.tolist() == list(current)
        current_loss = estimator.loss if at_anchor else float(estimator.estimate(torch.tensor([current])).loss[0])
        outside = [i for i in range(ctx.n) if i not in set(current)]
        slot_mean = swap_loss.mean(1, keepdim=True)
        scores = np.zeros(ctx.n)
        scores[outside] = (slot_mean - swap_loss).mean(0).numpy()
        for slot, member in enumerate(current):
            scores[member] = float(slot_mean[slot] - current_loss) / ctx.k
    return scores


def _proposals(swaps: torch.Tensor, estimated: torch.Tensor, anchor: torch.Tensor, propose: str,
               candidates: int, patience: int) -> list[torch.Tensor]:
    """Which single swaps [S, k] to run exactly, as 1 + patience batches of swap indices, best first.

    ``estimated`` [S]: each swap's estimated objective (lower is better).
    global: the ``candidates`` lowest estimates, then the next ``candidates``, ...
    per-slot: the lowest estimate within each slot (k swaps), then the second lowest of each, ...
    The first-order estimate ranks swaps within a slot a little, not across slots, where it gets the slot's mean
    effect wrong (bench/FIDELITY.md)."""
    if propose == "global":
        order = torch.argsort(estimated)
        return [b for b in order[: candidates * (1 + patience)].split(candidates) if b.numel()]
    ranked = _per_slot_order(swaps, estimated, anchor)
    return [torch.stack([r[level] for r in ranked if r.numel() > level])
            for level in range(1 + patience) if any(r.numel() > level for r in ranked)]


def _margins(estimator, subset: torch.Tensor) -> torch.Tensor | None:
    """Estimated per-query margins [Q, O] of one subset, NaN on rows the anchor did not score (per-query
    anchors only)."""
    if not estimator.per_query:
        return None
    margins = estimator.all_rows_margins(subset)
    return margins - margins[:, :1]  # relative to option 0, as diagnostics compare them


def _objective(ctx: SelectionContext, scores: torch.Tensor, name: str = "loss", rows: list[int] | None = None) -> float:
    """outcome.objective of one subset's exact scores [Q, O] (or [len(rows), O] of query ``rows``) over its
    scored queries."""
    keep = scored_rows(scores)
    gold = ctx.layout.gold if rows is None else ctx.layout.gold[rows]
    return float(objective(scores[keep], gold[keep], name))


def select_gradre(ctx: SelectionContext, p: GradreParams) -> Choice:
    n_anchors = _affordable(p.anchors, ctx.anchors_left(p.anchor_mode), "anchor passes")
    n_subsets, n_checks, mode = p.subsets, p.checks, p.anchor_mode
    anchors = ctx.random_subsets(n_anchors)
    estimators = []
    for a in range(n_anchors):
        ctx.progress("anchors", a, n_anchors)
        estimators.append(ctx.anchor(anchors[a].tolist(), mode))
    subsets = ctx.random_subsets(n_subsets)
    with ctx.phase("estimate"):
        estimate = estimate_with_anchors(estimators, subsets)
        ctx.count_explored(n_subsets)
        scores = influence_from_subsets(ctx.n, subsets, -estimate.loss)
    selected = ctx.top_k(scores)
    n_checks = int(min(n_checks, n_subsets, ctx.exact_runs_left()))  # max_passes: diagnostics only if they fit
    to_check = [subsets[i].tolist() for i in range(n_checks)] + [selected]
    with ctx.diagnostic():
        exact_runs = ctx.exact_many(to_check, label="diagnostics")
    checks = []
    for subset, exact in zip(to_check[:-1], exact_runs[:-1]):
        row = subsets.tolist().index(subset)
        estimator = estimators[int(estimate.anchor[row])]
        checks.append(Check(subset, float(estimate.loss[row]), float(estimate.zero_order[row]), exact,
                            _margins(estimator, subsets[row])))
    final = estimate_with_anchors(estimators, torch.tensor([selected]))
    chosen = estimators[int(final.anchor[0])]
    checks.append(Check(selected, float(final.loss[0]), float(final.zero_order[0]), exact_runs[-1],
                        _margins(chosen, torch.tensor(selected))))
    return Choice(selected, scores, estimated_loss=float(final.loss[0]),
                  estimated_accuracy=None if final.accuracy is None else float(final.accuracy[0]),
                  checks=checks, notes={"anchor_mode": mode, "anchors": n_anchors, "subsets": n_subsets,
                                        "budget_exhausted": n_anchors < p.anchors})


def select_exact(ctx: SelectionContext, params: ExactParams) -> Choice:
    wanted = params.subsets
    n_subsets = _affordable(wanted, ctx.exact_runs_left(), "exact runs")
    subsets = ctx.random_subsets(n_subsets)
    runs = ctx.exact_many(subsets.tolist(), label="exact")
    ctx.count_explored(n_subsets)
    losses = torch.tensor([_objective(ctx, scores) for scores in runs])
    scores = influence_from_subsets(ctx.n, subsets, -losses)
    return Choice(ctx.top_k(scores), scores, notes={"subsets": n_subsets, "budget_exhausted": n_subsets < wanted})


def _affordable(wanted: int, fit: float, what: str) -> int:
    """How many of ``wanted`` steps to take when ``fit`` fit in max_passes; an InputError if not even one does."""
    if fit < 1:
        raise InputError("max_passes", f"leaves no room for one of the method's {what}")
    return int(min(wanted, fit))


def select_random(ctx: SelectionContext, params: Params) -> Choice:
    selected = [int(i) for i in ctx.random_subset()]
    scores = np.zeros(ctx.n)
    scores[selected] = 1.0
    return Choice(selected, scores)


def select_bm25(ctx: SelectionContext, params: Params) -> Choice:
    with ctx.phase("retrieve"):
        scores = set_scores(bm25_similarity(ctx.pool_inputs, ctx.query_inputs))
    return Choice(ctx.top_k(scores), scores)


def select_topk_embed(ctx: SelectionContext, params: Params) -> Choice:
    with ctx.phase("retrieve"):
        similarity = cosine_similarity(ctx.embed_texts(ctx.pool_inputs), ctx.embed_texts(ctx.query_inputs))
        scores = set_scores(similarity)
    return Choice(ctx.top_k(scores), scores)
