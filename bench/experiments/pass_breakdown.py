"""Where the default's selection passes go: each model call of one default request, by the step that made it.

    python -m bench.experiments.pass_breakdown --datasets imdb --seeds 10

Runs the default request as bench.quality does (the split's pool and selection queries, the test inputs as
targets, no exact run of the returned prompt) and charges every pass the request reserves (PassCounter.reserve,
called before each model call with its forward-equivalents) to the step on the call stack: the gate (the search's
start, the language model's embeddings, the retrievals' prompts), the search (its anchor pass, its proposal
batches), the check of the candidates on held-out pool demos, the answer's retrieval, the search's diagnostic
checks. Prints one table per split and the total against the request's own count.
"""

from __future__ import annotations

import traceback
from collections import Counter

from iclsel.models import inference

from ..protocol import SEPARATOR
from ..quality import default_engine_factory
from .dev import dev_parser, dev_splits, parse_dev_args

STEPS = (  # (functions on the call stack, ...) -> the step; the first match wins
    (("_diagnostic_checks",), "search: diagnostic checks (not selection passes)"),
    (("_gate", "start_scores"), "gate: the search's start on the queries"),
    (("_gate", "_check"), "gate: the retrievals' prompts on the queries"),
    (("_gate",), "gate: the language model's embeddings (pool, queries)"),
    (("_ranked_candidates",), "search: anchor pass (the gradient)"),
    (("_search_subsample",), "search: proposal batches"),
    (("_result",), "answer: embeddings of the queries and targets"),
    (("_check",), "check: the candidates on held-out pool demos"),
    (("nearest",), "check: embeddings"),
)


def step(stack: list[str]) -> str:
    for names, name in STEPS:
        if all(n in stack for n in names):
            return name
    return "other"


def breakdown(engine, request) -> tuple[Counter, dict]:
    """(forward-equivalents per step, the request's result) for one selection."""
    charged: Counter = Counter()
    reserve = inference.PassCounter.reserve

    def charging(counter, cost):
        charged[step([frame.name for frame in traceback.extract_stack()])] += cost
        return reserve(counter, cost)

    inference.PassCounter.reserve = charging
    try:
        return charged, engine.select(request)
    finally:
        inference.PassCounter.reserve = reserve


def main(argv: list[str] | None = None) -> int:
    from iclsel.models.engine import SelectionRequest

    args = parse_dev_args(dev_parser(__doc__.splitlines()[0], ["imdb"], [10]), argv)
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
        request = SelectionRequest(pool=split.pool, queries=split.select, k=spec.k, method="gradient",
                                   options=options, template=spec.template, separator=SEPARATOR, seed=seed,
                                   params={"evaluate_selected": False}, targets=[t.input for t in split.test])
        charged, result = breakdown(new_engine(), request)
        passes = result["passes"]
        print(f"\n{dataset} seed {seed}: returned {result['strategy']['chosen']} (by {result['strategy']['by']}); "
              f"selection {passes['selection_forward_equivalent']}, diagnostics "
              f"{passes['diagnostics_forward_equivalent']} forward-equivalents")
        print("| step | forward-equivalents |\n|---|---|")
        for name, cost in sorted(charged.items(), key=lambda item: -item[1]):
            print(f"| {name} | {cost} |")
        print(f"| total charged (the request counts {passes['forward_equivalent']}) | {sum(charged.values())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
