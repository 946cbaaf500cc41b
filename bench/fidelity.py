"""Fidelity benchmark: how well each cheap evaluator ranks demo sets like exact inference does.

    python -m bench.fidelity --datasets bbc imdb --seeds 10 [--threads 2]
    python -m bench.fidelity --report-only          # rebuild the report from the journal, run nothing

Per dataset and dev seed (the protocol's split; test seeds 0-2 are refused), at two anchors:
    start  the label-balanced set the gradient search starts from (same seed);
    end    the set the default gradient search returns (run here, journalled, named after its evaluator;
           an older engine's anchors and estimates stay in the journal; the report shows one engine's).
At each anchor a fixed sample of swaps is run exactly, once, on all selection queries in natural
prompts (as the search runs them): ``--singles`` single swaps spread evenly over the slots and
``--pairs`` two-demo swaps. Every evaluator then estimates the same swaps from what it would have had
(evaluators are in ``EVALUATORS``; the subsampled ones are computed from the query rows of the exact
runs, which is what running only those rows gives, and are averaged over ``DRAWS`` random subsamples).

Figures per evaluator (mean over anchors and seeds):
    spearman_all      Spearman of estimate and exact loss over all sampled swaps;
    spearman_within   within each slot (single swaps), mean over slots;
    spearman_across   over the k swaps that are each slot's best by the estimate;
    precision_top8    share of the evaluator's 8 best swaps that are in the exact top quartile;
    closer_than_zero  share of swaps where |estimate - exact| < |anchor's own loss - exact|;
    passes_per_subset forward-equivalents per evaluated subset, fitting and anchors included.

Candidate order (what the default search uses the gradient for): at each anchor the ``ORDER_DEPTH`` best single
swaps of every slot by the default's first-order estimate (mean-loss gradient, all k(n-k) swaps estimated) are
also run exactly, and set against random candidates of the same slots (the sampled single swaps, averaged over
``DRAWS`` draws): the first batch (``PER_SLOT`` per slot, as the default search screens them) by mean exact
change of the loss, share that improve on the anchor, and the best; and the random batch that the gradient's
passes would have bought instead (the anchor pass, less the start's exact run it stands for, spent on more
screened proposals). ``--pool-size`` sets n
(``imdb-tail`` has the rows for n = 10,000).

Writes, under --out-dir (default bench/results/), fidelity_runs.jsonl (journal: one record per anchor and per exact run; an
interrupted run resumes), fidelity.json (dataset -> evaluator -> figures),
and fidelity.png, and the report --report (default bench/FIDELITY.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

if __package__ in (None, ""):  # run as a script: python bench/fidelity.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from . import report
from iclsel.models.context import stratified_rows
from iclsel.models.estimate import AnchorEstimator

from .protocol import DATASET_SPECS, SEPARATOR, DatasetSpec, Sizes, label_options, load_examples, make_split
from .quality import BENCH_DIR, RESULTS_DIR, append_journal, default_engine_factory, engine_source_hash, read_journal

JOURNAL_NAME = "fidelity_runs.jsonl"
TEST_SEEDS = (0, 1, 2)
DRAWS = 50  # random query subsamples a subsampled evaluator's figures are averaged over
SUBSAMPLE_SIZES = (4, 8, 16)
TOP = 8
ORDER_DEPTH = 4  # best-estimated single swaps per slot run exactly (candidate order)
PER_SLOT = 2  # proposals per slot in the default search's batch (selectors.DEFAULT_PER_SLOT)
SCREEN = 8  # queries a screened proposal runs on (selectors.DEFAULT_SCREEN)
ORDER = "candidate order"  # fidelity.json key of the candidate-order figures (not an evaluator)
ARMS = ("gradient", "random", "random_equal_passes")
SPECS = {**DATASET_SPECS, "imdb-tail": DatasetSpec("imdb-tail", DATASET_SPECS["imdb"].template, k=4)}


# ---------------------------------------------------------------- running (model work, journalled)

def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:24]


def sample_swaps(anchor: list[int], n: int, singles: int, pairs: int, seed: int) -> list[list[int]]:
    """``singles`` single swaps spread evenly over the k slots (distinct demos per slot), then ``pairs``
    two-demo swaps (two distinct slots, two distinct demos), all from demos outside the anchor."""
    k = len(anchor)
    rng = np.random.default_rng([seed, *anchor])
    outside = np.array([i for i in range(n) if i not in set(anchor)])
    per_slot = -(-singles // k)
    swaps = []
    for slot in range(k):
        for demo in rng.choice(outside, per_slot, replace=False):
            subset = list(anchor)
            subset[slot] = int(demo)
            swaps.append(subset)
    for _ in range(pairs):
        slots = rng.choice(k, 2, replace=False)
        demos = rng.choice(outside, 2, replace=False)
        subset = list(anchor)
        for slot, demo in zip(slots, demos):
            subset[int(slot)] = int(demo)
        swaps.append(subset)
    return swaps


@dataclass
class SeedSetup:
    dataset: str
    seed: int
    engine: object
    ctx: object  # models.context.SelectionContext, as the search has
    split: object
    base_key: list
    journal_path: Path  # one journal per model: swap records are keyed by dataset, seed and subset only


def dataset_sizes(dataset: str, pool_size: int | None) -> Sizes:
    sizes = SPECS[dataset].sizes or Sizes()
    return sizes if pool_size is None else Sizes(pool_size, sizes.select, sizes.test)


def setup_seed(engine, examples, dataset: str, seed: int, fingerprint: str, journal_path: Path,
               pool_size: int | None = None) -> SeedSetup:
    from iclsel.models.context import ModelAccess, SelectionContext, SelectionProblem

    spec = SPECS[dataset]
    split = make_split(examples, seed, dataset_sizes(dataset, pool_size))
    layout = engine.layout(split.pool, split.select, spec.k, label_options(examples), spec.template, SEPARATOR)
    ctx = SelectionContext(SelectionProblem(layout, split.pool, split.select, spec.k),
                           ModelAccess(engine._runner(layout), engine.model.tokenizer, engine.cache, fingerprint),
                           seed, lambda *_: None)
    base_key = [dataset, seed, fingerprint, spec.template, spec.k, [e.id for e in split.pool],
                [e.id for e in split.select]]
    return SeedSetup(dataset, seed, engine, ctx, split, base_key, journal_path)


def _losses(ctx, scores: torch.Tensor) -> list[float]:
    from iclsel.models.outcome import query_losses

    return query_losses(scores.double(), ctx.layout.gold).tolist()


def end_anchor(setup: SeedSetup, journal: dict, log: Callable[[str], None]) -> list[int]:
    """The default gradient search's returned set for this seed (journalled)."""
    from iclsel.models.engine import SelectionRequest

    # the default search of this engine version (an older engine's default may differ: its record stays apart)
    key = _key("search", *setup.base_key, engine_source_hash())
    if key not in journal:
        spec = SPECS[setup.dataset]
        result = setup.engine.select(SelectionRequest(
            pool=setup.split.pool, queries=setup.split.select, k=spec.k, method="gradient",
            options=setup.ctx.layout.options, template=spec.template, separator=SEPARATOR, seed=setup.seed,
            params={"evaluate_selected": False}))
        ids = [d["id"] for d in result["selected"]]
        index = {e.id: i for i, e in enumerate(setup.split.pool)}
        record = {"key": key, "type": "search", "dataset": setup.dataset, "seed": setup.seed,
                  "evaluator": result["notes"].get("evaluator", "exact"),
                  "selected": [index[i] for i in ids], "notes": result["notes"], "passes": result["passes"],
                  "engine_source": engine_source_hash(),
                  "seconds": result["timings"]["total"]}
        append_journal(setup.journal_path, record)
        journal[key] = record
        log(f"  {setup.dataset} seed {setup.seed}: default search ended on {record['selected']} "
            f"({result['passes']['selection_forward_equivalent']} fwd-eq)")
    return journal[key]["selected"]


