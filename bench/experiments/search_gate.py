"""Can auto tell before searching that per-query retrieval will win? A gate before the search.

    python -m bench.experiments.search_gate --datasets imdb bbc sms sdg --seeds 10 11 12 13 14 15

On sms and sdg every searched set so far lost to per-query retrieval on the test queries, and auto spent the
search's passes for nothing. The gate measured here: before the search, run the search's label-balanced start
(the set it starts from) and both per-query retrievals (each selection query's k nearest pool demos by
topk-embed and bm25) on the selection queries. Retrieval never looks at labels and the start is not fitted to
the queries, so the three figures are honest. If the better retrieval beats the start by at least G, skip the
search and the held-out check and return that retrieval; otherwise search and check as auto does now.

Dev seeds only (10 and above). For each dataset and seed with the journal's default gradient run and both
per-query baselines, it runs the gradient method with no search rounds (its start; the record must name the
journal run's anchor, the same start) and the retrievals' prompts on the selection queries, and appends one
record per (dataset, seed) to bench/experiments/results/search_gate.jsonl (a resume skips what is there). The
table replays the gate at several G: a skip returns the per-query baseline's test record, no skip the current
rule's pick (four candidates, an accuracy tie to the earlier; the hybrid's test from hybrid_candidate.py).
"""

from __future__ import annotations

import numpy as np
import torch

from iclsel.models.engine import SelectionRequest
from iclsel.models.inference import PassCounter
from iclsel.models.strategy import HYBRID, PER_QUERY, Check, Neighbours

from ..protocol import SEPARATOR
from ..quality import BENCH_DIR, default_engine_factory
from . import hybrid_candidate
from .dev import (BASELINES, append_measured, dev_parser, mean_accuracy, pending,
                  paired_difference, parse_dev_args, replay_main, strategy_tests)

RESULTS = BENCH_DIR / "experiments" / "results" / "search_gate.jsonl"
GATES = (0.125, 0.1875, 0.25, 0.3125)  # the pre-registered G is 0.25; the others for reference
DECIDING = 0.25
RETRIEVALS = ("topk-embed", "bm25")  # the per-query retrievals the gate compared (its records hold these)


def measure(engine, split, spec, options, seed: int, retrievals: tuple[str, ...] = RETRIEVALS) -> dict:
    """The start's and each retrieval's correct [Q] on the selection queries, and the rows they cost."""
    request = SelectionRequest(pool=split.pool, queries=split.select, k=spec.k, method="gradient", options=options,
                               template=spec.template, separator=SEPARATOR, seed=seed,
                               params={"strategy": "set", "rounds": 0, "evaluate_selected": False})
    start = engine.select(request)
    start_ids = [d["id"] for d in start["selected"]]
    by_id = {d.id: d for d in split.pool}
    resolved = start["options"]
    gold = torch.tensor([resolved.index(q.output) for q in split.select])
    counter = PassCounter()
    checks = {"start": Check.of("start", engine.scores([by_id[i] for i in start_ids], split.select, resolved,
                                                       spec.template, SEPARATOR, None, counter), gold)}
    start_rows = counter.forward  # [Q x rows per query]: one row per query, or one per (query, option)
    checks.update(retrieval_checks(engine, split, spec, resolved, retrievals, counter))
    return {"start": start_ids, "correct": {name: c.correct.tolist() for name, c in checks.items()},
            "rows_per_query": int(start_rows) // len(split.select), "embedded": len(split.pool) + len(split.select)}


def retrieval_checks(engine, split, spec, resolved: list[str], retrievals: tuple[str, ...],
                     counter: PassCounter) -> dict[str, Check]:
    """Each per-query retrieval's prompts (every selection query's k nearest pool demos) on the selection queries."""
    gold = torch.tensor([resolved.index(q.output) for q in split.select])
    neighbours = Neighbours(engine, split.pool, counter)
    checks = {}
    for by in retrievals:
        nearest = neighbours.nearest([q.input for q in split.select], by, spec.k)
        checks[by] = Check.of(by, engine.scores([[split.pool[i] for i in ids] for ids in nearest], split.select,
                                                resolved, spec.template, SEPARATOR, None, counter), gold)
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["imdb", "bbc", "sms", "sdg"], [10, 11, 12, 13, 14, 15])
    return replay_main(parse_dev_args(parser, argv), RESULTS, run, print_table)


def run(args, journal: dict) -> None:
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS):
        anchor = journal[(dataset, seed, "gradient")]["notes"].get("anchor")

        def measured() -> dict:
            found = measure(new_engine(), split, spec, options, seed)
            return {**found, "same_start": anchor == found["start"]}

        record = append_measured(RESULTS, {"dataset": dataset, "seed": seed}, measured)
        accuracy = {name: np.mean(c) for name, c in record["correct"].items()}
        print(f"{dataset} {seed}: " + ", ".join(f"{name} {a:.3f}" for name, a in accuracy.items())
              + f" (same start as the run: {record['same_start']})", flush=True)


