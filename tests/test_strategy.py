"""params.strategy (models/strategy.py): auto decides between the searched set and per-query retrieval on queries
the search never saw; topk-embed and bm25 return each query's nearest demos without a search."""

import pytest
import torch

from iclsel.contract import SelectionResult
from iclsel.models.cache import MemoryCache
from iclsel.models.data import Example, InputError
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.strategy import Check, choose, split

from test_core import make_examples

TARGETS = ["good fun film", "boring plot awful"]


@pytest.fixture(scope="module")
def data():
    return make_examples(12, "d", 0), make_examples(8, "q", 1)


@pytest.mark.parametrize("seed", [1, 2])  # on this tiny model seed 1 picks topk-embed, seed 2 the set
def test_auto_validates_each_strategy_on_held_out_queries_and_returns_the_best(tiny, data, seed):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, seed=seed, targets=TARGETS, params={"rounds": 1}))
    SelectionResult.model_validate(result)
    report = result["strategy"]
    assert report["by"] == "validation" and report["search_queries"] + report["validation_queries"] == len(queries)
    checks = {check["strategy"]: check for check in report["checks"]}
    assert set(checks) == {"set", "topk-embed", "bm25"} and report["checks"][0]["strategy"] == report["chosen"]
    best = max(checks.values(), key=lambda c: (c["accuracy"], -c["loss"]))
    assert checks[report["chosen"]]["accuracy"] == best["accuracy"]

    # every check is the exact outcome of that strategy's prompts on the held-out queries, which the search
    # never saw: rerun them here with evaluate()
    search_rows, validation_rows = split(torch.tensor([q.output == "positive" for q in queries]).long().numpy(),
                                         0.5, seed)
    held_out = [queries[i] for i in validation_rows]
    assert report["validation_queries"] == len(held_out)
    for name in ("topk-embed", "bm25"):
        prompts = engine.retrieve_per_query(pool, held_out, 3, name)
        scored = engine.evaluate(prompts, held_out)
        assert checks[name]["accuracy"] == pytest.approx(scored["accuracy"])
        assert checks[name]["loss"] == pytest.approx(scored["loss"], abs=1e-5)
        low, high = checks[name]["accuracy_ci95"]
        assert low <= checks[name]["accuracy"] <= high

    by_id = {d.id: d for d in pool}
    if report["chosen"] == "set":
        assert len(result["selected"]) == 3 and result["retrieved"] is None
        chosen = [by_id[d["id"]] for d in result["selected"]]
        assert checks["set"]["loss"] == pytest.approx(engine.evaluate(chosen, held_out)["loss"], abs=1e-5)
    else:  # the per-query prompts: each query's and target's k nearest demos, and nothing shared
        assert result["selected"] == [] and result["retrieved"]["slots"] == 3
        assert result["retrieved"]["by"] == report["chosen"]
        expected = engine.retrieve_per_query(pool, list(queries) + [Example("t", t, "positive") for t in TARGETS],
                                             3, report["chosen"])
        assert result["retrieved"]["queries"] + result["retrieved"]["targets"] == [[d.id for d in e] for e in expected]
        prompts = [[by_id[i] for i in ids] for ids in result["retrieved"]["queries"]]
        assert result["exact"]["loss"] == pytest.approx(engine.evaluate(prompts, queries)["loss"], abs=1e-5)


def test_auto_spends_no_more_than_the_search_alone_may(tiny, data):
    pool, queries = data
    result = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, seed=2, targets=TARGETS))
    rows = 3  # the tiny tokenizer splits both options into several tokens: one row per option
    assert result["passes"]["selection_forward_equivalent"] <= 16 * len(queries) * rows


@pytest.mark.parametrize("strategy", ["topk-embed", "bm25"])
def test_a_per_query_strategy_retrieves_without_a_search(tiny, data, strategy):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, targets=TARGETS, params={"strategy": strategy}))
    assert result["strategy"]["chosen"] == strategy and result["strategy"]["by"] == "request"
    assert result["selected"] == [] and result["explored_subsets"] == 0
    embeddings = len(pool) + len(queries) + len(TARGETS) if strategy == "topk-embed" else 0
    assert result["passes"]["selection_forward_equivalent"] == embeddings
    assert result["prompt"]["text"] == ""
    expected = engine.retrieve_per_query(pool, [Example("t", t, "positive") for t in TARGETS], 3, strategy)
    assert result["retrieved"]["targets"] == [[d.id for d in demos] for demos in expected]


def test_auto_runs_the_set_search_where_it_cannot_validate_and_says_why(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    bounded = engine.select(SelectionRequest(pool, queries, k=3, min_per_label=1, params={"rounds": 1}))
    assert bounded["strategy"]["chosen"] == "set" and "min_per_label" in bounded["strategy"]["by"]
    few = engine.select(SelectionRequest(pool, queries[:3], k=3, params={"rounds": 1}))
    assert few["strategy"]["chosen"] == "set" and "fewer than 4 queries" in few["strategy"]["by"]
    with pytest.raises(InputError) as refused:
        engine.select(SelectionRequest(pool, queries, k=3, min_per_label=1, params={"strategy": "bm25"}))
    assert refused.value.field == "params.strategy"
    for params, field in (({"strategy": "best"}, "params.strategy"), ({"holdout": 1.0}, "params.holdout")):
        with pytest.raises(InputError) as raised:
            engine.select(SelectionRequest(pool, queries, k=3, params=params))
        assert raised.value.field == field


def test_the_split_is_label_balanced_disjoint_and_seeded():
    gold = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 2, 2]).numpy()
    search, validation = split(gold, 0.5, 3)
    assert sorted(search + validation) == list(range(10)) and len(validation) == 5
    assert sorted(gold[validation].tolist()) in ([0, 0, 1, 1, 2], [0, 1, 1, 2, 2], [0, 0, 1, 2, 2])
    assert split(gold, 0.5, 3) == (search, validation) and split(gold, 0.5, 4) != (search, validation)


def test_choose_ranks_by_accuracy_then_loss_and_bounds_the_margin():
    right, wrong = torch.tensor([[0.0, -5.0]] * 4), torch.tensor([[-5.0, 0.0]] * 4)
    gold = torch.tensor([0, 0, 0, 0])
    mixed = torch.cat([right[:3], wrong[:1]])
    checks = [Check.of("set", mixed, gold), Check.of("bm25", right, gold), Check.of("topk-embed", right * 2, gold)]
    best, report = choose(checks, seed=0)
    assert best.strategy == "topk-embed"  # as accurate as bm25, lower loss
    assert [c["strategy"] for c in report["checks"]] == ["topk-embed", "bm25", "set"]
    assert report["margin_ci95"] == [0.0, 0.0]  # tied with the runner-up on every query
