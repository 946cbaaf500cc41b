"""Should the check count the retrievals' answers on the selection queries too?

    python -m bench.experiments.pooled_check --seeds 10 11 12 13 14 15 16 17 18 19 20 21

Replays auto with its gate (sentence_gate.py at G = 0.375) where the gate lets the search through, with the check
"pooled": topk-embed and topk-sentence scored by their share of right answers on the selection queries (the gate's
runs: sentence_gate.jsonl) and the held-out demos together, the set and both hybrids by their share on the held-out
demos; auto's rule on those shares (the best of strategy.UNHELD order, a tie to the earlier, unless a sentence-model
candidate leads it by strategy.SENTENCE_MARGIN; then the better of those, a tie to topk-sentence). Runs nothing:
the records of sentence_gate.py, sentence_hybrid.py, hybrid_candidate.py and minilm_candidate.py and the journal
hold every figure. Prints the pooled check against the gate as it ships, paired per test query (print_table:
gate_led_check.py replays another check the same way).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from iclsel.models.strategy import SENTENCE, SENTENCE_MARGIN

from . import hybrid_candidate, minilm_candidate, sentence_gate, sentence_hybrid
from .dev import (EMBEDS_TARGETS, by_dataset, dev_parser, mean_accuracy, paired_difference, parse_dev_args,
                  print_replayed_against_baselines, records_by_split, replay_main)

UNHELD = sentence_hybrid.UNHELD  # set, topk-embed, hybrid: no margin, a tie to the earlier
HELD = (SENTENCE, sentence_hybrid.CANDIDATE)  # held to the margin, a tie to topk-sentence
RETRIEVALS = sentence_gate.RETRIEVALS  # unfitted to the selection queries: their answers there count


def shares(gate: dict, gradient: dict, hybrid: dict | None, minilm: dict, candidate: dict, pooled: bool
           ) -> dict[str, float]:
    """Each candidate's share of right answers: on the held-out demos, and (pooled) the retrievals' on the selection
    queries as well."""
    size = hybrid_candidate.VALIDATION
    right = {**sentence_hybrid.unheld_answers(gradient, hybrid),
             SENTENCE: round(minilm["check"]["accuracy"] * size),
             sentence_hybrid.CANDIDATE: round(candidate["check"]["accuracy"] * size)}
    seen = dict.fromkeys(right, size)
    if pooled:
        for name in RETRIEVALS:
            right[name] += int(np.sum(gate["correct"][name]))
            seen[name] += len(gate["correct"][name])
    return {name: right[name] / seen[name] for name in right}


def pick(share: dict[str, float]) -> str:
    """auto's rule on shares: the best unheld candidate unless a held one leads it by the margin."""
    best = min(UNHELD, key=lambda name: (-share[name], UNHELD.index(name)))
    winners = [name for name in HELD if share[name] - share[best] >= SENTENCE_MARGIN - 1e-9]
    return min(winners, key=lambda name: (-share[name], HELD.index(name))) if winners else best


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "imdb", "sdg"], list(range(10, 22)))
    args = parse_dev_args(parser, argv)
    return replay_main(args, sentence_gate.RESULTS, lambda args, journal: None, lambda records, journal: print_table(
        [r for r in records if r["dataset"] in args.datasets and r["seed"] in args.seeds], journal, "pooled check",
        lambda rec, answers: (pick(answers(pooled=True)), 0)))


Rule = Callable[[dict, Callable[..., dict[str, float]]], tuple[str, int]]


def print_table(records: list[dict], journal: dict, label: str, rule: Rule) -> None:
    """Per dataset: auto with the gate as it ships and with another check, ``rule``: (the gate's record, shares:
    each candidate's share of right answers, shares(pooled=...)) -> (its pick, the check's passes it saves), their
    paired difference, the picks that change and the passes; then the other check's default against the best
    baseline."""
    hybrids = hybrid_candidate.by_split()
    minilms = records_by_split(minilm_candidate.RESULTS)
    candidates = records_by_split(sentence_hybrid.RESULTS)
    print(f"| dataset | seeds | let through | auto with the gate | {label} | minus the gate as it ships | "
          "changed picks | passes / exact's (as it ships) |\n|---|---|---|---|---|---|---|---|")
    replayed = {}
    for dataset, rows in by_dataset(records):
        ships, mine, changed, through, out, spent, shipped_spent = [], [], [], 0, [], [], []
        for rec, split in zip(rows, sentence_gate.gated_splits(dataset, rows, journal)):
            seed, shipped = rec["seed"], split.shipped
            gradient, minilm, candidate = (journal[(dataset, seed, "gradient")], minilms[(dataset, seed)],
                                           candidates[(dataset, seed)])
            hybrid = hybrids.get((dataset, seed))
            tests = {**minilm_candidate.seed_tests(journal, hybrids, minilm), sentence_hybrid.CANDIDATE: candidate}
            tests[SENTENCE] = tests.pop(minilm_candidate.MINILM)
            exact = sentence_gate.exact_passes(rec)
            gated = split.auto(rec)
            ships.append(np.array(gated["correct"], float))
            shipped_spent.append(gated["passes"] / exact)
            if gated["strategy"] is not None:  # the gate skipped: no check
                mine.append(ships[-1])
                spent.append(shipped_spent[-1])
                out.append({"seed": seed, "strategy": gated["strategy"] + " (gate)", "correct": gated["correct"],
                            "accuracy": float(np.mean(gated["correct"])), "passes": gated["passes"]})
                continue
            through += 1

            def answers(pooled: bool) -> dict[str, float]:
                return shares(rec, gradient, hybrid, minilm, candidate, pooled)

            before = pick(answers(pooled=False))
            assert before == shipped["strategy"], (dataset, seed, before, shipped["strategy"])
            after, saved = rule(rec, answers)
            mine.append(np.array(tests[after]["correct"], float))
            passes = (gated["passes"] - saved
                      + split.targets * ((after in EMBEDS_TARGETS) - (before in EMBEDS_TARGETS)))
            spent.append(passes / exact)
            out.append({"seed": seed, "strategy": after, "correct": tests[after]["correct"],
                        "accuracy": float(np.mean(tests[after]["correct"])), "passes": passes})
            if after != before:
                changed.append(f"{seed}: {before} {ships[-1].mean():.3f} -> {after} {mine[-1].mean():.3f}")
        replayed[dataset] = out
        print(f"| {dataset} | {rows[0]['seed']}-{rows[-1]['seed']} ({len(rows)}) | {through} | {mean_accuracy(ships)} "
              f"| {mean_accuracy(mine)} | {paired_difference(mine, ships)} | {'; '.join(changed) or 'none'} "
              f"| {np.mean(spent):.2f} ({np.mean(shipped_spent):.2f}) |")
    print_replayed_against_baselines(f"auto with the gate and the {label}", replayed, journal)


if __name__ == "__main__":
    raise SystemExit(main())
