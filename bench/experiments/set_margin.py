"""Should the searched set have to beat the sentence model's prompts by the margin too?

    python -m bench.experiments.set_margin --datasets bbc sms sdg imdb --seeds 10 11 12 13 14 15 16 17 18 19 20 21

Replays auto's choice from the records of sentence_hybrid.py (its five checks per dev seed: the journal's gradient
run, the hybrid's, topk-sentence's and hybrid-sentence's) under two rules and compares the test accuracy of the
picks, paired per test query. "auto" is the shipped rule (sentence_hybrid.replay: a sentence-model candidate must
answer --margin more held-out demos than the best of set, topk-embed and hybrid). "set margin S": a sentence-model
candidate must answer --margin more than each of topk-embed and hybrid but only S more than the set (default 0: a
tie with the set goes to it). Runs no model.
"""

from __future__ import annotations

import numpy as np

from iclsel.models.strategy import HYBRID, SENTENCE

from . import hybrid_candidate, minilm_candidate, sentence_hybrid
from .dev import (by_dataset, dev_parser, journal_records, mean_accuracy, paired_difference, parse_dev_args,
                  print_replayed_against_baselines, read_records, records_by_split, seed_kind)

RETRIEVALS = ("topk-embed", HYBRID)  # the unheld candidates the margin still protects against


def replay(gradient: dict, hybrid: dict | None, minilm: dict, candidate: dict, margin: int, set_margin: int) -> str:
    """Auto's pick when a sentence-model candidate needs ``margin`` answers over topk-embed and hybrid and
    ``set_margin`` over the set; otherwise sentence_hybrid.replay's pick."""
    size = hybrid_candidate.VALIDATION
    answers = sentence_hybrid.unheld_answers(gradient, hybrid)
    held = {minilm_candidate.MINILM: minilm, sentence_hybrid.CANDIDATE: candidate}
    winners = [(round(rec["check"]["accuracy"] * size), name) for name, rec in held.items()]
    winners = [(got, name) for got, name in winners
               if got - answers["set"] >= set_margin and all(got - answers[r] >= max(margin, 1) for r in RETRIEVALS)]
    if winners:
        return min(winners, key=lambda w: (-w[0], sentence_hybrid.HELD.index(w[1])))[1]
    return sentence_hybrid.replay(gradient, hybrid, minilm, candidate, margin)


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "sdg", "imdb"], list(range(10, 22)))
    parser.add_argument("--margin", type=int, default=2, help="answers over topk-embed and hybrid (auto's: 2 of 32)")
    parser.add_argument("--set-margin", type=int, default=0, help="answers over the searched set")
    args = parse_dev_args(parser, argv)
    journal = journal_records(args.journal)
    records = [r for r in read_records(sentence_hybrid.RESULTS)
               if r["dataset"] in args.datasets and r["seed"] in args.seeds]
    hybrids = hybrid_candidate.by_split()
    minilms = records_by_split(minilm_candidate.RESULTS)
    label = f"set margin {args.set_margin}"
    print(f"| dataset | seeds | auto | auto, {label} (difference) | changed picks |\n|---|---|---|---|---|")
    replayed = {}
    for dataset, rows in by_dataset(records):
        before, after, changed, mine = [], [], [], []
        for rec in rows:
            seed = rec["seed"]
            gradient, hybrid, minilm = (journal[(dataset, seed, "gradient")], hybrids.get((dataset, seed)),
                                        minilms[(dataset, seed)])
            tests = {**minilm_candidate.seed_tests(journal, hybrids, minilm), sentence_hybrid.CANDIDATE: rec}
            shipped = sentence_hybrid.replay(gradient, hybrid, minilm, rec, args.margin)
            picked = replay(gradient, hybrid, minilm, rec, args.margin, args.set_margin)
            before.append(np.array(tests[shipped]["correct"], float))
            after.append(np.array(tests[picked]["correct"], float))
            default = sentence_hybrid.replayed_default(rec, journal, hybrids, minilms, args.margin)
            mine.append({**default, "strategy": SENTENCE if picked == minilm_candidate.MINILM else picked,
                         "accuracy": tests[picked]["accuracy"], "correct": tests[picked]["correct"]})
            if picked != shipped:
                changed.append(f"{seed}: {shipped} {before[-1].mean():.3f} -> {picked} {after[-1].mean():.3f}")
        replayed[dataset] = mine
        seeds = f"{seed_kind(rows[0]['seed'])} " + " ".join(str(rec["seed"]) for rec in rows)
        print(f"| {dataset} | {seeds} | {mean_accuracy(before)} | {mean_accuracy(after)} "
              f"({paired_difference(after, before)}) | {'; '.join(changed) or 'none'} |")
    print_replayed_against_baselines(f"auto, {label}", replayed, journal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
