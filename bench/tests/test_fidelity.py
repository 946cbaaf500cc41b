"""bench.fidelity's sampling and evaluator figures on synthetic exact runs (no model)."""

import numpy as np
import pytest

from bench.fidelity import EVALUATORS, AnchorData, candidate_order, evaluate_anchor, sample_swaps, subsample


def test_swaps_are_spread_evenly_over_the_slots_and_avoid_the_anchor():
    anchor = [3, 7, 1, 9]
    swaps = sample_swaps(anchor, 30, singles=64, pairs=16, seed=11)
    assert len(swaps) == 80 and swaps == sample_swaps(anchor, 30, 64, 16, 11)
    changed = [[s for s in range(4) if row[s] != anchor[s]] for row in swaps]
    assert [len(c) for c in changed] == [1] * 64 + [2] * 16
    assert [c[0] for c in changed[:64]] == [s for s in range(4) for _ in range(16)]
    for row in swaps:
        assert len(set(row)) == 4 and all(row[s] not in anchor for s in range(4) if row[s] != anchor[s])


def synthetic_anchor(rng) -> AnchorData:
    anchor = [0, 1, 2]
    swaps = np.array(sample_swaps(anchor, 20, singles=30, pairs=6, seed=1))
    changed = swaps != np.array(anchor)[None]
    slot = np.where(changed.sum(1) == 1, changed.argmax(1), -1)
    gold = np.array([0, 1] * 8)
    anchor_q = rng.uniform(0.2, 1.5, 16)
    exact_q = anchor_q + rng.normal(0, 0.3, (len(swaps), 16)) + rng.normal(0, 0.3, (len(swaps), 1))
    estimates = {"label-groups": list(exact_q.mean(1) + rng.normal(0, 0.5, len(swaps))),
                 "mean-loss": list(rng.normal(1, 0.1, len(swaps))),
                 "mean-loss-screen": list(rng.normal(1, 0.1, len(swaps))),
                 "label-groups-per-query": exact_q.tolist()}
    # each slot's 4 best-estimated swaps: 0.2 below the anchor at depth 1, then less
    ordered = anchor_q.mean() - np.array([[0.2, 0.1, 0.05, 0.0]] * 3)
    return AnchorData("toy", 10, "start", anchor, swaps, slot, exact_q, anchor_q, gold, ["a", "b"] * 10, estimates,
                      {"label-groups": 48, "mean-loss": 48, "mean-loss-screen": 24}, 20, ordered)


def test_a_subsample_of_every_query_is_the_exact_loss():
    a = synthetic_anchor(np.random.default_rng(0))
    estimate = subsample(16)(a, np.random.default_rng(1))
    assert np.allclose(estimate, a.exact)


def test_figures_order_evaluators_by_how_much_exact_signal_they_see():
    a = synthetic_anchor(np.random.default_rng(0))
    figures = {spec.name: evaluate_anchor(a, spec) for spec in EVALUATORS}
    assert figures["exact"]["spearman_all"] == pytest.approx(1.0) and figures["exact"]["closer_than_zero"] == 1.0
    assert figures["subsample 4"]["spearman_all"] < figures["subsample 8"]["spearman_all"] < figures["exact"]["spearman_all"]
    # the mean-loss stand-in is noise around the anchor's value: no rank signal
    assert abs(figures["first-order mean-loss"]["spearman_all"]) < 0.4
    assert figures["subsample 8"]["passes_per_subset"] == 8
    assert abs(figures["random order"]["spearman_within"]) < 0.2 and figures["random order"]["passes_per_subset"] == 0
    # the anchor pass alone (its scores are the prompt's exact run), spread over the single swaps
    assert figures["first-order label-groups"]["passes_per_subset"] == pytest.approx(48 / (3 * 17))


def test_candidate_order_sets_the_gradients_batch_against_random_ones_at_equal_passes():
    a = synthetic_anchor(np.random.default_rng(0))
    order = candidate_order(a)
    assert order["gradient"]["proposals"] == 6 and order["gradient"]["mean_change"] == pytest.approx(-0.15)
    assert order["gradient"]["improving"] == 1.0 and order["gradient"]["best_change"] == pytest.approx(-0.2)
    assert order["random"]["proposals"] == 6  # 2 per slot
    # the mean-loss anchor's 48 forward-equivalents, less the start's exact run on 16 queries, buy 32 / 8 = 4 more
    # screened proposals
    assert order["random_equal_passes"]["proposals"] == 10
    assert order["random_equal_passes"]["best_change"] <= order["random"]["best_change"]