def best_per_slot(estimator, anchor: list[int], n: int, depth: int) -> list[list[list[int]]]:
    """Per slot, the ``depth`` single swaps of ``anchor`` with the lowest estimated loss, best first (over every
    demo outside the anchor, as the search orders its candidates)."""
    from iclsel.models.selectors import _ranked_per_slot, _single_swaps

    swaps = _single_swaps(anchor, n)
    ranked = _ranked_per_slot(swaps, estimator.estimate(swaps).loss, torch.tensor(anchor))
    return [[anchor[:slot] + [demo] + anchor[slot + 1:] for demo in demos[:depth]] for slot, demos in enumerate(ranked)]


def run_anchor(setup: SeedSetup, name: str, anchor: list[int], singles: int, pairs: int, journal: dict,
               log: Callable[[str], None]) -> None:
    """Journal the anchor's estimates of its sampled swaps, then each swap's exact run."""
    from iclsel.models.outcome import query_losses

    ctx = setup.ctx
    swaps = sample_swaps(anchor, ctx.n, singles, pairs, setup.seed)
    # the estimates depend on the engine's anchor code: a new engine estimates again (the swaps' exact runs stay)
    engine = engine_source_hash()
    anchor_key = _key("anchor", *setup.base_key, anchor, singles, pairs, engine)
    if anchor_key not in journal:
        counter = ctx.runner.counter
        anchor_scores = ctx.exact(anchor)  # the zero-order value every evaluator starts from
        estimates, passes = {}, {}
        tensor = torch.tensor(swaps)
        for mode in ("label-groups", "mean-loss"):
            before = counter.forward_equivalent
            estimator = ctx.anchor(anchor, mode)
            passes[mode] = counter.forward_equivalent - before
            estimates[mode] = estimator.estimate(tensor).loss.tolist()
            if mode == "label-groups":  # per-query estimated losses [S, Q] (the control-variate evaluator)
                margins = estimator.estimated_margins(tensor)
                estimates["label-groups-per-query"] = query_losses(margins.double(), ctx.layout.gold).tolist()
            else:  # the default's candidate order: each slot's best-estimated single swaps, over all of them
                ordered = best_per_slot(estimator, anchor, ctx.n, ORDER_DEPTH)
        # the mean-loss gradient on SCREEN label-stratified queries only (a cheaper ranking)
        rows = [int(q) for q in stratified_rows(ctx.layout.gold.numpy(), SCREEN, np.random.default_rng(setup.seed))]
        before = counter.forward_equivalent
        small = ctx.runner.anchor("mean-loss", anchor, rows)
        passes["mean-loss-screen"] = counter.forward_equivalent - before
        estimates["mean-loss-screen"] = AnchorEstimator(anchor, small, ctx.layout.demo_ids, ctx.runner.embed.weight,
                                                        ctx.layout.gold[rows]).estimate(tensor).loss.tolist()
        record = {"key": anchor_key, "type": "anchor", "dataset": setup.dataset, "seed": setup.seed, "name": name,
                  "anchor": anchor, "swaps": swaps, "k": ctx.k, "n": ctx.n, "queries": len(ctx.queries),
                  "gold": ctx.layout.gold.tolist(), "labels": [ctx.layout.demo_outputs[i] for i in range(ctx.n)],
                  "anchor_losses": _losses(ctx, anchor_scores), "estimates": estimates,
                  "anchor_passes": passes, "ordered": ordered, "rows_per_query": ctx.runner.rows_per_query,
                  "engine_source": engine}
        append_journal(setup.journal_path, record)
        journal[anchor_key] = record
    done = 0
    ordered = [subset for slot in journal[anchor_key]["ordered"] for subset in slot]
    for index, subset in enumerate(swaps + ordered):
        key = _key("swap", *setup.base_key, subset)
        if key in journal:
            continue
        before = ctx.runner.counter.as_dict()
        scores = ctx.exact(subset)
        after = ctx.runner.counter.as_dict()
        record = {"key": key, "type": "swap", "dataset": setup.dataset, "seed": setup.seed, "subset": subset,
                  "losses": _losses(ctx, scores), "predictions": scores.argmax(-1).tolist(),
                  "forward": after["forward"] - before["forward"],
                  "tokens_forward": after["tokens_forward"] - before["tokens_forward"]}
        append_journal(setup.journal_path, record)
        journal[key] = record
        done += 1
        if done % 10 == 0:
            log(f"  {setup.dataset} seed {setup.seed} {name}: {index + 1}/{len(swaps) + len(ordered)} swaps run exactly")


