"""Selectors, one interface: select_<name>(ctx) -> Choice.

- gradient: trust-region search. Start from the best (by exact loss) of ``starts`` label-balanced sets;
  anchor at the current set, estimate every single swap (slot s <- demo i) to first order, run exactly the
  best-estimated swap of each slot (propose="per-slot"; "global": the ``candidates`` best overall), move to
  the best if it lowers the exact objective, else try the next batch (``patience`` times), repeat.
  Estimates stay local (one demo differs from the anchor), where DESIGN.md section 2 found them informative,
  and exact runs confirm every move, so the query-set loss never goes up. moves=same-label restricts the
  swaps to demos with the same label as the one they replace.
- gradre: the paper's random ensemble: random k-subsets, a few random anchors, score = mean estimated
  outcome of the subsets containing a demo.
- exact: the same sampling with exact inference for every subset (the reference, and the cost saved).
- random, bm25, topk-embed: baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .context import SelectionContext
from .data import InputError
from .diagnostics import Check
from .estimate import estimate_with_anchors
from .outcome import OBJECTIVES, objective, scored_rows
from .retrieval import bm25_similarity, cosine_similarity, set_scores, top_k_ascending


DEFAULT_OBJECTIVE = "loss"  # params.objective of the gradient search (outcome.OBJECTIVES)
PROPOSALS = ("per-slot", "global")  # params.propose of the gradient search (see _proposals)
DEFAULT_PROPOSE = "per-slot"
DEFAULT_PATIENCE = 1  # params.patience: further batches of proposals when one confirms no improvement


@dataclass
class Choice:
    selected: list[int]  # pool indices in slot (prompt) order
    scores: np.ndarray  # [n] influence score per demo, higher = better
    estimated_loss: float | None = None
    estimated_accuracy: float | None = None
    checks: list[Check] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


def _param(ctx: SelectionContext, name: str, default, kind=int):
    value = ctx.params.get(name, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"params.{name}", f"must be {kind.__name__}, got {value!r}") from None


def influence_from_subsets(n: int, subsets: torch.Tensor, outcome: torch.Tensor) -> np.ndarray:
    """Paper aggregation: score[i] = mean outcome of the sampled subsets containing demo i
    (demos never sampled get the lowest observed score)."""
    outcome = outcome.double()
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, subsets.reshape(-1), outcome.repeat_interleave(subsets.shape[1]))
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, subsets.reshape(-1), torch.ones(subsets.numel(), dtype=torch.float64))
    mean = total / count.clamp_min(1)
    floor = float(mean[count > 0].min()) if bool((count > 0).any()) else 0.0
    return torch.where(count > 0, mean, torch.full_like(mean, floor)).numpy()


def _single_swaps(anchor: list[int], n: int, labels: list[str] | None = None) -> torch.Tensor:
    """[k * (n - k), k]: every subset that replaces one slot of ``anchor`` by a demo not in it.
    With ``labels`` (one per pool demo), only by a demo of the same label: [sum over slots of
    (demos outside the anchor with that slot's label), k]."""
    outside = [i for i in range(n) if i not in set(anchor)]
    base = torch.tensor(anchor, dtype=torch.long)
    swaps = [base.repeat(0, 1)]
    for slot, member in enumerate(anchor):
        replacements = [i for i in outside if labels is None or labels[i] == labels[member]]
        block = base.repeat(len(replacements), 1)
        block[:, slot] = torch.tensor(replacements, dtype=torch.long)
        swaps.append(block)
    return torch.cat(swaps)


def select_gradient(ctx: SelectionContext) -> Choice:
    rounds = _param(ctx, "rounds", 4)
    candidates = _param(ctx, "candidates", 4)
    mode = _param(ctx, "anchor_mode", "label-groups", str)
    swap_budget = _param(ctx, "swaps", 0)  # single swaps estimated per round; 0 = all k * (n - k)
    init = _param(ctx, "init", "balanced", str)
    if init not in ("balanced", "random"):
        raise InputError("params.init", f"must be 'balanced' or 'random', not {init!r}")
    move_set = _param(ctx, "moves", "any", str)
    if move_set not in ("any", "same-label"):
        raise InputError("params.moves", f"must be 'any' or 'same-label', not {move_set!r}")
    # same-label: a move replaces a demo by one with the same output, so the start's label mix is kept and
    # each move changes only a demo's input text: a smaller step from the anchor than a label change.
    move_labels = ctx.layout.demo_outputs if move_set == "same-label" else None
    goal = _param(ctx, "objective", DEFAULT_OBJECTIVE, str)
    if goal not in OBJECTIVES:
        raise InputError("params.objective", f"must be one of {list(OBJECTIVES)}, not {goal!r}")
    if goal != "loss" and mode == "mean-loss":
        raise InputError("params.objective", f"{goal!r} needs per-query margins: anchor_mode 'label-groups' or 'per-query'")
    propose = _param(ctx, "propose", DEFAULT_PROPOSE, str)
    if propose not in PROPOSALS:
        raise InputError("params.propose", f"must be one of {list(PROPOSALS)}, not {propose!r}")
    patience = _param(ctx, "patience", DEFAULT_PATIENCE)
    if patience < 0:
        raise InputError("params.patience", f"must be 0 or more, got {patience}")
    n_starts = _param(ctx, "starts", 1)
    if n_starts < 1:
        raise InputError("params.starts", f"must be at least 1, got {n_starts}")
    starts = [ctx.balanced_subset() if init == "balanced" else [int(i) for i in ctx.rng.choice(ctx.n, ctx.k, replace=False)]
              for _ in range(n_starts)]
    current = starts[0]
    if n_starts > 1:  # run every start exactly (forward passes only) and search from the best
        start_losses = [_objective(ctx, scores, goal) for scores in ctx.exact_many(starts, label="starts")]
        ctx.explored += n_starts
        current = starts[int(np.argmin(start_losses))]
    checks: list[Check] = []
    proposed_by: dict[tuple, Check] = {}
    moves = 0
    rounds_run = 0
    for round_index in range(rounds):
        ctx.progress("search", round_index, rounds)
        rounds_run += 1
        estimator = ctx.anchor(current, mode)
        with ctx.phase("estimate"):
            swaps = _single_swaps(current, ctx.n, move_labels)
            if swaps.shape[0] == 0:
                break  # no demo left to swap in (same-label moves, every demo of each label already in)
            if 0 < swap_budget < swaps.shape[0]:
                swaps = swaps[torch.from_numpy(ctx.rng.choice(swaps.shape[0], swap_budget, replace=False))]
            estimate = estimator.estimate(swaps, kind=goal)
            ctx.explored += swaps.shape[0]
            batches = _proposals(swaps, estimate["objective"], torch.tensor(current), propose, candidates, patience)
        anchor_value = estimator.objective(goal)
        moved = False
        for batch in batches:  # the next batch only when no swap of this one lowered the exact objective
            exact_runs = ctx.exact_many([swaps[i].tolist() for i in batch], label="confirm")
            for index, scores in zip(batch.tolist(), exact_runs):
                subset = swaps[index].tolist()
                check = Check(subset, float(estimate["loss"][index]), estimator.loss, scores,
                              _margins(estimator, swaps[index]))
                checks.append(check)
                proposed_by[tuple(subset)] = check
            exact_values = [_objective(ctx, s, goal) for s in exact_runs]
            winner = int(np.argmin(exact_values))
            if exact_values[winner] < anchor_value:
                current = swaps[batch[winner]].tolist()
                moves += 1
                moved = True
                break
        if not moved:
            break  # no confirmed improvement around this anchor: a local optimum of the search
    ctx.progress("search", rounds, rounds)

    final = ctx.anchor(current, mode)  # cached when the loop ended on it; else one more anchor pass
    with ctx.phase("estimate"):
        swaps = _single_swaps(current, ctx.n)
        swap_loss = final.estimate(swaps)["loss"].view(ctx.k, ctx.n - ctx.k)  # [k, n-k]
        outside = [i for i in range(ctx.n) if i not in set(current)]
        # score[i] = mean over slots of (mean estimated loss of a swap in that slot - estimated loss with i there)
        slot_mean = swap_loss.mean(1, keepdim=True)
        scores = np.zeros(ctx.n)
        scores[outside] = (slot_mean - swap_loss).mean(0).numpy()
        for slot, member in enumerate(current):
            scores[member] = float(slot_mean[slot] - final.loss) / ctx.k
    returned = proposed_by.get(tuple(current)) or Check(current, final.loss, final.loss, ctx.exact(current),
                                                        _margins(final, torch.tensor(current)), is_anchor=True)
    if not any(check is returned for check in checks):
        checks.append(returned)
    return Choice(current, scores, estimated_loss=returned.estimated_loss, checks=checks,
                  notes={"moves": moves, "move_set": move_set, "anchor_mode": mode, "rounds_run": rounds_run,
                         "starts": n_starts, "objective": goal, "propose": propose, "patience": patience,
                         "confirmed": len(checks)})


def _proposals(swaps: torch.Tensor, estimated: torch.Tensor, anchor: torch.Tensor, propose: str,
               candidates: int, patience: int) -> list[torch.Tensor]:
    """Which single swaps [S, k] to run exactly, as 1 + patience batches of swap indices, best first.

    ``estimated`` [S]: each swap's estimated objective (lower is better).
    global: the ``candidates`` lowest estimates, then the next ``candidates``, ...
    per-slot: the lowest estimate within each slot (k swaps), then the second lowest of each, ...
    Measured on BBC dev seeds (bench/results/dev/swap_study_bbc.md, python -m bench.swap_study): the first-order estimate ranks the swaps within a
    slot (Spearman about 0.3-0.5) but not across slots, where it gets the slot's mean effect wrong."""
    order = torch.argsort(estimated)
    if propose == "global":
        return [b for b in order[: candidates * (1 + patience)].split(candidates) if b.numel()]
    slot_of = (swaps != anchor).int().argmax(1)[order]  # [S] the slot each swap changes, in estimate order
    ranked = [order[slot_of == s] for s in range(anchor.shape[0])]  # per slot, best estimate first
    return [torch.stack([r[level] for r in ranked if r.numel() > level])
            for level in range(1 + patience) if any(r.numel() > level for r in ranked)]


def _margins(estimator, subset: torch.Tensor) -> torch.Tensor | None:
    """Estimated per-query margins [Q, O] of one subset, NaN on rows the anchor did not score (per-query
    anchors only)."""
    if not estimator.per_query:
        return None
    margins = estimator.all_rows_margins(subset)
    return margins - margins[:, :1]  # relative to option 0, as diagnostics compare them


def _objective(ctx: SelectionContext, scores: torch.Tensor, kind: str = "loss") -> float:
    """outcome.objective of one subset's exact scores [Q, O] over its scored queries."""
    keep = scored_rows(scores)
    return float(objective(scores[keep], ctx.layout.gold[keep], kind))


def select_gradre(ctx: SelectionContext) -> Choice:
    n_anchors = _param(ctx, "anchors", 2)
    n_subsets = _param(ctx, "subsets", 64)
    n_checks = _param(ctx, "checks", 8)
    mode = _param(ctx, "anchor_mode", "per-query", str)
    anchors = ctx.random_subsets(n_anchors)
    estimators = []
    for a in range(n_anchors):
        ctx.progress("anchors", a, n_anchors)
        estimators.append(ctx.anchor(anchors[a].tolist(), mode))
    subsets = ctx.random_subsets(n_subsets)
    with ctx.phase("estimate"):
        estimate = estimate_with_anchors(estimators, subsets)
        ctx.explored += n_subsets
        scores = influence_from_subsets(ctx.n, subsets, -estimate["loss"])
    selected = top_k_ascending(scores, ctx.k)
    to_check = [subsets[i].tolist() for i in range(min(n_checks, n_subsets))] + [selected]
    with ctx.diagnostic():
        exact_runs = ctx.exact_many(to_check, label="diagnostics")
    checks = []
    for subset, exact in zip(to_check[:-1], exact_runs[:-1]):
        row = subsets.tolist().index(subset)
        estimator = estimators[int(estimate["anchor"][row])]
        checks.append(Check(subset, float(estimate["loss"][row]), float(estimate["zero_order"][row]), exact,
                            _margins(estimator, subsets[row])))
    final = estimate_with_anchors(estimators, torch.tensor([selected]))
    chosen = estimators[int(final["anchor"][0])]
    checks.append(Check(selected, float(final["loss"][0]), float(final["zero_order"][0]), exact_runs[-1],
                        _margins(chosen, torch.tensor(selected))))
    return Choice(selected, scores, estimated_loss=float(final["loss"][0]),
                  estimated_accuracy=None if final["accuracy"] is None else float(final["accuracy"][0]),
                  checks=checks, notes={"anchor_mode": mode, "anchors": n_anchors, "subsets": n_subsets})


def select_exact(ctx: SelectionContext) -> Choice:
    n_subsets = _param(ctx, "subsets", 64)
    subsets = ctx.random_subsets(n_subsets)
    runs = ctx.exact_many(subsets.tolist(), label="exact")
    ctx.explored += n_subsets
    losses = torch.tensor([_objective(ctx, scores) for scores in runs])
    scores = influence_from_subsets(ctx.n, subsets, -losses)
    return Choice(top_k_ascending(scores, ctx.k), scores, notes={"subsets": n_subsets})


def select_random(ctx: SelectionContext) -> Choice:
    selected = [int(i) for i in ctx.rng.choice(ctx.n, ctx.k, replace=False)]
    scores = np.zeros(ctx.n)
    scores[selected] = 1.0
    return Choice(selected, scores)


def select_bm25(ctx: SelectionContext) -> Choice:
    with ctx.phase("retrieve"):
        scores = set_scores(bm25_similarity(ctx.pool_inputs, ctx.query_inputs))
    return Choice(top_k_ascending(scores, ctx.k), scores)


def select_topk_embed(ctx: SelectionContext) -> Choice:
    with ctx.phase("retrieve"):
        similarity = cosine_similarity(ctx.embed_texts(ctx.pool_inputs), ctx.embed_texts(ctx.query_inputs))
        scores = set_scores(similarity)
    return Choice(top_k_ascending(scores, ctx.k), scores)


SELECTORS = {
    "gradient": select_gradient,
    "gradre": select_gradre,
    "exact": select_exact,
    "random": select_random,
    "bm25": select_bm25,
    "topk-embed": select_topk_embed,
}
