"""Would per-query retrieval by a sentence-embedding model earn a place among auto's candidates?

    python -m bench.experiments.minilm_candidate --datasets sdg sms bbc imdb --seeds 10 11 12 13 14 15 16 17

The candidate, `topk-minilm`: each query's k nearest pool demos (best last) by all-MiniLM-L6-v2, a 22M-parameter
sentence-embedding model (strategy "topk-sentence" with the default sentence model), in place of the default
model's own mean-pooled hidden states. (The records were made by an earlier form of these scripts that ran the
model through transformers with the same pooling; on 8 dev splits its neighbours equal topk-sentence's, the
similarities within 5e-7.) Per dev seed (10 and above) whose default gradient run and hybrid record (hybrid_candidate.py) the
records hold, it measures the candidate twice:

    check     on auto's own held-out validation demos (the rows auto drew, each demo's k nearest other pool
              demos, scored as auto scores them; the searched set's check is re-run beside it and must match
              the journal's, or the seed is skipped)
    test      on the seed's test queries (retrieval_variants.py's "minilm" record where it exists)

and replays auto's choice (the most accurate check, an accuracy tie to the earlier of set, topk-embed, hybrid,
topk-minilm) with and without it, and with it held to a margin: topk-minilm takes the pick only when its check
is at least --margin answers above the best earlier candidate's. A pick's test accuracy is that strategy's on the
seed's test queries. Appends one record per (dataset, seed) to bench/experiments/results/minilm_candidate.jsonl
(a resume skips what is there) and prints the table of --datasets and --seeds.

The hybrid's check is the journal run's own where auto checked it there (runs made since it is a default
candidate), else hybrid_candidate.py's record; the candidate's test record is the journal's
topk-sentence-per-query run where there is one (the same neighbours, scored the same way).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from iclsel.models.inference import PassCounter
from iclsel.models.strategy import HYBRID, SENTENCE, SENTENCE_MARGIN, Check, Neighbours

from ..protocol import SEPARATOR
from ..quality import BENCH_DIR, _evaluate, default_engine_factory
from . import hybrid_candidate, retrieval_variants
from .dev import (EMBEDS_TARGETS, AutoView, append_measured, by_dataset, dev_parser, mean_accuracy, paired_difference,
                  parse_dev_args, pending, print_replayed_against_baselines, read_records, replay_main, seed_kind,
                  set_check_matches, strategy_tests)

RESULTS = BENCH_DIR / "experiments" / "results" / "minilm_candidate.jsonl"
MINILM = "topk-minilm"
ORDER = ("set", "topk-embed", HYBRID, MINILM)  # auto's candidates in the order it would check them


def measure(engine, view: AutoView, spec, options, gradient: dict, tested: dict | None) -> dict | None:
    """The candidate's check on auto's validation rows and its test record; None when the set's re-run check
    does not match the journal's."""
    pool, split = view.split.pool, view.split
    rows = view.held_out(hybrid_candidate.VALIDATION)
    validation = [pool[i] for i in rows]
    gold = torch.tensor([view.options.index(d.output) for d in validation])

    def check(name, demos) -> Check:
        return Check.of(name, engine.scores(demos, validation, view.options, spec.template, SEPARATOR, None,
                                            PassCounter()), gold)

    if not set_check_matches(check("set", [pool[i] for i in view.searched]), gradient):
        return None
    neighbours = Neighbours(engine, pool, PassCounter())
    nearest = neighbours.nearest([d.input for d in validation], SENTENCE, spec.k, itself=rows)
    candidate = check(MINILM, [[pool[i] for i in ids] for ids in nearest])
    if tested is None:
        nearest = neighbours.nearest([q.input for q in split.test], SENTENCE, spec.k)
        tested = _evaluate(engine, [[pool[i] for i in ids] for ids in nearest], split, spec.template, options)
    return {"check": {"accuracy": candidate.accuracy, "loss": float(candidate.loss.mean())},
            "accuracy": tested["accuracy"], "correct": tested["correct"]}


