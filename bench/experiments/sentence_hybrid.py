"""Would a hybrid whose neighbours come from the sentence model earn a place among auto's candidates?

    python -m bench.experiments.sentence_hybrid --datasets bbc sms --seeds 10 11 12 13 14 15 16 17 18 19 20 21

The candidate, `hybrid-sentence`: the hybrid (auto's searched set's first k - r demos shared, r = k // 2) with each
query's r nearest other pool demos by the sentence model (all-MiniLM-L6-v2, as topk-sentence retrieves) in place of
the language model's embedding. Per dev seed whose default gradient run, hybrid record (hybrid_candidate.py) and
topk-minilm record (minilm_candidate.py) the records hold, it measures the candidate twice, as hybrid_candidate.py
measures the hybrid:

    check     on auto's own held-out validation demos (the searched set's check re-run beside it must match the
              journal's, or the seed is skipped)
    test      on the seed's test queries

and replays auto's choice as it is now (set, topk-embed, hybrid, topk-sentence held to its margin: minilm_candidate's
replay) and with the candidate as a fifth, held to the same margin: the best of set, topk-embed and hybrid (accuracy,
a tie to the earlier) is the pick unless topk-sentence or hybrid-sentence answers at least --margin more of the
validation demos than it does; then the better of those two that does (a tie to topk-sentence). A pick's test
accuracy is that strategy's on the seed's test queries. Appends one record per (dataset, seed) to
bench/experiments/results/sentence_hybrid.jsonl (a resume skips what is there) and prints the table.
"""

from __future__ import annotations

import numpy as np

from iclsel.models.strategy import HYBRID, SENTENCE

from ..quality import BENCH_DIR, default_engine_factory
from . import hybrid_candidate, minilm_candidate
from .dev import (EMBEDS_TARGETS, AutoView, append_measured, by_dataset, dev_parser, mean_accuracy, paired_difference, pending,
                  print_replayed_against_baselines, read_records, records_by_split, seed_kind)

RESULTS = BENCH_DIR / "experiments" / "results" / "sentence_hybrid.jsonl"
CANDIDATE = "hybrid-sentence"
UNHELD = ("set", "topk-embed", HYBRID)  # auto's candidates that need no margin, in the order it checks them
HELD = (minilm_candidate.MINILM, CANDIDATE)  # the sentence model's candidates, held to the margin


def replay(gradient: dict, hybrid: dict | None, minilm: dict, candidate: dict | None, margin: int) -> str:
    """Auto's pick from the checks: the best unheld candidate (accuracy, a tie to the earlier in UNHELD) unless a
    held one answers at least ``margin`` validation demos more; then the best such (a tie to the earlier in HELD).
    Without the candidate's record: auto as it is now."""
    size = hybrid_candidate.VALIDATION
    answers = unheld_answers(gradient, hybrid)
    best = min(UNHELD, key=lambda name: (-answers[name], UNHELD.index(name)))
    held = {minilm_candidate.MINILM: minilm, CANDIDATE: candidate}
    winners = [(round(rec["check"]["accuracy"] * size), name) for name, rec in held.items()
               if rec is not None and round(rec["check"]["accuracy"] * size) - answers[best] >= max(margin, 1)]
    return min(winners, key=lambda w: (-w[0], HELD.index(w[1])))[1] if winners else best


def unheld_answers(gradient: dict, hybrid: dict | None) -> dict[str, int]:
    """Held-out demos answered right by each of UNHELD: the journal run's checks, the hybrid's record where the run
    predates its check."""
    size = hybrid_candidate.VALIDATION
    answers = {c["strategy"]: round(c["accuracy"] * size) for c in gradient["strategy"]["checks"]
               if c["strategy"] in UNHELD}
    if HYBRID not in answers:
        answers[HYBRID] = round(hybrid["check"]["accuracy"] * size)
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "sdg", "imdb"], list(range(10, 22)))
    return minilm_candidate.margin_main(parser, argv, RESULTS, run, print_table, print_against_baselines)


def run(args, journal: dict) -> None:
    hybrids = hybrid_candidate.by_split()
    minilms = {(r["dataset"], r["seed"]) for r in read_records(minilm_candidate.RESULTS)}
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS):
        if (dataset, seed) not in minilms or not minilm_candidate.hybrid_known(journal, hybrids, dataset, seed):
            continue
        gradient = journal[(dataset, seed, "gradient")]
        append_measured(RESULTS, {"dataset": dataset, "seed": seed}, lambda: hybrid_candidate.measure(
            new_engine(), AutoView.of(split, options, gradient), spec, options, gradient, spec.k // 2,
            by=SENTENCE), CANDIDATE)


