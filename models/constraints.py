"""What every selection honours, whatever the method.

Three constraints decide which pool demos are candidates at all, so a method never sees the others:
    exclude            pool ids never chosen;
    where              a filter on each demo's optional ``metadata`` object: {"source": "web"} keeps demos whose
                       metadata.source equals "web", {"lang": ["en", "de"]} those whose metadata.lang is one of
                       them; several keys must all match; a demo without the key does not match;
    max_prompt_tokens  the returned prompt before the query fits: any k demos of at most
                       (max_prompt_tokens - specials) // k tokens each do, so this too is a filter on demos
                       (a bound: a set mixing shorter and longer demos may fit as well).
One constrains the set: min_per_label, each label (option) appears at least this often in it. The context's
samplers, its top-k and the gradient search's swaps keep it (SelectionContext.allowed, top_k, random_subset).
A request that cannot be met is an InputError naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .data import Example, InputError

SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Constraints:
    max_prompt_tokens: int | None = None
    min_per_label: int = 0
    exclude: list[str] = field(default_factory=list)
    where: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Types and ranges, before any model work."""
        if self.max_prompt_tokens is not None and (isinstance(self.max_prompt_tokens, bool)
                                                   or not isinstance(self.max_prompt_tokens, int)
                                                   or self.max_prompt_tokens < 1):
            raise InputError("max_prompt_tokens", f"must be a positive integer, got {self.max_prompt_tokens!r}")
        if isinstance(self.min_per_label, bool) or not isinstance(self.min_per_label, int) or self.min_per_label < 0:
            raise InputError("min_per_label", f"must be a non-negative integer, got {self.min_per_label!r}")
        if not isinstance(self.exclude, list):
            raise InputError("exclude", "must be a list of pool ids")
        for i, demo_id in enumerate(self.exclude):
            if isinstance(demo_id, bool) or not isinstance(demo_id, (str, int)):
                raise InputError(f"exclude[{i}]", f"must be a pool id (string or integer), got {demo_id!r}")
        if not isinstance(self.where, dict):
            raise InputError("where", "must be an object: metadata key -> value or list of values")
        for key, wanted in self.where.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values or not all(isinstance(v, SCALARS) for v in values):
                raise InputError(f"where.{key}", "must be a string, number or boolean, or a non-empty list of them")

    def keeps(self, example: Example, excluded: set[str]) -> bool:
        """Whether exclude and where leave ``example`` a candidate."""
        if example.id in excluded:
            return False
        metadata = example.metadata or {}
        for key, wanted in self.where.items():
            if key not in metadata:
                return False
            if metadata[key] not in (wanted if isinstance(wanted, list) else [wanted]):
                return False
        return True


def candidate_indices(pool: list[Example], constraints: Constraints, k: int) -> list[int]:
    """Positions of the pool demos that exclude and where keep, at least k of them (an unknown id in exclude is
    an error too: a typo there would silently exclude nothing)."""
    ids = {example.id for example in pool}
    excluded = {str(demo_id) for demo_id in constraints.exclude}
    for i, demo_id in enumerate(constraints.exclude):
        if str(demo_id) not in ids:
            raise InputError(f"exclude[{i}]", f"no pool demo has id {str(demo_id)!r}")
    keep = [i for i, example in enumerate(pool) if constraints.keeps(example, excluded)]
    if len(keep) < min(k, len(pool)):  # a pool smaller than k is the pool's or k's problem, not theirs
        raise InputError("where" if constraints.where else "exclude",
                         f"leaves {len(keep)} candidate demos, fewer than k = {k}")
    return keep


def demo_token_limit(max_prompt_tokens: int, n_specials: int, k: int) -> int:
    """The longest demo (in tokens, separator included) a set of k may hold and still fit max_prompt_tokens."""
    return (max_prompt_tokens - n_specials) // k


def check_label_counts(labels: list[int], n_labels: int, k: int, min_per_label: int, options: list[str]) -> None:
    """InputError unless a set of k can hold min_per_label demos of each label from candidates with ``labels``."""
    if min_per_label == 0:
        return
    if min_per_label * n_labels > k:
        raise InputError("min_per_label", f"{min_per_label} of each of {n_labels} labels needs k >= "
                                          f"{min_per_label * n_labels}, k is {k}")
    for label, option in enumerate(options):
        have = sum(1 for demo_label in labels if demo_label == label)
        if have < min_per_label:
            raise InputError("min_per_label", f"label {option!r} has {have} candidate demos, fewer than {min_per_label}")