def replay(gradient: dict, hybrid: dict | None, candidate: dict | None, margin: int = 0) -> str:
    """Auto's pick from the journal's checks (BM25 dropped, as auto runs now), the hybrid's and, given its record,
    topk-minilm's: the best accuracy, a tie to the earlier in ORDER; with a margin, topk-minilm wins only by at
    least that many of the validation answers."""
    checks = [(c["strategy"], c["accuracy"]) for c in gradient["strategy"]["checks"] if c["strategy"] in ORDER]
    if HYBRID not in dict(checks):
        checks.append((HYBRID, hybrid["check"]["accuracy"]))
    best = min(checks, key=lambda c: (-c[1], ORDER.index(c[0])))
    if candidate is None:
        return best[0]
    answers = round((candidate["check"]["accuracy"] - best[1]) * hybrid_candidate.VALIDATION)
    return MINILM if answers >= max(margin, 1) else best[0]


def hybrid_known(journal: dict, hybrids: dict, dataset: str, seed: int) -> bool:
    """The hybrid's check is in the journal's run or in hybrid_candidate.py's records."""
    gradient = journal[(dataset, seed, "gradient")]
    return (dataset, seed) in hybrids or HYBRID in {c["strategy"] for c in gradient["strategy"]["checks"]}


def seed_tests(journal: dict, hybrids: dict, rec: dict) -> dict[str, dict]:
    """The test record of each strategy auto could pick on this record's split, topk-minilm's (the record) among
    them; the hybrid's is hybrid_candidate.py's, else the journal's run when auto returned the hybrid."""
    dataset, seed = rec["dataset"], rec["seed"]
    gradient = journal[(dataset, seed, "gradient")]
    hybrid = hybrids.get((dataset, seed), gradient if gradient["strategy"]["chosen"] == HYBRID else None)
    return {**strategy_tests(journal, dataset, seed, hybrid), MINILM: rec}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["sdg", "sms", "bbc", "imdb"], [10, 11, 12, 13, 14, 15, 16, 17])
    return margin_main(parser, argv, RESULTS, run, print_table, print_against_baselines)


def margin_main(parser, argv: list[str] | None, results, run, print_table, print_against_baselines) -> int:
    """The main of a replay of auto with a candidate held to --margin: run what is missing, then both tables."""
    parser.add_argument("--margin", type=int, default=math.ceil(SENTENCE_MARGIN * hybrid_candidate.VALIDATION),
                        help="answers a candidate held to the margin must win by (default: auto's, 2 of 32)")
    args = parse_dev_args(parser, argv)

    def tables(records: list[dict], journal: dict) -> None:
        chosen = [r for r in records if r["dataset"] in args.datasets and r["seed"] in args.seeds]
        print_table(chosen, journal, args.margin)
        print_against_baselines(chosen, journal, args.margin)

    return replay_main(args, results, run, tables)


def run(args, journal: dict) -> None:
    hybrids = hybrid_candidate.by_split()
    minilm_tests = {(r["dataset"], r["seed"]): r for r in read_records(retrieval_variants.RESULTS)
                    if r["variant"] == "minilm"}
    minilm_tests.update({(dataset, seed): r for (dataset, seed, method), r in journal.items()
                         if method == "topk-sentence-per-query"})
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS):
        if not hybrid_known(journal, hybrids, dataset, seed):
            continue
        gradient = journal[(dataset, seed, "gradient")]
        append_measured(RESULTS, {"dataset": dataset, "seed": seed}, lambda: measure(
            new_engine(), AutoView.of(split, options, gradient), spec, options, gradient,
            minilm_tests.get((dataset, seed))), MINILM)


