"""What a selection will cost, before it runs (a request's dry_run).

Passes are forward-equivalents (forward rows + 2 x backward rows, inference.PassCounter), counted from the
sizes and the method's parsed parameters with the runner's own cost formulas (ModelRunner.exact_cost,
anchor_cost). Fixed-work methods (random, bm25, topk-embed, exact, gradre) are counted exactly. The gradient
search is adaptive: it stops when a round finds no better set, or at its budget, so its passes lie between
the fewest it can spend (no move in the first round) and the most (every round moves, or the budget); the
estimate is their geometric mean, which is within 2x of every value in the range when the range spans at
most 4x (with the defaults it spans about 2.7x). max_passes caps all of it.

Seconds: calibration runs of this request's prompts (exact runs of a label-balanced set on one query and on
16) give, on this model and machine, the seconds per forward-equivalent and per model call (each call runs a
prefix and pays fixed overheads: the gradient search makes many small calls); the estimate applies both to the
expected passes and calls, a per-query anchor's passes weighted by their longer rows (the prefix in each).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


from .context import SelectionContext, fitting

CALIBRATION_QUERIES = 16


@dataclass(frozen=True)
class Plan:
    method: str
    estimated_passes: int  # expected forward-equivalents of the whole job (selection, checks, final run)
    passes_low: int  # the fewest the job can spend
    passes_high: int  # the most it can spend (max_passes at most)
    estimated_seconds: float  # seconds_per_pass x passes + seconds_per_call x model calls, expected
    seconds_per_pass: float  # calibrated on this request's prompts, on this model and machine
    seconds_per_call: float  # the same: what each model call costs on top of its passes (its prefix, overheads)
    calibration_passes: int  # spent to calibrate (the only model work of a dry run)
    candidates: int  # pool demos the constraints leave

    def to_dict(self) -> dict:
        return {"dry_run": True, **self.__dict__}


@dataclass(frozen=True)
class Work:
    """Forward-equivalents and model calls (exact runs, anchor chunks, embedding batches: each one prefix), and
    the passes weighted by their tokens relative to a row after a shared prefix (what the time goes by)."""
    passes: float
    calls: float
    weighted: float = -1.0  # default: the passes themselves

    def __post_init__(self):
        if self.weighted < 0:
            object.__setattr__(self, "weighted", self.passes)

    def __add__(self, other: "Work") -> "Work":
        return Work(self.passes + other.passes, self.calls + other.calls, self.weighted + other.weighted)

    def __mul__(self, times: float) -> "Work":
        return Work(self.passes * times, self.calls * times, self.weighted * times)


def work_range(ctx: SelectionContext, method: str, evaluate_selected: bool, max_passes: int | None,
               embed_rows: int = 0) -> tuple[Work, Work]:
    """(fewest, most) work of ``method`` on ``ctx`` (passes before the max_passes cap), including the returned set's
    exact run where it is not one the method already ran, and ``embed_rows`` of retrieval embeddings."""
    from .selectors import _batch_cost, _sampling_params, _search_params  # the methods' own parsing and batch cost

    n_queries = len(ctx.queries)
    full = Work(ctx.runner.exact_cost(n_queries), 1)  # one exact run on every query
    final = full if evaluate_selected else Work(0, 0)
    limit = math.inf if max_passes is None else max_passes - final.passes  # what a method may spend itself
    embed = Work(embed_rows, math.ceil(embed_rows / ctx.runner.batch_size))

    def anchor(mode: str) -> Work:
        """An anchor pass on every query (its scores are the anchored set's exact run: no run of its own)."""
        chunks = math.ceil(n_queries / ctx.anchor_chunk)
        passes = ctx.anchor_cost(mode)
        # a per-query gradient cannot share the prefix: each of its rows runs the whole prompt
        return Work(passes, chunks, passes * unshared_row if mode == "per-query" else passes)

    # tokens of a row with the prefix in it, over those of a row after a shared prefix
    row_tokens = sum(len(ids) for ids in ctx.layout.query_ids) / max(len(ctx.layout.query_ids), 1)
    unshared_row = (len(ctx.layout.special_ids) + ctx.k * _typical_width(ctx) + row_tokens) / max(row_tokens, 1)

    def fixed(work: Work) -> tuple[Work, Work]:
        return work, work

    if method in ("random", "bm25"):
        return fixed(embed + final)
    if method == "topk-embed":
        rows = ctx.n + len(ctx.query_inputs)
        return fixed(embed + Work(rows, math.ceil(rows / ctx.runner.batch_size)) + final)
    if method == "exact":
        subsets = min(_sampling_params(ctx, estimated=False).subsets, fitting(limit - embed.passes, full.passes))
        return fixed(embed + full * subsets + final)
    if method == "gradre":
        p = _sampling_params(ctx, estimated=True)
        anchors = min(p.anchors, fitting(limit - embed.passes, anchor(p.mode).passes))
        checks = min(p.checks, p.subsets, fitting(limit - embed.passes - anchors * anchor(p.mode).passes, full.passes))
        return fixed(embed + anchor(p.mode) * anchors + full * (checks + 1))  # the returned set is checked
    p = _search_params(ctx)
    before = embed + (full * len(p.starts) if len(p.starts) > 1 else Work(0, 0))
    if p.evaluator == "subsample":
        # the start's gradient and exact value (one pass, unless a resumed search ranks at its parent's anchor)
        start = anchor(p.mode) + (full if p.rank_anchor else Work(0, 0))
        proposals = ctx.k * min(p.per_slot, ctx.n - ctx.k)
        rows = ctx.runner.rows_per_query
        screen = min(p.screen, n_queries)
        fresh = min(p.sample, n_queries - screen)  # the finalists' rows beyond the screen
        least = Work((proposals * screen + p.finalists * fresh) * rows, proposals + p.finalists)
        most_batch = least + Work((screen + fresh) * rows, 2)  # the current set on both samples as well
        room = min(p.budget or math.inf, limit - before.passes) - start.passes
        most = min(p.rounds * (1 + p.patience), fitting(room, _batch_cost(ctx, p, proposals)))
        fewest = min(1 + p.patience, most)  # no move in the first round
        # diagnostics: checks - 1 evaluated sets and the returned one (the start's run when it never moved)
        return (before + start + least * fewest + full * (p.checks - 1),
                before + start + most_batch * most + full * p.checks)
    if p.evaluator == "exact":
        batch = full * (ctx.k if p.propose == "per-slot" else p.candidates)
        return (before + anchor(p.mode) + batch * (1 + p.patience),
                before + (anchor(p.mode) + batch * (1 + p.patience)) * p.rounds + anchor(p.mode))
    step = anchor(p.mode)  # first-order: an anchor per move; the checks run exactly
    return before + step + full * p.checks, before + step * (p.rounds + 1) + full * p.checks


def _typical_width(ctx: SelectionContext) -> float:
    """Tokens a demo takes in a prompt, on average over the pool."""
    return float(ctx.layout.demo_lengths.double().mean())


def calibrate(ctx: SelectionContext) -> tuple[float, float, int]:
    """(seconds per forward-equivalent, seconds per model call, passes spent), from exact runs of a label-balanced
    set on one query and on up to CALIBRATION_QUERIES queries: the slope and the intercept of time against passes.
    Each is run three times and the fastest kept (the first run also warms up)."""
    subset = ctx.balanced_subset()
    before = ctx.runner.counter.forward_equivalent

    def timed(rows: list[int]) -> tuple[float, int]:
        best = math.inf
        for _ in range(3):
            started, at = time.perf_counter(), ctx.runner.counter.forward_equivalent
            ctx.runner.exact_scores(subset, rows)
            best, passes = min(best, time.perf_counter() - started), ctx.runner.counter.forward_equivalent - at
        return best, passes

    one_seconds, one_passes = timed(ctx.queries[:1])
    many_seconds, many_passes = timed(ctx.queries[:CALIBRATION_QUERIES])
    per_pass = max(many_seconds - one_seconds, 0.0) / max(many_passes - one_passes, 1)
    if per_pass == 0.0:  # one query only, or noise: all of it per pass
        per_pass = many_seconds / max(many_passes, 1)
    per_call = max(one_seconds - per_pass * one_passes, 0.0)
    return per_pass, per_call, ctx.runner.counter.forward_equivalent - before


def plan(ctx: SelectionContext, method: str, evaluate_selected: bool, max_passes: int | None,
         embed_rows: int = 0) -> Plan:
    low, high = work_range(ctx, method, evaluate_selected, max_passes, embed_rows)
    low_passes, high_passes = low.passes, high.passes
    if max_passes is not None:
        low_passes, high_passes = min(low_passes, max_passes), min(high_passes, max_passes)
    expected = math.sqrt(low_passes * high_passes) if low_passes > 0 else high_passes
    calls = math.sqrt(low.calls * high.calls) if low.calls > 0 else high.calls
    weight = math.sqrt((low.weighted / max(low.passes, 1)) * (high.weighted / max(high.passes, 1)))
    per_pass, per_call, spent = calibrate(ctx)
    return Plan(method, round(expected), round(low_passes), round(high_passes),
                round(expected * weight * per_pass + calls * per_call, 3), per_pass, per_call, spent, ctx.n)