def gate(record: dict, g: float) -> str | None:
    """The retrieval the gate returns without searching (None: it searches)."""
    accuracy = {name: float(np.mean(c)) for name, c in record["correct"].items()}
    best = max(RETRIEVALS, key=lambda by: accuracy[by])  # max keeps the first of equals: topk-embed
    return best if accuracy[best] - accuracy["start"] >= g else None


def passes_today(record: dict, gradient: dict) -> float:
    """The journal run's selection forward-equivalents (plus the hybrid's check where the run predates it)."""
    run = gradient["passes_detail"]["selection_forward_equivalent"]
    if not any(c["strategy"] == HYBRID for c in gradient["strategy"]["checks"]):
        run += gradient["strategy"]["validation_queries"] * record["rows_per_query"]
    return run


def passes_gated(record: dict, gradient: dict, skipped: bool, targets: int) -> float:
    """Selection forward-equivalents with the gate: a skip spends the embeddings (pool, queries, targets) and the
    three runs on the queries; a search spends today's, the gate's two retrieval runs and the queries' embeddings
    where today's answer did not embed them (the start's run is the search's own)."""
    rows = record["rows_per_query"] * len(record["correct"]["start"])
    if skipped:
        return record["embedded"] + targets + 3 * rows
    embedded_queries = 0 if gradient["strategy"]["chosen"] in (*PER_QUERY, HYBRID) else len(record["correct"]["start"])
    return passes_today(record, gradient) + 2 * rows + embedded_queries


def print_table(records: list[dict], journal: dict) -> None:
    """Per dataset and G: the seeds skipped, auto's mean test accuracy, its difference from auto without the gate
    (paired per test query, 95% bootstrap interval) and the mean selection passes as a share of exact's
    (64 subsets on every selection query)."""
    hybrids = hybrid_candidate.by_split()
    print("| dataset | seeds | G | skips (seed: retrieval - start) | auto | minus no gate | passes / exact's (no gate) |\n"
          "|---|---|---|---|---|---|---|")
    for dataset in dict.fromkeys(rec["dataset"] for rec in records):
        rows = sorted((rec for rec in records if rec["dataset"] == dataset
                       and (dataset, rec["seed"]) in hybrids), key=lambda x: x["seed"])
        for rec in rows:
            if not rec["same_start"]:
                print(f"  {dataset} {rec['seed']}: the start differs from the run's anchor")
        print(f"  {dataset} retrieval - start on the selection queries: " + " ".join(
            f"{rec['seed']}:{max(np.mean(rec['correct'][by]) for by in RETRIEVALS) - np.mean(rec['correct']['start']):+.2f}"
            for rec in rows))
        gradients = [journal[(dataset, rec["seed"], "gradient")] for rec in rows]
        tests = [strategy_tests(journal, dataset, rec["seed"], hybrids[(dataset, rec["seed"])])
                 for rec in rows]
        now = [hybrid_candidate.replay(g, hybrids[(dataset, rec["seed"])], tie="order")
               for g, rec in zip(gradients, rows)]
        base = [np.array(t[p]["correct"], float) for p, t in zip(now, tests)]
        exact = [64 * rec["rows_per_query"] * len(rec["correct"]["start"]) for rec in rows]
        targets = [len(journal[(dataset, rec["seed"], BASELINES["bm25"])]["correct"]) for rec in rows]
        unchanged = np.mean([passes_today(rec, g) / e for rec, g, e in zip(rows, gradients, exact)])
        for g in GATES:
            picks = [gate(rec, g) for rec in rows]
            got = [np.array(t[p or n]["correct"], float) for p, n, t in zip(picks, now, tests)]
            spent = [passes_gated(rec, gr, p is not None, t) / e
                     for rec, gr, p, t, e in zip(rows, gradients, picks, targets, exact)]
            skips = " ".join(f"{rec['seed']}:{np.mean(rec['correct'][p]) - np.mean(rec['correct']['start']):+.2f}"
                             for rec, p in zip(rows, picks) if p) or "none"
            mark = " (pre-registered)" if g == DECIDING else ""
            print(f"| {dataset} | {' '.join(str(rec['seed']) for rec in rows)} | {g:.3f}{mark} | {skips} | "
                  f"{mean_accuracy(got)} | {paired_difference(got, base)} | {np.mean(spent):.2f} ({unchanged:.2f}) |")


if __name__ == "__main__":
    raise SystemExit(main())