def print_table(records: list[dict], journal: dict, margin: int) -> None:
    """Per dataset: auto as it is (replayed), auto with topk-minilm (plain, then held to the margin), topk-minilm
    alone against topk-embed per query; differences paired per test query with 95% bootstrap intervals (seeds and
    test queries resampled)."""
    hybrids = hybrid_candidate.by_split()
    print(f"| dataset | seeds | auto | auto + {MINILM} (diff) | picks it | auto + {MINILM}, margin {margin} (diff) "
          f"| picks it | {MINILM} alone | alone - topk-embed pq | changed picks (margin) |\n"
          f"|---|---|---|---|---|---|---|---|---|---|")
    for dataset, rows in by_dataset(records):
        auto, plain, held, alone, topk, changed, picks, held_picks = [], [], [], [], [], [], 0, 0
        for rec in rows:
            seed = rec["seed"]
            gradient, hybrid = journal[(dataset, seed, "gradient")], hybrids.get((dataset, seed))
            tests = seed_tests(journal, hybrids, rec)
            before = replay(gradient, hybrid, None)
            after, kept = replay(gradient, hybrid, rec), replay(gradient, hybrid, rec, margin)
            picks, held_picks = picks + (after == MINILM), held_picks + (kept == MINILM)
            auto.append(np.array(tests[before]["correct"], float))
            plain.append(np.array(tests[after]["correct"], float))
            held.append(np.array(tests[kept]["correct"], float))
            alone.append(np.array(rec["correct"], float))
            topk.append(np.array(tests["topk-embed"]["correct"], float))
            if before != kept:
                changed.append(f"{seed}: {before} {auto[-1].mean():.3f} -> {kept} {held[-1].mean():.3f}")
        seeds = f"{seed_kind(rows[0]['seed'])} " + " ".join(str(rec["seed"]) for rec in rows)
        print(f"| {dataset} | {seeds} | {mean_accuracy(auto)} | {mean_accuracy(plain)} "
              f"({paired_difference(plain, auto)}) | {picks}/{len(rows)} | {mean_accuracy(held)} "
              f"({paired_difference(held, auto)}) | {held_picks}/{len(rows)} | "
              f"{mean_accuracy(alone)} | {paired_difference(alone, topk)} | {'; '.join(changed) or 'none'} |")


def replayed_default(rec: dict, journal: dict, hybrids: dict, margin: int) -> dict:
    """The journal's default run as auto with topk-minilm held to the margin would have ended: the strategy picked,
    its test record's accuracy and answers, and the passes: the run's own plus the fourth check's rows (unless it
    ran it; less BM25's where it ran that), less the model's embeddings of the queries and test queries where topk-minilm takes a topk-embed or hybrid answer's
    place (its sentence embeddings are not passes of the model)."""
    dataset, seed = rec["dataset"], rec["seed"]
    gradient = journal[(dataset, seed, "gradient")]
    tests = seed_tests(journal, hybrids, rec)
    picked = replay(gradient, hybrids.get((dataset, seed)), rec, margin)
    sizes = gradient["sizes"]
    rows = gradient["notes"]["budget"] // (16 * sizes["select"])  # the search's 16 runs per query, per option row
    checked, candidates = {c["strategy"] for c in gradient["strategy"]["checks"]}, {*ORDER[:3], SENTENCE}
    more = len(candidates - checked) - len(checked - candidates)  # runs that checked it already, or checked BM25
    passes = gradient["passes"] + more * gradient["strategy"]["validation_queries"] * rows
    if picked == MINILM and gradient["strategy"]["chosen"] in EMBEDS_TARGETS:
        passes -= sizes["select"] + sizes["test"]
    return {"seed": seed, "strategy": picked, "accuracy": tests[picked]["accuracy"],
            "correct": tests[picked]["correct"], "passes": passes}


def print_against_baselines(records: list[dict], journal: dict, margin: int) -> None:
    """Auto with topk-minilm held to the margin (replayed) against the best baseline (dev.print_replayed_against_baselines)."""
    hybrids = hybrid_candidate.by_split()
    print_replayed_against_baselines(f"auto + {MINILM}, margin {margin}", {
        dataset: [replayed_default(rec, journal, hybrids, margin) for rec in rows]
        for dataset, rows in by_dataset(records)}, journal)


if __name__ == "__main__":
    raise SystemExit(main())
