"""Can the selection queries tell good demo sets from bad ones? For label-balanced random k-sets of a
protocol split (dev seeds: not the benchmark's 0-2), run each set exactly on the 32 selection queries, on
the pool's other demos (leave-out, what params.pool_queries adds) and on the 200 held-out test queries;
report, per seed, the Spearman correlation of each selection-side figure with held-out accuracy, and the
held-out accuracy of the set each figure would pick against the mean set.

    python -m bench.experiments.set_predictability --dataset bbc --seeds 10 11 12 13 14 --sets 10

Prompts use compact slots (as wide as the set's widest demo), as `select` returns them and the quality
benchmark scores them. Writes bench/experiments/results/set_predictability_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from iclsel.models.engine import Engine
from iclsel.models.loading import load_model

from ..protocol import DATASET_SPECS, SEPARATOR, Sizes, label_options, load_examples, make_split
from ..quality import BENCH_DIR
from ..data import DATA_DIR


def balanced_sets(pool, k: int, count: int, rng: random.Random) -> list[list[int]]:
    """``count`` distinct k-sets cycling over the labels in a random label order, random slot order."""
    by_label: dict[str, list[int]] = {}
    for index, example in enumerate(pool):
        by_label.setdefault(example.output, []).append(index)
    sets: list[list[int]] = []
    while len(sets) < count:
        labels = sorted(by_label)
        rng.shuffle(labels)
        chosen = [rng.choice(by_label[labels[i % len(labels)]]) for i in range(k)]
        if len(set(chosen)) == k and sorted(chosen) not in [sorted(s) for s in sets]:
            rng.shuffle(chosen)
            sets.append(chosen)
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bbc", choices=sorted(DATASET_SPECS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12, 13, 14])
    parser.add_argument("--sets", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = DATASET_SPECS[args.dataset]
    examples = load_examples(DATA_DIR / f"{args.dataset}.jsonl")
    options = label_options(examples)
    engine = Engine(load_model("default"))
    per_seed = []
    for seed in args.seeds:
        if seed in (0, 1, 2):
            raise SystemExit("seeds 0-2 are the benchmark's test seeds: use others")
        split = make_split(examples, seed, Sizes())
        rng = random.Random(1000 + seed)
        rows = []
        started = time.perf_counter()
        for subset in balanced_sets(split.pool, spec.k, args.sets, rng):
            demos = [split.pool[i] for i in subset]
            others = [d for i, d in enumerate(split.pool) if i not in subset]
            scored = {name: engine.evaluate(demos, queries, options=options, template=spec.template, separator=SEPARATOR)
                      for name, queries in (("select", split.select), ("pool", others), ("test", split.test))}
            combined = (scored["select"]["loss"] * len(split.select) + scored["pool"]["loss"] * len(others)) / (
                len(split.select) + len(others))
            rows.append({"ids": [d.id for d in demos], "select_loss": scored["select"]["loss"],
                         "select_accuracy": scored["select"]["accuracy"], "pool_loss": scored["pool"]["loss"],
                         "select_and_pool_loss": combined, "test_accuracy": scored["test"]["accuracy"]})
        test = np.array([r["test_accuracy"] for r in rows])
        summary = {"seed": seed, "sets": rows, "seconds": time.perf_counter() - started,
                   "test_accuracy_mean": float(test.mean()), "test_accuracy_max": float(test.max())}
        for figure, sign in (("select_loss", -1), ("select_accuracy", 1), ("pool_loss", -1), ("select_and_pool_loss", -1)):
            values = np.array([r[figure] for r in rows])
            summary[f"spearman_{figure}_vs_test_accuracy"] = float(spearmanr(sign * values, test).statistic)
            summary[f"test_accuracy_of_best_by_{figure}"] = float(test[int(np.argmax(sign * values))])
        per_seed.append(summary)
        print(json.dumps({key: value for key, value in summary.items() if key != "sets"}), flush=True)
    out = BENCH_DIR / "experiments" / "results" / f"set_predictability_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset": args.dataset, "sizes": vars(Sizes()), "k": spec.k, "per_seed": per_seed},
                              indent=1))
    keys = [key for key in per_seed[0] if key.startswith(("spearman_", "test_accuracy"))]
    print("\nmean over seeds:")
    for key in keys:
        print(f"  {key}: {np.mean([s[key] for s in per_seed]):.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