# ---------------------------------------------------------------- evaluators (from journalled data only)

@dataclass
class AnchorData:
    """One anchor's sampled swaps with their exact per-query losses and the anchor quantities."""
    dataset: str
    seed: int
    name: str
    anchor: list[int]
    swaps: np.ndarray  # [S, k]
    slot: np.ndarray  # [S] the slot a single swap changes, -1 for two-demo swaps
    exact_q: np.ndarray  # [S, Q] exact per-query losses
    anchor_q: np.ndarray  # [Q] the anchor's exact per-query losses (compact prompt)
    gold: np.ndarray  # [Q]
    labels: list[str]  # [n] each pool demo's label
    estimates: dict
    anchor_passes: dict
    n: int
    ordered: np.ndarray | None = None  # [k, ORDER_DEPTH] exact mean loss of each slot's best-estimated swaps
    rows_per_query: int = 1

    @property
    def exact(self) -> np.ndarray:  # [S]
        return self.exact_q.mean(1)

    @property
    def zero(self) -> float:
        return float(self.anchor_q.mean())

    @property
    def k(self) -> int:
        return len(self.anchor)

    @property
    def single_swaps(self) -> int:  # every single swap the search estimates at an anchor
        return self.k * (self.n - self.k)


Evaluator = Callable[[AnchorData, np.random.Generator], np.ndarray]  # -> estimated loss [S]


