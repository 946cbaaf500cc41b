"""How well does the first-order estimate rank single swaps, across slots and within a slot?

    python -m bench.swap_study --dataset bbc --seeds 24 21 10 19 [--swaps 40] [--threads 2]

At the gradient search's own start (the label-balanced set `select_gradient` starts from, same seed) and
its anchor (label-groups margin gradients), every single swap (slot s <- demo i) is estimated; ``--swaps``
of them, drawn at random, are also run exactly (compact prompts, as the search confirms them). For each
seed it reports the Spearman correlation of estimated and exact selection loss over all drawn swaps and
within each slot, and per slot the mean exact change and the share of swaps that lower the loss.

Use dev seeds (10 and above): the protocol's test seeds 0-2 are for reporting only. Writes
bench/results/dev/swap_study_<dataset>.json and .md (a table per seed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

if __package__ in (None, ""):  # run as a script: python bench/swap_study.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from . import report
from .protocol import DATASET_SPECS, SEPARATOR, Sizes, label_options, load_examples, make_split
from .quality import RESULTS_DIR, default_engine_factory

OUT_DIR = RESULTS_DIR / "dev"


def study_seed(engine, examples, dataset: str, seed: int, swaps_run: int) -> dict:
    from iclsel.models.context import ModelAccess, SelectionContext, SelectionProblem
    from iclsel.models.selectors import _objective, _single_swaps

    spec = DATASET_SPECS[dataset]
    split = make_split(examples, seed, Sizes())
    layout = engine.layout(split.pool, split.select, spec.k, label_options(examples), spec.template, SEPARATOR)
    ctx = SelectionContext(SelectionProblem(layout, split.pool, split.select, spec.k),
                           ModelAccess(engine._runner(layout), engine.model.tokenizer, engine.cache, engine.model.fingerprint),
                           seed, lambda *_: None)
    start = ctx.balanced_subset()  # the gradient search's start for this seed
    estimator = ctx.anchor(start, "label-groups")
    swaps = _single_swaps(start, ctx.n)  # [k (n - k), k]
    estimated = estimator.estimate(swaps).loss.numpy()
    drawn = np.random.default_rng(seed + 7).choice(swaps.shape[0], swaps_run, replace=False)
    slots = (swaps[drawn] != torch.tensor(start)).int().argmax(1).numpy()
    exact = np.array([_objective(ctx, ctx.exact(swaps[i].tolist())) for i in drawn])
    est = estimated[drawn]
    per_slot = []
    for slot in range(spec.k):
        mask = slots == slot
        per_slot.append({"slot": slot, "label": layout.demo_outputs[start[slot]], "swaps": int(mask.sum()),
                         "mean_exact_change": float(exact[mask].mean() - estimator.loss) if mask.any() else None,
                         "mean_estimated_change": float(est[mask].mean() - estimator.loss) if mask.any() else None,
                         "improving_share": float((exact[mask] < estimator.loss).mean()) if mask.any() else None,
                         "spearman": float(spearmanr(est[mask], exact[mask])[0]) if mask.sum() > 3 else None})
    within = [s["spearman"] for s in per_slot if s["spearman"] is not None and not np.isnan(s["spearman"])]
    return {"seed": seed, "anchor_loss": estimator.loss, "start_labels": [layout.demo_outputs[i] for i in start],
            "swaps_run": swaps_run, "spearman_all": float(spearmanr(est, exact)[0]),
            "spearman_within_slot_mean": float(np.mean(within)) if within else None,
            "improving_share": float((exact < estimator.loss).mean()), "per_slot": per_slot}


def markdown(dataset: str, results: list[dict], command: str) -> str:
    lines = [f"# Single-swap estimate study: {dataset}", "", "Command:", "", f"    {command}", "",
             "Machine: {cpu}, {cores} cores (torch {torch}, {torch_threads} threads); date {date}; commit {commit}.".format(
                 **report.machine_info()),
             "", "| seed | anchor loss | Spearman, all drawn swaps | mean within-slot Spearman | swaps lowering the loss |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['seed']} | {r['anchor_loss']:.3f} | {r['spearman_all']:+.2f} | "
                     f"{r['spearman_within_slot_mean']:+.2f} | {r['improving_share']:.2f} |")
    for r in results:
        lines += ["", f"Seed {r['seed']}, start {r['start_labels']}:", "",
                  "| slot | label | swaps | mean exact change | mean estimated change | share lowering | Spearman |",
                  "|---|---|---|---|---|---|---|"]
        for s in r["per_slot"]:
            fmt = lambda v, d="+.3f": "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, d)
            lines.append(f"| {s['slot']} | {s['label']} | {s['swaps']} | {fmt(s['mean_exact_change'])} | "
                         f"{fmt(s['mean_estimated_change'])} | {fmt(s['improving_share'], '.2f')} | {fmt(s['spearman'], '+.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASET_SPECS), default="bbc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[24, 21, 10, 19])
    parser.add_argument("--swaps", type=int, default=40, help="random single swaps run exactly per seed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    if any(seed in (0, 1, 2) for seed in args.seeds):
        parser.error("seeds 0-2 are the protocol's test seeds: study on dev seeds")
    examples = load_examples(Path(__file__).resolve().parent / "data" / f"{args.dataset}.jsonl")
    new_engine, _ = default_engine_factory(args.model, args.threads)
    results = []
    for seed in args.seeds:
        results.append(study_seed(new_engine(), examples, args.dataset, seed, args.swaps))
        r = results[-1]
        print(f"{args.dataset} seed {seed}: Spearman all {r['spearman_all']:+.2f}, within slot "
              f"{r['spearman_within_slot_mean']:+.2f}, lowering {r['improving_share']:.2f}", flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    report.write_json(OUT_DIR / f"swap_study_{args.dataset}.json", results)
    command = "python -m bench.swap_study " + " ".join(argv if argv is not None else sys.argv[1:])
    (OUT_DIR / f"swap_study_{args.dataset}.md").write_text(markdown(args.dataset, results, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
