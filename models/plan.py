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


from iclsel.contract import ANCHOR_MODES

from .context import SelectionContext

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

    def seconds(self, per_pass: float, per_call: float) -> float:
        """What this work takes at a calibration's seconds per (token-weighted) pass and per model call."""
        return self.weighted * per_pass + self.calls * per_call


@dataclass(frozen=True)
class Costs:
    """What a method's cost is made of on one job (a method's ``cost(ctx, params, costs)`` adds them up)."""
    full: Work  # one exact run on every query
    final: Work  # the returned set's exact run (params.evaluate_selected), else nothing
    limit: float  # what the method may spend itself within max_passes (the final run kept back)
    embed: Work  # the retrieval embeddings (params.retrieve)
    anchor_passes: dict[str, int]  # per anchor mode: an anchor pass's forward-equivalents on every query
    anchor_chunks: int  # model calls of one anchor pass
    unshared_row: float  # tokens of a row with the prefix in it, over those of a row after a shared prefix

    def anchor(self, mode: str) -> Work:
        """An anchor pass on every query (its scores are the anchored set's exact run: no run of its own)."""
        passes = self.anchor_passes[mode]
        # a per-query gradient cannot share the prefix: each of its rows runs the whole prompt
        return Work(passes, self.anchor_chunks, passes * self.unshared_row if mode == "per-query" else passes)

    @staticmethod
    def fixed(work: Work) -> tuple[Work, Work]:
        return work, work


def costs(ctx: SelectionContext, evaluate_selected: bool, max_passes: int | None, embed_rows: int = 0) -> Costs:
    n_queries = len(ctx.queries)
    full = Work(ctx.runner.exact_cost(n_queries), 1)
    final = full if evaluate_selected else Work(0, 0)
    return Costs(full=full, final=final, limit=math.inf if max_passes is None else max_passes - final.passes,
                 embed=embeddings(embed_rows, ctx.runner.batch_size),
                 anchor_passes={mode: ctx.anchor_cost(mode) for mode in ANCHOR_MODES},
                 anchor_chunks=math.ceil(n_queries / ctx.anchor_chunk),
                 unshared_row=row_weight(ctx.layout, ctx.k, whole_prompt=True))


def embeddings(texts: int, batch_size: int, share: float = 1.0) -> Work:
    """The language model's embeddings of ``texts`` texts: a row each, a model call per batch; ``share``: the share
    of the layers they run (an embedding stopped early: ModelRunner.text_embeddings), counted rounded up."""
    return Work(math.ceil(texts * share - 1e-9), math.ceil(texts / batch_size), texts * share)


def row_weight(layout, own_demos: int, whole_prompt: bool = False) -> float:
    """Tokens of a query row that carries ``own_demos`` demos of its own (``whole_prompt``: and the model's special
    tokens, no prefix shared with any other row), over those of a row after a shared prefix; a demo takes the pool's
    average tokens."""
    row_tokens = sum(len(ids) for ids in layout.query_ids) / max(len(layout.query_ids), 1)
    own = own_demos * float(layout.demo_lengths.double().mean()) + (len(layout.special_ids) if whole_prompt else 0)
    return (own + row_tokens) / max(row_tokens, 1)


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


def plan(ctx: SelectionContext, method, params, max_passes: int | None, embed_rows: int = 0) -> Plan:
    """``method`` (models/methods.py) with its parsed ``params``: its cost(ctx, params, costs) is the (fewest, most)
    work, including the returned set's exact run where it is not one the method already ran, and ``embed_rows``
    of retrieval embeddings (passes before the max_passes cap)."""
    low, high = method.cost(ctx, params, costs(ctx, params.evaluate_selected, max_passes, embed_rows))
    low_passes, high_passes = low.passes, high.passes
    if max_passes is not None:
        low_passes, high_passes = min(low_passes, max_passes), min(high_passes, max_passes)
    expected = math.sqrt(low_passes * high_passes) if low_passes > 0 else high_passes
    calls = math.sqrt(low.calls * high.calls) if low.calls > 0 else high.calls
    weight = math.sqrt((low.weighted / max(low.passes, 1)) * (high.weighted / max(high.passes, 1)))
    per_pass, per_call, spent = calibrate(ctx)
    return Plan(method.name, round(expected), round(low_passes), round(high_passes),
                round(expected * weight * per_pass + calls * per_call, 3), per_pass, per_call, spent, ctx.n)
