"""The one entry point the CLI, the HTTP workers and the benchmarks call: Engine.select.

CONTRACT (other packages rely on it):

    engine = Engine(load_model("default"), cache=MemoryCache())
    result = engine.select(SelectionRequest(pool=[Example...], queries=[Example...], k=4),
                           progress=lambda phase, done, total: ..., should_cancel=lambda: False)

``result`` is a JSON-able dict:
    selected:   [{"id", "input", "output"}] in prompt order
    prompt:     {"text": demo prefix as the model sees it, "token_ids": [...]}
    scores:     {demo id: influence score (higher = better)} for every pool demo
    estimate:   {"loss", "accuracy"} estimated outcome of the selected set on the query set (None for
                methods without an estimate)
    exact:      {"loss", "accuracy"} exact outcome of the selected set on the query set (when measured)
    diagnostics: estimate-error diagnostics (gradient-based methods) or None
    passes:     {"forward": rows, "backward": rows, "forward_equivalent": forward + 2 * backward}
    timings:    {phase: seconds}
    cache:      {"hits": n, "misses": n}
    model:      {"name", "fingerprint", "device", "dtype"}
    method, k, seed, options, params: echo of what ran
Errors: InputError(field, message) for bad input; Cancelled when should_cancel() turned true.

Also (for benchmarks and exact checks):
    engine.evaluate(demos, queries, options=None, template=..., separator=...) -> dict
        demos: list[Example] shared by all queries (prefix-shared inference), or list[list[Example]]
        one demo list per query (e.g. per-query retrieval). Returns {"accuracy", "macro_f1", "loss",
        "predictions": [option per query], "passes": {...}, "seconds"}.
    engine.retrieve_per_query(pool, queries, k, method)  -> list[list[Example]]
        method "bm25" or "topk-embed": the k nearest pool demos for each query, as retrieval users do.
    engine.model.fingerprint -> str (content hash of model id/revision/file hash and dtype)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .data import Example

DEFAULT_TEMPLATE = "Input: {input}\nLabel: {output}"
DEFAULT_SEPARATOR = "\n\n"
METHODS = ("gradient", "gradre", "exact", "random", "bm25", "topk-embed")

ProgressFn = Callable[[str, int, int], None]


class Cancelled(RuntimeError):
    """The caller asked to stop (should_cancel() returned True)."""


@dataclass
class SelectionRequest:
    pool: list[Example]
    queries: list[Example]
    k: int = 4
    method: str = "gradient"
    options: list[str] | None = None  # label verbalizers; default: sorted set of outputs seen
    template: str = DEFAULT_TEMPLATE
    separator: str = DEFAULT_SEPARATOR
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # method parameters (see selectors)
