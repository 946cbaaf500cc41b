"""Would a hybrid prompt earn a place among auto's candidates? The hybrid reuses auto's searched set, no extra
search: its first k - r demos shared by every query, then each query's r nearest pool demos by embedding (best
last; never a shared demo, never the query itself), then the query.

    python -m bench.experiments.hybrid_candidate --datasets bbc sdg sms imdb --seeds 10 11 12 13 14 15

Dev seeds (10 and above) decide; --report-test-seeds replays test seeds afterwards, to report what the decided
default gives (the table keeps them apart). It reads the quality benchmark's journal (bench/results/quality_runs.jsonl): the
default `gradient` record of each dataset and seed (auto's searched set and its checks) and the per-query
baselines of the same split. For each it measures the hybrid twice:

    check     on auto's own held-out validation demos (the rows auto drew, scored as auto scores them; the
              searched set's check is re-run beside it and must match the journal's, or the seed is skipped)
    test      on the seed's test queries, as the benchmark scores every method

and replays auto with the hybrid as a fourth candidate: the best check by accuracy, an accuracy tie broken by the
loss (as the journal's runs chose) or given to the earlier candidate (as auto chooses now); its test accuracy
is the chosen strategy's (set: the searched set's; topk-embed, bm25: the per-query baselines'; hybrid: measured
here). Appends one record per (dataset, seed, r) to bench/experiments/results/hybrid_candidate.jsonl (a resume
skips what is there) and prints the table: auto as it is, auto with the hybrid (ties by loss, then to the
earlier), the hybrid alone, and the paired differences with 95% bootstrap intervals (seeds and test queries
resampled).
"""

from __future__ import annotations

import numpy as np
import torch

from iclsel.contract import DEFAULT_COMPARE, GradientParams
from iclsel.models.inference import PassCounter
from iclsel.models.strategy import HYBRID, PER_QUERY, Check, Neighbours

from ..protocol import DATASET_SPECS, SEPARATOR
from ..quality import BENCH_DIR, _evaluate, default_engine_factory
from .dev import (AutoView, append_measured, dev_parser, dev_splits, has_default_run, mean_accuracy,
                  paired_difference, parse_dev_args, read_records, replay_main, seed_kind, set_check_matches,
                  strategy_tests)

RESULTS = BENCH_DIR / "experiments" / "results" / "hybrid_candidate.jsonl"
VALIDATION = GradientParams.model_fields["validation"].default  # the journal's records ran with the default
ORDER = ("set", *PER_QUERY, HYBRID)  # auto's candidates in the order it checks them
# retrievals the journal's dev runs checked and auto no longer does: replay(drop=RETIRED) is auto as it is now
RETIRED = tuple(name for name in PER_QUERY if name not in DEFAULT_COMPARE)


def measure(engine, view: AutoView, spec, options, gradient: dict, r: int, by: str = "topk-embed") -> dict | None:
    """The hybrid's check on auto's validation rows and its test record (its neighbours by ``by``: "topk-embed", or
    "topk-sentence" for sentence_hybrid.py); None when the set's re-run check does not match the journal's (the rows
    or the scoring differ from the run's)."""
    pool = view.split.pool
    shared = view.searched[:spec.k - r]
    rows = view.held_out(VALIDATION)
    validation = [pool[i] for i in rows]
    gold = torch.tensor([view.options.index(d.output) for d in validation])
    counter = PassCounter()

    def check(name, demos, context=None) -> Check:
        scores = engine.scores(demos, validation, view.options, spec.template, SEPARATOR, context, counter)
        return Check.of(name, scores, gold)

    if not set_check_matches(check("set", [pool[i] for i in view.searched]), gradient):
        return None
    neighbours = Neighbours(engine, pool, counter)
    hybrid = hybrid_check(engine, view, spec, neighbours, rows, r, counter, by)
    tested = hybrid_test(engine, view, spec, options, neighbours, r, by)
    return {"check": {"accuracy": hybrid.accuracy, "loss": float(hybrid.loss.mean())},
            "accuracy": tested["accuracy"], "correct": tested["correct"], "shared": [pool[i].id for i in shared]}


def hybrid_test(engine, view: AutoView, spec, options, neighbours: Neighbours, r: int, by: str = "topk-embed"
                ) -> dict:
    """The hybrid's record on the split's test queries: the searched set's first k - r demos shared, then each
    query's r nearest pool demos by ``by`` outside them."""
    pool, split = view.split.pool, view.split
    shared = view.searched[:spec.k - r]
    nearest = neighbours.nearest([q.input for q in split.test], by, r, exclude=shared)
    return _evaluate(engine, [pool[i] for i in shared], split, spec.template, options,
                     [[pool[i] for i in ids] for ids in nearest])