def print_table(records: list[dict], journal: dict, margin: int) -> None:
    """Per dataset: auto as it is (replayed), auto with hybrid-sentence, the candidate alone against topk-sentence
    per query (topk-minilm's test record) and against the hybrid; differences paired per test query with 95%
    bootstrap intervals (seeds and test queries resampled)."""
    hybrids = hybrid_candidate.by_split()
    minilms = records_by_split(minilm_candidate.RESULTS)
    print(f"| dataset | seeds | auto | auto + {CANDIDATE}, margin {margin} (diff) | picks it | {CANDIDATE} alone "
          f"| alone - topk-sentence pq | alone - hybrid | changed picks |\n|---|---|---|---|---|---|---|---|---|")
    for dataset, rows in by_dataset(records):
        auto, replayed, alone, sentence, hybrid_alone, changed, picks = [], [], [], [], [], [], 0
        for rec in rows:
            seed = rec["seed"]
            gradient, hybrid, minilm = (journal[(dataset, seed, "gradient")], hybrids.get((dataset, seed)),
                                        minilms[(dataset, seed)])
            tests = {**minilm_candidate.seed_tests(journal, hybrids, minilm), CANDIDATE: rec}
            before, after = replay(gradient, hybrid, minilm, None, margin), replay(gradient, hybrid, minilm, rec, margin)
            assert before == minilm_candidate.replay(gradient, hybrid, minilm, margin), (dataset, seed)
            picks += after == CANDIDATE
            auto.append(np.array(tests[before]["correct"], float))
            replayed.append(np.array(tests[after]["correct"], float))
            alone.append(np.array(rec["correct"], float))
            sentence.append(np.array(minilm["correct"], float))
            if HYBRID in tests:  # the hybrid's test record: hybrid_candidate.py's, or the run's where it won
                hybrid_alone.append(np.array(tests[HYBRID]["correct"], float))
            if before != after:
                changed.append(f"{seed}: {before} {auto[-1].mean():.3f} -> {after} {replayed[-1].mean():.3f}")
        seeds = f"{seed_kind(rows[0]['seed'])} " + " ".join(str(rec["seed"]) for rec in rows)
        print(f"| {dataset} | {seeds} | {mean_accuracy(auto)} | {mean_accuracy(replayed)} "
              f"({paired_difference(replayed, auto)}) | {picks}/{len(rows)} | {mean_accuracy(alone)} | "
              f"{paired_difference(alone, sentence)} | "
              f"{paired_difference(alone, hybrid_alone) if len(hybrid_alone) == len(alone) else 'n/a'} | "
              f"{'; '.join(changed) or 'none'} |")


def replayed_default(rec: dict, journal: dict, hybrids: dict, minilms: dict, margin: int) -> dict:
    """The journal's default run as auto with hybrid-sentence would have ended: the strategy picked, its test
    record's accuracy and answers, and the passes: the run's own plus the rows of the checks it did not run
    (hybrid-sentence's; topk-sentence's too in runs that checked three prompts) less those it ran that auto does not
    (BM25's), less the model's embeddings of the
    queries and test queries where a sentence-model candidate takes a topk-embed or hybrid answer's place."""
    dataset, seed = rec["dataset"], rec["seed"]
    gradient, minilm = journal[(dataset, seed, "gradient")], minilms[(dataset, seed)]
    tests = {**minilm_candidate.seed_tests(journal, hybrids, minilm), CANDIDATE: rec}
    picked = replay(gradient, hybrids.get((dataset, seed)), minilm, rec, margin)
    sizes = gradient["sizes"]
    rows = gradient["notes"]["budget"] // (16 * sizes["select"])  # the search's 16 runs per query, per option row
    checked, candidates = {c["strategy"] for c in gradient["strategy"]["checks"]}, {*UNHELD, SENTENCE, CANDIDATE}
    more = len(candidates - checked) - len(checked - candidates)  # BM25's check, in older runs, is not run now
    passes = gradient["passes"] + more * gradient["strategy"]["validation_queries"] * rows
    if picked in HELD and gradient["strategy"]["chosen"] in EMBEDS_TARGETS:
        passes -= sizes["select"] + sizes["test"]
    name = SENTENCE if picked == minilm_candidate.MINILM else picked
    return {"seed": seed, "strategy": name, "accuracy": tests[picked]["accuracy"],
            "correct": tests[picked]["correct"], "passes": passes}


def print_against_baselines(records: list[dict], journal: dict, margin: int) -> None:
    """Auto with hybrid-sentence (replayed) against the best baseline (dev.print_replayed_against_baselines)."""
    hybrids = hybrid_candidate.by_split()
    minilms = records_by_split(minilm_candidate.RESULTS)
    print_replayed_against_baselines(f"auto + {CANDIDATE}", {
        dataset: [replayed_default(rec, journal, hybrids, minilms, margin) for rec in rows]
        for dataset, rows in by_dataset(records)}, journal)


if __name__ == "__main__":
    raise SystemExit(main())
