"""Resuming a gradient search on a grown pool from its parent pool's selection for the same request.

A pool grown by appending examples (POST /v1/pools/{id}/examples) keeps its parent's demos first, in
the same order, so a parent pool index is the same index in the grown pool. The gradient at an anchor
depends only on the anchor's demos, the queries and the layout (template, options, slot width), not on
the demos outside it, so the parent search's anchor is a cache hit on the grown pool when the slot
width and the options are unchanged: when no appended demo is longer, rendered, than the parent's
widest, and no appended output is a new label (with ``options`` given, that holds by construction).
From that anchor the estimates of the swaps that put a new demo in are gathers and dot products with
the cached gradient: only the new demos' contributions are computed.

A resumed search starts at the parent's selected set (its exact outcome is cached too) and proposes
only swaps that put an appended demo in: the old demos had their chance in the parent's search, so the
grown pool's selection is the parent's, improved by the new demos where the evaluator confirms it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import Example, InputError


@dataclass(frozen=True)
class WarmStart:
    """What a selection on a grown pool resumes from (ids of the parent pool's demos)."""
    job: str  # the parent pool's job for the same request
    parent_size: int  # the grown pool's first parent_size demos are the parent pool's
    selected: list[str]  # the parent's result, in slot order
    anchor: list[str]  # the set whose gradient ranked the parent's swaps (result notes.anchor)

    @classmethod
    def from_dict(cls, value: dict) -> "WarmStart":
        try:
            return cls(job=str(value["job"]), parent_size=int(value["parent_size"]),
                       selected=[str(i) for i in value["selected"]], anchor=[str(i) for i in value["anchor"]])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError("warm_start", f"must have job, parent_size, selected and anchor: {error}") from None

    @classmethod
    def of(cls, job: str, parent_size: int, result: dict) -> "WarmStart | None":
        """From the parent pool's selection result (Engine.select's dict): its searched set and anchor; None when
        it has no notes.anchor (methods other than gradient) or searched no set (auto's gate returned retrieval).
        Under params.strategy auto the searched set is ``strategy.searched``, whatever prompt the check returned
        (the hybrid's ``selected`` is only the set's head, a retrieval's is empty), so the child's search resumes
        where the parent's ended and auto checks the prompts again on the grown pool."""
        anchor = result["notes"].get("anchor")
        searched = (result.get("strategy") or {}).get("searched") or [demo["id"] for demo in result["selected"]]
        if anchor is None or not searched:
            return None
        return cls(job=job, parent_size=parent_size, selected=list(searched), anchor=list(anchor))

    def to_dict(self) -> dict:
        return {"job": self.job, "parent_size": self.parent_size, "selected": self.selected, "anchor": self.anchor}


@dataclass(frozen=True)
class Resume:
    """A WarmStart in pool indices, for the search."""
    job: str
    selected: list[int]  # the start
    anchor: list[int]  # where the first gradient is taken (cached by the parent's search)
    new: list[int]  # the appended demos: the only ones a swap may put in

    def notes(self) -> dict:
        return {"job": self.job, "new_demos": len(self.new)}


def resume(warm: WarmStart, pool: list[Example], k: int, method: str) -> Resume:
    """The pool indices of ``warm`` in ``pool``; an InputError naming the field when they do not fit."""
    if method != "gradient":
        raise InputError("warm_start", f"only the gradient method resumes a search, not {method!r}")
    if not 0 < warm.parent_size < len(pool):
        raise InputError("warm_start.parent_size", f"must be between 1 and {len(pool) - 1}, got {warm.parent_size}")
    index = {example.id: i for i, example in enumerate(pool[:warm.parent_size])}
    for name, ids in (("selected", warm.selected), ("anchor", warm.anchor)):
        if len(ids) != k or len(set(ids)) != k:
            raise InputError(f"warm_start.{name}", f"must be {k} distinct demo ids, got {ids}")
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise InputError(f"warm_start.{name}", f"not among the parent pool's demos: {unknown[:5]}")
    return Resume(warm.job, [index[i] for i in warm.selected], [index[i] for i in warm.anchor],
                  list(range(warm.parent_size, len(pool))))
