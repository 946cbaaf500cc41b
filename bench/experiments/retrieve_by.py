"""Should `retrieve` choose its neighbours' retrieval per request, as auto's gate does? (dev seeds, replayed)

    python -m bench.experiments.retrieve_by --seeds 10 11 12 13

Replays a proposed `retrieve_by` "auto": before the search, each selection query's k nearest pool demos by
topk-embed and by topk-sentence run on the selection queries, and the request takes the neighbours of the better,
topk-embed unless topk-sentence answers at least auto's margin (1/16 of the queries, rounded up) more. The answers come
from the gate's records (results/sentence_gate.jsonl: the last layer and similarity order, as `retrieve` embeds);
each split's pick is then scored by that arm's test record in results/param_variant.jsonl (`retrieve` 2 by topk-embed,
gradient-r2; by topk-sentence, gradient-r2s). Nothing runs. Prints each fixed retrieval, the replayed choice and its
difference from the better fixed retrieval of the dataset, paired per test query (95% bootstrap, seeds and test queries
resampled).
"""

from __future__ import annotations

import argparse

import numpy as np

from iclsel.models.strategy import SENTENCE, Check, clear_win

from ..quality import BENCH_DIR
from .dev import mean_accuracy, paired_difference, read_records

RESULTS = BENCH_DIR / "experiments" / "results"
ARMS = {"topk-embed": "gradient-r2", SENTENCE: "gradient-r2s"}  # the retrieval -> its arm's method


def choose(correct: dict[str, list[bool]]) -> str:
    """The retrieval the proposal takes: topk-sentence only by auto's margin over topk-embed on the queries (the
    engine's rule, strategy.clear_win, on the recorded answers)."""
    embed, sentence = (Check(name, np.array(correct[name], float), np.zeros(len(correct[name])))
                       for name in ("topk-embed", SENTENCE))
    return SENTENCE if clear_win(sentence, embed) else "topk-embed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc", "sms", "imdb"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12, 13])
    args = parser.parse_args(argv)
    gate = {(r["dataset"], r["seed"]): r["correct"] for r in read_records(RESULTS / "sentence_gate.jsonl")}
    arms = {(r["dataset"], r["seed"], r["method"]): r for r in read_records(RESULTS / "param_variant.jsonl")}
    print("| dataset | seeds | by topk-embed | by topk-sentence | replayed choice | choices (queries answered: embed, "
          "sentence) | choice minus the better fixed [95% CI] |\n|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        seeds = [s for s in args.seeds if (dataset, s) in gate
                 and all((dataset, s, arm) in arms for arm in ARMS.values())]
        fixed = {by: [np.array(arms[(dataset, s, arm)]["correct"], float) for s in seeds] for by, arm in ARMS.items()}
        picks = [choose(gate[(dataset, s)]) for s in seeds]
        chosen = [fixed[by][i] for i, by in enumerate(picks)]
        better = max(fixed, key=lambda by: np.mean([c.mean() for c in fixed[by]]))
        notes = ", ".join(f"{s}: {by} ({sum(gate[(dataset, s)]['topk-embed'])}, {sum(gate[(dataset, s)][SENTENCE])})"
                          for s, by in zip(seeds, picks))
        print(f"| {dataset} | {' '.join(map(str, seeds))} | {mean_accuracy(fixed['topk-embed'])} | "
              f"{mean_accuracy(fixed[SENTENCE])} | {mean_accuracy(chosen)} | {notes} | "
              f"{paired_difference(chosen, fixed[better])} (against {better}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