def hybrid_check(engine, view: AutoView, spec, neighbours: Neighbours, rows: list[int], r: int,
                 counter: PassCounter, by: str = "topk-embed") -> Check:
    """The hybrid's check on the held-out pool rows ``rows``, as auto runs it: the searched set's first k - r
    demos shared, then each row's r nearest other pool demos by ``by`` outside them."""
    pool = view.split.pool
    shared = view.searched[:spec.k - r]
    validation = [pool[i] for i in rows]
    nearest = neighbours.nearest([d.input for d in validation], by, r, itself=rows, exclude=shared)
    scores = engine.scores([pool[i] for i in shared], validation, view.options, spec.template, SEPARATOR,
                           [[pool[i] for i in ids] for ids in nearest], counter)
    return Check.of(HYBRID, scores, torch.tensor([view.options.index(d.output) for d in validation]))


def by_split() -> dict[tuple[str, int], dict]:
    """(dataset, seed) -> this script's record with the default r (k // 2)."""
    return {(rec["dataset"], rec["seed"]): rec for rec in read_records(RESULTS)
            if rec["r"] == DATASET_SPECS[rec["dataset"]].k // 2}


def replay(gradient: dict, hybrid: dict | None, tie: str = "loss", drop: tuple[str, ...] = ()) -> str:
    """The strategy auto picks from the journal's checks (plus the hybrid's, less the ``drop`` candidates):
    accuracy, then (tie="loss") the lower mean loss, then the earlier in ORDER (the hybrid last, as a fourth
    candidate would be); tie="order" skips the loss, so the earlier candidate wins every accuracy tie."""
    checks = [(c["strategy"], c["accuracy"], c["loss"]) for c in gradient["strategy"]["checks"]
              if c["strategy"] not in drop]
    if hybrid is not None:
        checks.append((HYBRID, hybrid["check"]["accuracy"], hybrid["check"]["loss"]))
    by_loss = tie == "loss"
    return min(checks, key=lambda c: (-c[1], c[2] if by_loss else 0.0, ORDER.index(c[0])))[0]


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["imdb", "bbc", "sms", "sdg"], [10, 11, 12, 13, 14, 15])
    parser.add_argument("--retrieved", type=int, help="r, the retrieved slots (default k // 2)")
    return replay_main(parse_dev_args(parser, argv), RESULTS, run, print_table)


def run(args, journal: dict) -> None:
    done = {(r["dataset"], r["seed"], r["r"]) for r in read_records(RESULTS)}
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
        r = args.retrieved or spec.k // 2
        if (dataset, seed, r) in done or not has_default_run(journal, dataset, seed):
            continue
        gradient = journal[(dataset, seed, "gradient")]
        append_measured(RESULTS, {"dataset": dataset, "seed": seed, "r": r}, lambda: measure(
            new_engine(), AutoView.of(split, options, gradient), spec, options, gradient, r), "hybrid")


def print_table(records: list[dict], journal: dict) -> None:
    """Per dataset: auto's test accuracy as it ran, replayed with the hybrid, the hybrid alone; differences
    paired per test query with 95% bootstrap intervals."""
    print("| dataset | r | seeds | auto | auto + hybrid (diff) | picks hybrid | earlier wins accuracy ties (diff to "
          "loss ties) | hybrid | hybrid - topk-embed pq | hybrid - set |\n|---|---|---|---|---|---|---|---|---|---|")
    group = lambda rec: (rec["dataset"], rec["r"], seed_kind(rec["seed"]))  # noqa: E731
    for dataset, r, kind in dict.fromkeys(group(rec) for rec in records):
        rows = sorted((rec for rec in records if group(rec) == (dataset, r, kind)), key=lambda x: x["seed"])
        auto, replayed, by_order, alone, topk, searched, picks = [], [], [], [], [], [], 0
        for rec in rows:
            gradient = journal[(dataset, rec["seed"], "gradient")]
            tests = strategy_tests(journal, dataset, rec["seed"], rec)
            if replay(gradient, None) != gradient["strategy"]["chosen"]:
                print(f"  {dataset} {rec['seed']}: replay picks {replay(gradient, None)}, the run "
                      f"{gradient['strategy']['chosen']}", flush=True)
            pick = replay(gradient, rec)
            picks += pick == HYBRID
            auto.append(np.array(gradient["correct"], float))
            replayed.append(np.array(tests[pick]["correct"], float))
            by_order.append(np.array(tests[replay(gradient, rec, tie="order")]["correct"], float))
            alone.append(np.array(rec["correct"], float))
            topk.append(np.array(tests["topk-embed"]["correct"], float))
            if "set" in tests:
                searched.append(np.array(tests["set"]["correct"], float))
        seeds = f"{kind} " + " ".join(str(rec["seed"]) for rec in rows)
        print(f"| {dataset} | {r} | {seeds} | {mean_accuracy(auto)} | {mean_accuracy(replayed)} ({paired_difference(replayed, auto)}) | "
              f"{picks}/{len(rows)} | {mean_accuracy(by_order)} ({paired_difference(by_order, replayed)}) | {mean_accuracy(alone)} | "
              f"{paired_difference(alone, topk)} | "
              f"{paired_difference(alone, searched) if len(searched) == len(alone) else 'n/a'} |")


if __name__ == "__main__":
    raise SystemExit(main())