def first_order(mode: str) -> Evaluator:
    return lambda a, rng: np.array(a.estimates[mode])


def subsample(m: int) -> Evaluator:
    """Exact on m label-stratified queries, as a difference from the anchor on the same rows:
    zero-order + mean over the rows of (loss(S, q) - loss(anchor, q))."""
    def evaluate(a: AnchorData, rng: np.random.Generator) -> np.ndarray:
        rows = stratified_rows(a.gold, m, rng)
        return a.zero + (a.exact_q[:, rows] - a.anchor_q[rows]).mean(1)
    return evaluate


def subsample_control(m: int) -> Evaluator:
    """The first-order estimate on all queries, corrected by its error on m exact rows (a difference
    estimator with the label-group first-order per-query losses as control variate)."""
    def evaluate(a: AnchorData, rng: np.random.Generator) -> np.ndarray:
        rows = stratified_rows(a.gold, m, rng)
        fo_q = np.array(a.estimates["label-groups-per-query"])  # [S, Q]
        return fo_q.mean(1) + (a.exact_q[:, rows] - fo_q[:, rows]).mean(1)
    return evaluate


def surrogate_features(a: AnchorData) -> np.ndarray:
    """[S, F]: which slots changed (one-hot), the first-order delta, how many swaps keep the label."""
    changed = (a.swaps != np.array(a.anchor)[None]).astype(float)  # [S, k]
    fo = np.array(a.estimates["label-groups"]) - a.zero
    same_label = np.array([sum(a.labels[s] == a.labels[t] for s, t in zip(row, a.anchor) if s != t)
                           for row in a.swaps], dtype=float)
    return np.column_stack([changed, fo, same_label])


def surrogate(folds: int = 4, ridge: float = 1e-2) -> Evaluator:
    """A datamodel-style ridge regression of the exact change on surrogate_features, cross-fitted: each
    fold is predicted by a fit on the other folds' exact runs."""
    def evaluate(a: AnchorData, rng: np.random.Generator) -> np.ndarray:
        x, y = surrogate_features(a), a.exact - a.zero
        order = rng.permutation(len(y))
        predicted = np.empty(len(y))
        for fold in np.array_split(order, folds):
            train = np.setdiff1d(order, fold)
            xt = np.column_stack([x[train], np.ones(len(train))])
            coef = np.linalg.solve(xt.T @ xt + ridge * np.eye(xt.shape[1]), xt.T @ y[train])
            predicted[fold] = np.column_stack([x[fold], np.ones(len(fold))]) @ coef
        return a.zero + predicted
    return evaluate


@dataclass
class EvaluatorSpec:
    name: str
    evaluate: Evaluator
    cost: Callable[[AnchorData], float]  # forward-equivalents per evaluated subset
    random: bool  # averaged over DRAWS draws
    note: str


def _anchor_cost(mode: str) -> Callable[[AnchorData], float]:
    # the anchor pass (in the compact prompt: its scores are the zero-order term), over every single swap estimated
    return lambda a: a.anchor_passes[mode] / a.single_swaps


EVALUATORS = [
    EvaluatorSpec("first-order label-groups", first_order("label-groups"), _anchor_cost("label-groups"), False,
                  "per-label margin gradients in input embeddings, taken in the anchor's natural prompt"),
    EvaluatorSpec("first-order mean-loss", first_order("mean-loss"), _anchor_cost("mean-loss"), False,
                  "gradient of the summed loss only (one backward per query row): the default search's candidate order"),
    EvaluatorSpec(f"first-order mean-loss, {SCREEN} queries", first_order("mean-loss-screen"),
                  _anchor_cost("mean-loss-screen"), False,
                  f"the same gradient on {SCREEN} label-stratified queries only"),
    EvaluatorSpec("random order", lambda a, rng: rng.random(len(a.swaps)), lambda a: 0.0, True,
                  "no estimate: candidates in random order (what the gradient must beat)"),
    *[EvaluatorSpec(f"subsample {m}", subsample(m), lambda a, m=m: float(m), True,
                    f"exact on {m} label-stratified queries, as a paired difference from the anchor on them")
      for m in SUBSAMPLE_SIZES],
    EvaluatorSpec("subsample 8 + first-order", subsample_control(8),
                  lambda a: 8 + _anchor_cost("label-groups")(a), True,
                  "first-order on all queries plus its error measured on 8 exact queries (control variate)"),
    EvaluatorSpec("surrogate", surrogate(), lambda a: (0.75 * len(a.swaps) * len(a.gold)
                                                      + a.anchor_passes["label-groups"]) / a.single_swaps,
                  True, "ridge on slot one-hots, first-order delta and same-label count, fitted on 3/4 of the "
                        "exact runs (4-fold cross-fitting); cost: the fitting runs spread over every single swap"),
    EvaluatorSpec("exact", lambda a, rng: a.exact, lambda a: float(len(a.gold)), False,
                  "every query run exactly (the reference)"),
]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def figures(a: AnchorData, estimate: np.ndarray) -> dict:
    exact = a.exact
    singles = a.slot >= 0
    within, best_of_slot = [], []
    for slot in range(a.k):
        members = np.flatnonzero(a.slot == slot)
        within.append(_spearman(estimate[members], exact[members]))
        best_of_slot.append(members[np.argmin(estimate[members])])
    top_quartile = set(np.argsort(exact)[: max(1, len(exact) // 4)].tolist())
    top = np.argsort(estimate)[:TOP]
    return {
        "spearman_all": _spearman(estimate, exact),
        "spearman_within": float(np.nanmean(within)) if not np.all(np.isnan(within)) else float("nan"),
        "spearman_across": _spearman(estimate[best_of_slot], exact[best_of_slot]),
        "spearman_singles": _spearman(estimate[singles], exact[singles]),
        "precision_top8": float(np.mean([i in top_quartile for i in top])),
        "closer_than_zero": float(np.mean(np.abs(estimate - exact) < np.abs(a.zero - exact))),
        "closer_than_zero_singles": float(np.mean((np.abs(estimate - exact) < np.abs(a.zero - exact))[singles])),
        "mean_abs_error": float(np.mean(np.abs(estimate - exact))),
        "zero_order_abs_error": float(np.mean(np.abs(a.zero - exact))),
    }


def evaluate_anchor(a: AnchorData, spec: EvaluatorSpec) -> dict:
    draws = DRAWS if spec.random else 1
    rng = np.random.default_rng([a.seed, *a.anchor, len(spec.name)])
    per_draw = [figures(a, spec.evaluate(a, rng)) for _ in range(draws)]
    out = {name: float(np.nanmean([d[name] for d in per_draw])) for name in per_draw[0]}
    out["passes_per_subset"] = spec.cost(a)
    return out


def candidate_order(a: AnchorData) -> dict | None:
    """The default's first batch of proposals (each slot's PER_SLOT best by the mean-loss gradient) against
    random candidates of the same slots, by exact change of the loss from the anchor (lower is better)."""
    if a.ordered is None or not a.ordered.size:
        return None
    by_slot = [a.exact[np.flatnonzero(a.slot == slot)] - a.zero for slot in range(a.k)]  # random singles per slot
    gradient = a.ordered[:, :PER_SLOT] - a.zero  # [k, PER_SLOT]
    anchor_passes = a.anchor_passes["mean-loss"]
    # screened proposals the anchor pass would buy instead: it also gives the start's exact value, which a search
    # without a gradient runs anyway (one exact run on every query)
    extra = int(max(anchor_passes - len(a.gold) * a.rows_per_query, 0) // (SCREEN * a.rows_per_query))
    rng = np.random.default_rng([a.seed, *a.anchor])
    random_batch, equal_passes = [], []
    pool = np.concatenate(by_slot)
    for _ in range(DRAWS):
        random_batch.append(np.concatenate([rng.choice(d, min(PER_SLOT, len(d)), replace=False) for d in by_slot]))
        equal_passes.append(rng.choice(pool, min(len(pool), PER_SLOT * a.k + extra), replace=False))

    def stats(batches: list[np.ndarray]) -> dict:
        return {"mean_change": float(np.mean([b.mean() for b in batches])),
                "improving": float(np.mean([(b < 0).mean() for b in batches])),
                "best_change": float(np.mean([b.min() for b in batches])),
                "proposals": float(np.mean([len(b) for b in batches]))}

    return {"gradient": {**stats([gradient.reshape(-1)]), "anchor_passes": float(anchor_passes),
                         "depth_mean_change": [float(v) for v in (a.ordered - a.zero).mean(0)]},
            "random": {**stats(random_batch), "anchor_passes": 0.0},
            "random_equal_passes": {**stats(equal_passes), "anchor_passes": 0.0}}


def newest_engine(journal: dict) -> str | None:
    """The engine source of the journal's last anchor record (None for records older than the field)."""
    anchors = [r for r in journal.values() if r.get("type") == "anchor"]
    return anchors[-1].get("engine_source") if anchors else None


def load_anchors(journal: dict, datasets: list[str], seeds: list[int] | None, engine: str | None) -> list[AnchorData]:
    """The complete anchors (every swap run) whose estimates ``engine`` made: one engine's estimates per report."""
    swaps = {(r["dataset"], r["seed"], tuple(r["subset"])): r for r in journal.values() if r.get("type") == "swap"}
    # an end anchor is named after the evaluator of the search that ended there (engines before params.evaluator
    # had only the exact-confirmed search)
    ended_by = {(r["dataset"], r["seed"], tuple(r["selected"])): r["notes"].get("evaluator", "exact")
                for r in journal.values() if r.get("type") == "search"}
    anchors = []
    for r in journal.values():
        if (r.get("type") != "anchor" or r["dataset"] not in datasets or (seeds and r["seed"] not in seeds)
                or r.get("engine_source") != engine):
            continue
        runs = [swaps.get((r["dataset"], r["seed"], tuple(s))) for s in r["swaps"]]
        ordered = [[swaps.get((r["dataset"], r["seed"], tuple(s))) for s in slot] for slot in r.get("ordered", [])]
        if any(run is None for run in runs + [run for slot in ordered for run in slot]):
            continue  # not every swap has run yet
        subsets = np.array(r["swaps"])
        changed = subsets != np.array(r["anchor"])[None]
        slot = np.where(changed.sum(1) == 1, changed.argmax(1), -1)
        name = r["name"]
        if name == "end":
            name = f"end of search ({ended_by.get((r['dataset'], r['seed'], tuple(r['anchor'])), '?')})"
        anchors.append(AnchorData(r["dataset"], r["seed"], name, r["anchor"], subsets, slot,
                                  np.array([run["losses"] for run in runs]), np.array(r["anchor_losses"]),
                                  np.array(r["gold"]), r["labels"], r["estimates"], r["anchor_passes"], r["n"],
                                  np.array([[np.mean(run["losses"]) for run in slot] for slot in ordered])
                                  if ordered else None, r.get("rows_per_query", 1)))
    return sorted(anchors, key=lambda a: (a.dataset, a.seed, a.name))


def summarize(anchors: list[AnchorData]) -> dict:
    """dataset -> evaluator -> figures (mean over that dataset's anchors), plus per-anchor rows."""
    out: dict = {}
    for dataset in sorted({a.dataset for a in anchors}):
        mine = [a for a in anchors if a.dataset == dataset]
        out[dataset] = {}
        for spec in EVALUATORS:
            rows = [evaluate_anchor(a, spec) for a in mine]
            mean = {name: float(np.nanmean([row[name] for row in rows])) for name in rows[0]}
            mean["anchors"] = [{"seed": a.seed, "anchor": a.name, **row} for a, row in zip(mine, rows)]
            mean["note"] = spec.note
            out[dataset][spec.name] = mean
        orders = [(a, candidate_order(a)) for a in mine]
        orders = [(a, o) for a, o in orders if o is not None]
        if orders:
            out[dataset][ORDER] = {
                "per_anchor": [{"seed": a.seed, "anchor": a.name, "n": a.n, **o} for a, o in orders],
                **{arm: {name: float(np.mean([o[arm][name] for _, o in orders]))
                         for name in ("mean_change", "improving", "best_change", "proposals", "anchor_passes")}
                   for arm in ARMS}}
    return out


def kv_reuse_bound(journal: dict, model: str, datasets: list[str]) -> dict:
    """What reusing the key/value cache of the slots before a swapped slot could save in an exact run: the
    prefix's share of the tokens the journalled runs computed, times the mean over slots s of s/k (the share of
    the prefix before slot s). It saves no rows: every query row still runs. Tokenizer work only."""
    from iclsel.models.engine import Engine
    from iclsel.models.loading import load_model

    from . import data as bench_data

    engine = Engine(load_model(model))
    out = {}
    for dataset in datasets:
        # runs that computed their rows (a set already run in the same job is answered from memory: 0 tokens)
        runs = [r for r in journal.values() if r.get("type") == "swap" and r["dataset"] == dataset
                and r["tokens_forward"] > 0]
        if not runs:
            continue
        spec = DATASET_SPECS[dataset]
        examples = load_examples(bench_data.ensure(dataset))
        shares = []
        for seed in sorted({r["seed"] for r in runs}):
            split = make_split(examples, seed, spec.sizes or Sizes())
            layout = engine.layout(split.pool, split.select, spec.k, label_options(examples), spec.template, SEPARATOR)
            query_tokens = sum(len(ids) for ids in layout.query_ids)
            shares += [(r["tokens_forward"] - query_tokens) / r["tokens_forward"] for r in runs if r["seed"] == seed]
        prefix_share = float(np.mean(shares))
        out[dataset] = {"exact_runs": len(shares), "prefix_token_share": prefix_share,
                        "kv_reuse_token_saving_at_most": prefix_share * (spec.k - 1) / (2 * spec.k),
                        "kv_reuse_row_saving": 0.0}
    return out


# ---------------------------------------------------------------- report

COLUMNS = [("spearman_all", "Spearman, all swaps"), ("spearman_within", "within a slot"),
           ("spearman_across", "across slots (each slot's best)"), ("precision_top8", "top-8 precision"),
           ("closer_than_zero", "closer than zero-order"), ("passes_per_subset", "fwd-eq per subset")]


def _evaluators(figures_by_name: dict):
    """(name, figures) of the evaluators in a dataset's figures (the candidate-order figures apart)."""
    return [(name, figs) for name, figs in figures_by_name.items() if name != ORDER]


def _order_table(order: dict | None) -> list[str]:
    if not order:
        return []
    titles = {"gradient": f"gradient order ({PER_SLOT} best-estimated per slot)",
              "random": f"random order ({PER_SLOT} per slot)",
              "random_equal_passes": "random order, the gradient's passes spent on more proposals"}
    lines = ["", "Candidate order: the default search's first batch of proposals, by exact change of the selection "
             "queries' mean loss from the anchor (lower is better; mean over anchors):", "",
             "| order | proposals | mean change | share improving | best change | anchor fwd-eq |", "|---|---|---|---|---|---|"]
    for arm in ARMS:
        row = order[arm]
        lines.append(f"| {titles[arm]} | {row['proposals']:.1f} | {row['mean_change']:+.3f} | {row['improving']:.2f} | "
                     f"{row['best_change']:+.3f} | {row['anchor_passes']:.0f} |")
    lines += ["", "Per anchor, gradient order, mean exact change at depth 1..4 of each slot's ranking: " + "; ".join(
        f"seed {r['seed']} {r['anchor']} (n = {r['n']}): " + ", ".join(f"{v:+.3f}" for v in r["gradient"]["depth_mean_change"])
        for r in order["per_anchor"])]
    return lines


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"


def markdown(result: dict, anchors: list[AnchorData], journal: dict, command: str, model: str, engine: str | None,
             kv: dict | None = None) -> str:
    info = report.machine_info()
    lines = ["# Evaluator fidelity", "", "This file is regenerated by `python -m bench.fidelity`; do not edit by hand.",
             "", "Command:", "", f"    {command}", "",
             f"Machine: {info['cpu']}, {info['cores']} cores (torch {info['torch']}); date {info['date']}; "
             f"commit {info['commit']}. Model: {model}. Estimates by engine source {engine}.", "",
             __doc__.split("\n\n", 1)[1].split("Writes")[0].strip(), ""]
    for dataset, evaluators in result.items():
        mine = [a for a in anchors if a.dataset == dataset]
        sizes = mine[0]
        lines += [f"## {dataset}", "",
                  f"Pool {sizes.n}, {len(sizes.gold)} selection queries, k = {sizes.k}; anchors: "
                  + ", ".join(f"seed {a.seed} {a.name} (exact loss {a.zero:.3f}, {int((a.slot >= 0).sum())} single "
                              f"+ {int((a.slot < 0).sum())} two-demo swaps)" for a in mine) + ".", "",
                  "| evaluator | " + " | ".join(title for _, title in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for name, figs in _evaluators(evaluators):
            lines.append(f"| {name} | " + " | ".join(_fmt(figs[c]) for c, _ in COLUMNS) + " |")
        lines += _order_table(evaluators.get(ORDER))
        lines += ["", "Per anchor (Spearman across slots / closer than zero-order):", "",
                  "| evaluator | " + " | ".join(f"seed {a.seed} {a.name}" for a in mine) + " |",
                  "|---|" + "---|" * len(mine)]
        for name, figs in _evaluators(evaluators):
            lines.append(f"| {name} | " + " | ".join(
                f"{_fmt(row['spearman_across'])} / {_fmt(row['closer_than_zero'])}" for row in figs["anchors"]) + " |")
        lines += [""]
    lines += ["Evaluators:", ""] + [f"- **{spec.name}**: {spec.note}." for spec in EVALUATORS]
    if kv:
        lines += ["", "Key/value reuse (a swap at slot s reusing the cache of slots 0..s-1) saves no row and at most "
                  "this share of an exact run's computed tokens:", ""]
        lines += [f"- {dataset}: prefix {v['prefix_token_share']:.1%} of the tokens over {v['exact_runs']} exact runs, "
                  f"so at most {v['kv_reuse_token_saving_at_most']:.1%}" for dataset, v in kv.items()]
    shown = {(a.dataset, a.seed, tuple(a.anchor)) for a in anchors}
    searches = list({(r["dataset"], r["seed"], tuple(r["selected"])): r for r in journal.values()
                     if r.get("type") == "search" and (r["dataset"], r["seed"], tuple(r["selected"])) in shown}.values())
    if searches:
        lines += ["", "End anchors: the default gradient search (`params.evaluate_selected` false) on each seed:", ""]
        for r in sorted(searches, key=lambda r: (r["dataset"], r["seed"])):
            lines.append(f"- {r['dataset']} seed {r['seed']}, evaluator {r['notes'].get('evaluator', 'exact')}: {r['selected']}, "
                         f"{r['passes']['selection_forward_equivalent']} selection fwd-eq, notes {json.dumps(r['notes'])}")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(result)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for name, figs in _evaluators(result[dataset]):
            ax.scatter(figs["passes_per_subset"], figs["spearman_across"], s=40)
            ax.annotate(name, (figs["passes_per_subset"], figs["spearman_across"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.axhline(0.6, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("forward-equivalents per evaluated subset (log)")
        ax.set_ylabel("Spearman across slots (each slot's best swap)")
        ax.set_title(dataset)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(SPECS), default=sorted(DATASET_SPECS))
    parser.add_argument("--pool-size", type=int, help="n, the pool's size (default: the protocol's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10])
    parser.add_argument("--anchors", nargs="+", choices=("start", "end"), default=["start", "end"])
    parser.add_argument("--singles", type=int, default=64, help="single swaps per anchor (spread evenly over slots)")
    parser.add_argument("--pairs", type=int, default=16, help="two-demo swaps per anchor")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                        help="journal, fidelity.json and fidelity.png (one per model: give a second model its own)")
    parser.add_argument("--report", type=Path, default=BENCH_DIR / "FIDELITY.md")
    parser.add_argument("--report-only", action="store_true", help="run nothing: rebuild the report from the journal")
    parser.add_argument("--kv-bound", action="store_true",
                        help="also bound what key/value reuse of the slots before a swap could save (tokenizer only)")
    args = parser.parse_args(argv)
    if any(seed in TEST_SEEDS for seed in args.seeds):
        parser.error("seeds 0-2 are the protocol's test seeds: measure fidelity on dev seeds")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    journal_path = args.out_dir / JOURNAL_NAME
    journal = read_journal(journal_path)
    if not args.report_only:
        from . import data as bench_data

        new_engine, fingerprint = default_engine_factory(args.model, args.threads)
        for dataset in args.datasets:
            examples = load_examples(bench_data.ensure(dataset))
            for seed in args.seeds:
                setup = setup_seed(new_engine(), examples, dataset, seed, fingerprint, journal_path, args.pool_size)
                for name in args.anchors:
                    anchor = setup.ctx.balanced_subset() if name == "start" else end_anchor(setup, journal, print)
                    if name == "start":
                        setup.ctx.rng = np.random.default_rng(seed)  # leave the context as the search found it
                    run_anchor(setup, name, anchor, args.singles, args.pairs, journal, print)
                    print(f"{dataset} seed {seed} {name}: done", flush=True)
    # the estimates of this engine (with --report-only: of the newest engine in the journal)
    engine = newest_engine(journal) if args.report_only else engine_source_hash()
    anchors = load_anchors(journal, args.datasets, None, engine)
    if not anchors:
        print("no complete anchor in the journal yet")
        return 0
    result = summarize(anchors)
    kv = kv_reuse_bound(journal, args.model, args.datasets) if args.kv_bound else None
    report.write_json(args.out_dir / "fidelity.json", result if kv is None else {**result, "kv_reuse_bound": kv})
    command = "python -m bench.fidelity " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    args.report.write_text(markdown(result, anchors, journal, command, args.model, engine, kv))
    plot(result, args.out_dir / "fidelity.png")
    for dataset, evaluators in result.items():
        for name, figs in _evaluators(evaluators):
            print(f"{dataset:5s} {name:28s} " + " ".join(f"{c}={_fmt(figs[c])}" for c, _ in COLUMNS))
        print("\n".join(_order_table(evaluators.get(ORDER))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
