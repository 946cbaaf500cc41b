"""params.strategy (models/strategy.py): auto decides between the searched set, per-query retrieval by the model's
embedding, the hybrid of both, and per-query retrieval by the sentence model and its hybrid (params.compare: also
BM25) on pool demos the search never scored; topk-embed, topk-sentence and bm25 return each query's nearest demos
without a search."""

import math
import time
from dataclasses import replace

import pytest
import torch

from iclsel.contract import DEFAULT_COMPARE, DEFAULT_VOTE_ORDER, HYBRIDS, GradientParams, SelectionResult
from iclsel.models.cache import MemoryCache
from iclsel.models.data import Example, InputError
from iclsel.models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.inference import ModelRunner, PassCounter
from iclsel.models.loading import SentenceModel
from iclsel.models import plan as plan_module
from iclsel.models import strategy
from iclsel.contract import MIN_GATE_QUERIES, majority_last
from iclsel.models.strategy import BY_SENTENCE, SENTENCE, Check, choose, clear_win, gate, held_out

from test_core import make_examples

TARGETS = ["good fun film", "boring plot awful"]


@pytest.fixture(scope="module")
def data():
    return make_examples(12, "d", 0), make_examples(8, "q", 1)


def wins(monkeypatch, name: str):
    """The tiny random model rarely prefers the set or the hybrid on held-out demos: make ``name`` win, as a real
    task can."""
    def prefer(checks, seed):
        best, report = choose(checks, seed)
        first = next(c for c in checks if c.strategy == name)
        report["checks"].sort(key=lambda c: c["strategy"] != name)
        return first, report
    monkeypatch.setattr(strategy, "choose", prefer)


def set_wins(monkeypatch):
    wins(monkeypatch, "set")


THREE = ("set", "topk-embed", "hybrid")


@pytest.mark.parametrize("seed, winner, compare", [(0, None, None), (3, None, None), (0, "set", None),
                                                   (0, "hybrid", None), (0, None, THREE),
                                                   (0, "topk-sentence", None), (0, "hybrid-sentence", None)])
# None: the model picks
def test_auto_validates_each_strategy_on_held_out_demos_and_returns_the_best(tiny, data, seed, winner, compare,
                                                                              monkeypatch):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    if winner:
        wins(monkeypatch, winner)
    result = engine.select(SelectionRequest(pool, queries, k=3, seed=seed, targets=TARGETS,
                                            params={"rounds": 1, "validation": 6,
                                                    **({"compare": list(compare)} if compare else {})}))
    SelectionResult.model_validate(result)
    report = result["strategy"]
    assert report["by"] == "validation" and report["search_queries"] == len(queries)
    assert report["validation_queries"] == 6
    checks = {check["strategy"]: check for check in report["checks"]}
    assert set(checks) == set(compare or DEFAULT_COMPARE)
    assert report["checks"][0]["strategy"] == report["chosen"]
    best = max(c["accuracy"] for c in checks.values())
    assert (checks[report["chosen"]]["accuracy"] == best or winner
            or any(checks.get(name, {}).get("accuracy") == best for name in BY_SENTENCE))
    assert report["chosen"] == (winner or report["chosen"])

    # the set the search found (on every query, as strategy "set" finds it)
    searched = engine.select(SelectionRequest(pool, queries, k=3, seed=seed, params={"rounds": 1, "strategy": "set"}))
    assert [d["id"] for d in searched["selected"]] == [d["id"] for d in result["selected"]] or \
        report["chosen"] != "set"
    index = {d.id: i for i, d in enumerate(pool)}
    labels = [d.output for d in pool]
    chosen = [index[d["id"]] for d in searched["selected"]]
    # every check is the exact outcome of that strategy's prompts on pool demos outside the set, none of them a
    # query of the search: rerun them here with evaluate()
    gold = torch.tensor([d.output == "positive" for d in pool]).long().numpy()
    rows = held_out(gold, chosen, 6, seed)
    assert not set(rows) & set(chosen) and len(rows) == 6
    demos = [pool[i] for i in rows]
    scored = engine.evaluate([pool[i] for i in chosen], demos)
    assert checks["set"]["loss"] == pytest.approx(scored["loss"], abs=1e-5)
    for name in set(checks) - {"set", *HYBRIDS}:  # each held-out demo retrieves from the rest of the pool
        others = [[pool[i] for i in (majority_last(ids, labels) if name in DEFAULT_VOTE_ORDER else ids)] for ids in
                  [[j for j in [index[d.id] for d in near] if j != i][-3:] for i, near in
                   zip(rows, engine.retrieve_per_query(pool, demos, 4, name))]]
        scored = engine.evaluate(others, demos)
        assert checks[name]["accuracy"] == pytest.approx(scored["accuracy"])
        assert checks[name]["loss"] == pytest.approx(scored["loss"], abs=1e-5)
        low, high = checks[name]["accuracy_ci95"]
        assert low <= checks[name]["accuracy"] <= high
    # the hybrids: the set's first k - k//2 = 2 demos shared, then each held-out demo's nearest other pool demo by
    # the hybrid's retrieval that is not shared
    shared = chosen[:2]
    for name in set(checks) & set(HYBRIDS):
        own = [[j for j in [index[d.id] for d in near] if j != i and j not in shared][-1:] for i, near in
               zip(rows, engine.retrieve_per_query(pool, demos, 4, HYBRIDS[name]))]
        scored = engine.evaluate([pool[i] for i in shared], demos, context=[[pool[i] for i in ids] for ids in own])
        assert checks[name]["accuracy"] == pytest.approx(scored["accuracy"])
        assert checks[name]["loss"] == pytest.approx(scored["loss"], abs=1e-5)

    by_id = {d.id: d for d in pool}
    if report["chosen"] == "set":
        assert len(result["selected"]) == 3 and result["retrieved"] is None
    elif report["chosen"] in HYBRIDS:  # the shared head, then each query's and target's own nearest demo
        by = HYBRIDS[report["chosen"]]
        assert [d["id"] for d in result["selected"]] == [pool[i].id for i in shared]
        assert result["retrieved"]["slots"] == 1 and result["retrieved"]["by"] == by
        everyone = list(queries) + [Example("t", t, "positive") for t in TARGETS]
        expected = [[j for j in [index[d.id] for d in near] if j not in shared][-1:]
                    for near in engine.retrieve_per_query(pool, everyone, 3, by)]
        assert result["retrieved"]["queries"] + result["retrieved"]["targets"] == [[pool[i].id for i in ids]
                                                                                    for ids in expected]
        own = [[by_id[i] for i in ids] for ids in result["retrieved"]["queries"]]
        scored = engine.evaluate([pool[i] for i in shared], queries, context=own)
        assert result["exact"]["loss"] == pytest.approx(scored["loss"], abs=1e-5)
        layout = engine.layout(pool, queries[:1], 3, None, DEFAULT_TEMPLATE, DEFAULT_SEPARATOR)
        assert result["prompt"]["text"] == layout.prefix_text(shared) != ""
    else:  # the per-query prompts: each query's and target's k nearest demos, and nothing shared
        assert result["selected"] == [] and result["retrieved"]["slots"] == 3
        assert result["retrieved"]["by"] == report["chosen"]
        expected = engine.retrieve_per_query(pool, list(queries) + [Example("t", t, "positive") for t in TARGETS],
                                             3, report["chosen"], vote_order=report["chosen"] in DEFAULT_VOTE_ORDER)
        assert result["retrieved"]["queries"] + result["retrieved"]["targets"] == [[d.id for d in e] for e in expected]
        prompts = [[by_id[i] for i in ids] for ids in result["retrieved"]["queries"]]
        assert result["exact"]["loss"] == pytest.approx(engine.evaluate(prompts, queries)["loss"], abs=1e-5)


@pytest.mark.parametrize("the_set_wins", [False, True])
def test_auto_spends_the_searchs_passes_plus_validation_and_returns_the_searchs_set(tiny, data, the_set_wins,
                                                                                     monkeypatch):
    """Auto's search is strategy "set"'s own; it adds the pool's embeddings and the validation runs, and a
    topk-embed or hybrid win the embeddings of the queries and targets it returns neighbours for (a win of the
    sentence model's candidates: the sentence model's, counted apart)."""
    pool, queries = data
    if the_set_wins:
        set_wins(monkeypatch)
    chosen = set()
    for seed in range(3):
        engine = Engine(tiny, cache=MemoryCache())
        auto = engine.select(SelectionRequest(pool, queries, k=3, seed=seed, targets=TARGETS))
        alone = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, seed=seed,
                                                                          params={"strategy": "set"}))
        chosen.add(auto["strategy"]["chosen"])
        assert auto["strategy"]["searched"] == [d["id"] for d in alone["selected"]]  # whichever prompt won
        assert alone["strategy"]["searched"] == [d["id"] for d in alone["selected"]]
        rows = alone["notes"]["budget"] // (16 * len(queries))  # one row per query, or per option
        returned = len(queries) + len(TARGETS)  # the texts a per-query answer embeds
        extra = returned if auto["strategy"]["chosen"] in ("topk-embed", "hybrid") else 0
        validation = auto["strategy"]["validation_queries"]
        assert auto["passes"]["selection_forward_equivalent"] == (  # a check per candidate of params.compare
            alone["passes"]["selection_forward_equivalent"] + len(pool) + len(DEFAULT_COMPARE) * validation * rows
            + extra)
        assert auto["passes"]["sentence_texts"] == len(pool) + (
            returned if auto["strategy"]["chosen"] in BY_SENTENCE else 0)
        if auto["strategy"]["chosen"] == "set":
            assert auto["selected"] == alone["selected"] and auto["exact"] == alone["exact"]
    assert chosen == {"set"} or not the_set_wins


@pytest.mark.parametrize("winner", ["topk-embed", "hybrid"])
def test_auto_embeds_at_the_models_auto_layer_counts_its_share_and_names_it(tiny, data, winner, monkeypatch):
    """On a model with an auto_layer (SmolLM2-135M's 8 of 30; here the tiny model's 1 of 2) auto's topk-embed and
    hybrid retrieve by that layer's pooled output: the answer is those neighbours, `retrieved.layer` names the layer,
    and its embeddings count as that share of a pass, the whole rounded up; the dry run prices them the same. The
    topk-embed strategy keeps the last layer and does not read auto's cached embeddings."""
    pool, queries = data
    layered = replace(tiny, auto_layer=1)
    wins(monkeypatch, winner)
    cache = MemoryCache()
    engine = Engine(layered, cache=cache)
    request = SelectionRequest(pool, queries, k=3, seed=0, targets=TARGETS)
    auto = engine.select(request)
    SelectionResult.model_validate(auto)
    assert auto["strategy"]["chosen"] == winner and auto["retrieved"]["layer"] == 1
    everyone = [q.input for q in queries] + TARGETS
    slots = 3 if winner == "topk-embed" else 1
    shared = [{d.id: i for i, d in enumerate(pool)}[d["id"]] for d in auto["selected"]]
    nearest = strategy.Neighbours(Engine(layered), pool, PassCounter(), layer=1).nearest(everyone, "topk-embed",
                                                                                        slots, exclude=shared)
    assert auto["retrieved"]["queries"] + auto["retrieved"]["targets"] == [[pool[i].id for i in ids]
                                                                            for ids in nearest]
    last = Engine(tiny, cache=MemoryCache()).select(request)  # the same request on the last layer
    embedded = len(pool) + len(everyone)
    assert (last["passes"]["selection_forward_equivalent"] - auto["passes"]["selection_forward_equivalent"]
            == embedded - math.ceil(embedded / 2))
    plans = [Engine(model, cache=MemoryCache()).plan(request) for model in (tiny, layered)]
    assert plans[0].passes_high - plans[1].passes_high == embedded - math.ceil(embedded / 2)
    assert plans[1].passes_low <= auto["passes"]["forward_equivalent"] <= plans[1].passes_high

    per_query = engine.select(SelectionRequest(pool, queries, k=3, targets=TARGETS, params={"strategy": "topk-embed"}))
    assert per_query["retrieved"]["layer"] is None
    assert per_query["passes"]["selection_forward_equivalent"] == embedded  # the last layer, run afresh
    assert per_query["retrieved"]["targets"] == [[d.id for d in demos] for demos in engine.retrieve_per_query(
        pool, [Example("t", t, "positive") for t in TARGETS], 3, "topk-embed")]


@pytest.mark.parametrize("strategy", ["topk-embed", "topk-sentence", "bm25"])
def test_a_per_query_strategy_retrieves_without_a_search(tiny, data, strategy):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, targets=TARGETS, params={"strategy": strategy}))
    assert result["strategy"]["chosen"] == strategy and result["strategy"]["by"] == "request"
    assert result["selected"] == [] and result["explored_subsets"] == 0 and result["strategy"]["searched"] == []
    texts = len(pool) + len(queries) + len(TARGETS)
    assert result["passes"]["selection_forward_equivalent"] == (texts if strategy == "topk-embed" else 0)
    assert result["passes"]["sentence_texts"] == (texts if strategy == "topk-sentence" else 0)
    assert result["prompt"]["text"] == ""
    targets = [Example("t", t, "positive") for t in TARGETS]
    nearest = engine.retrieve_per_query(pool, targets, 3, strategy)
    labels = [d.output for d in pool]
    index = {d.id: i for i, d in enumerate(pool)}
    vote = [[pool[i].id for i in majority_last([index[d.id] for d in demos], labels)] for demos in nearest]
    assert vote == [[d.id for d in demos] for demos in engine.retrieve_per_query(pool, targets, 3, strategy,
                                                                                   vote_order=True)]
    similarity = [[d.id for d in demos] for demos in nearest]
    assert result["retrieved"]["targets"] == (vote if strategy in DEFAULT_VOTE_ORDER else similarity)
    for vote_order, expected in (([], similarity), ([strategy], vote)):
        again = engine.select(SelectionRequest(pool, queries, k=3, targets=TARGETS, params={
            "strategy": strategy, "vote_order": vote_order}))
        assert again["retrieved"]["targets"] == expected


def test_majority_last_puts_the_label_most_neighbours_carry_last_the_nearest_last_within_it():
    labels = ["pos", "neg", "neg", "pos", "sport", "pos"]
    assert majority_last([0, 1, 3], labels) == [1, 0, 3]  # pos 2, neg 1
    assert majority_last([0, 1, 2, 3, 4], labels) == [4, 1, 2, 0, 3]  # a 2-2 tie: pos has the nearest (3)
    assert majority_last([3, 5, 0], labels) == [3, 5, 0]  # one label: similarity order
    assert majority_last([1, 0], labels) == [1, 0]  # 1-1: the nearest last, as by similarity


def test_auto_runs_the_set_search_where_it_cannot_validate_and_says_why(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    bounded = engine.select(SelectionRequest(pool, queries, k=3, min_per_label=1, params={"rounds": 1}))
    assert bounded["strategy"]["chosen"] == "set" and "min_per_label" in bounded["strategy"]["by"]
    few = engine.select(SelectionRequest(pool[:6], queries, k=3, params={"rounds": 1}))
    assert few["strategy"]["chosen"] == "set" and "fewer than 4 pool demos" in few["strategy"]["by"]
    hybrid = engine.select(SelectionRequest(pool, queries, k=3, params={"rounds": 1, "retrieve": 1}))
    assert hybrid["strategy"]["chosen"] == "set" and "params.retrieve" in hybrid["strategy"]["by"]
    with pytest.raises(InputError) as refused:
        engine.select(SelectionRequest(pool, queries, k=3, min_per_label=1, params={"strategy": "bm25"}))
    assert refused.value.field == "params.strategy"
    for params, field in (({"strategy": "best"}, "params.strategy"), ({"validation": 0}, "params.validation")):
        with pytest.raises(InputError) as raised:
            engine.select(SelectionRequest(pool, queries, k=3, params=params))
        assert raised.value.field == field


def test_auto_finds_the_pools_embeddings_in_the_cache_of_an_earlier_request(tiny, data, monkeypatch):
    """A second request on the same pool texts and models reads the pool's embeddings (the model's and the sentence
    model's) from the engine's cache: the same result, without embedding the pool again (the passes count what ran, as with cached anchors); a pool
    with one text changed is embedded afresh."""
    pool, queries = data
    cache = MemoryCache()
    request = SelectionRequest(pool, queries, k=3, seed=0, targets=TARGETS)
    first = Engine(tiny, cache=cache).select(request)
    key = strategy.embedding_key(tiny.fingerprint, [d.input for d in pool])
    assert cache.get(key)["vectors"].shape[0] == len(pool)
    sentences = Engine(tiny).sentences
    sentence_key = strategy.embedding_key(sentences.fingerprint, [d.input for d in pool], "sentence")
    assert cache.get(sentence_key)["vectors"].shape[0] == len(pool)
    embedded, sentence_embedded = [], []
    embed_texts, embed_sentences = ModelRunner.embed_texts, SentenceModel.embed
    monkeypatch.setattr(ModelRunner, "embed_texts",
                        lambda self, tokenizer, texts, layer=None: embedded.append(list(texts))
                        or embed_texts(self, tokenizer, texts, layer))
    monkeypatch.setattr(SentenceModel, "embed",
                        lambda self, texts: sentence_embedded.append(list(texts)) or embed_sentences(self, texts))
    warm = MemoryCache()  # the embeddings alone: the search runs again, so the passes differ by the pool's only
    warm.put(key, cache.get(key))
    warm.put(sentence_key, cache.get(sentence_key))
    again = Engine(tiny, cache=warm).select(request)
    assert [d.input for d in pool] not in embedded and [d.input for d in pool] not in sentence_embedded
    assert again["passes"]["sentence_texts"] == first["passes"]["sentence_texts"] - len(pool)
    for part in ("selected", "retrieved", "strategy", "exact", "prompt"):
        assert again.get(part) == first.get(part)
    assert again["passes"]["selection_forward_equivalent"] == first["passes"]["selection_forward_equivalent"] - len(pool)
    changed = [Example(pool[0].id, pool[0].input + " again", pool[0].output)] + pool[1:]
    Engine(tiny, cache=warm).select(SelectionRequest(changed, queries, k=3, seed=0))
    assert [d.input for d in changed] in embedded


def test_the_held_out_demos_are_outside_the_set_label_balanced_and_seeded():
    gold = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 2, 2, -1]).numpy()  # the last: a label outside the options
    rows = held_out(gold, [0, 1], 5, 3)
    assert len(rows) == 5 and not {0, 1, 10} & set(rows) and rows == sorted(rows)
    assert sorted(gold[rows].tolist()) in ([0, 0, 1, 1, 2], [0, 1, 1, 2, 2], [0, 0, 1, 2, 2])
    assert held_out(gold, [0, 1], 5, 3) == rows and held_out(gold, [0, 1], 50, 3) == [2, 3, 4, 5, 6, 7, 8, 9]


def test_choose_ranks_by_accuracy_gives_ties_to_the_earlier_and_bounds_the_margin():
    right, wrong = torch.tensor([[0.0, -5.0]] * 4), torch.tensor([[-5.0, 0.0]] * 4)
    gold = torch.tensor([0, 0, 0, 0])
    mixed = torch.cat([right[:3], wrong[:1]])
    checks = [Check.of("set", mixed, gold), Check.of("bm25", right, gold), Check.of("topk-embed", right * 2, gold)]
    best, report = choose(checks, seed=0)
    assert best.strategy == "bm25"  # as accurate as topk-embed (whose loss is lower) and earlier
    assert [c["strategy"] for c in report["checks"]] == ["bm25", "topk-embed", "set"]
    assert report["margin_ci95"] == [0.0, 0.0]  # tied with the runner-up on every query


@pytest.mark.parametrize("ahead, chosen", [(0, "topk-embed"), (1, "topk-embed"), (2, SENTENCE), (3, SENTENCE)])
def test_choose_returns_topk_sentence_only_when_it_wins_by_two_of_32(ahead, chosen):
    """On 32 validation demos topk-sentence must answer 2 more right than every other check; a narrower win (or a
    tie, even as the earlier) goes to the best of the others, which is reported first."""
    gold = torch.zeros(32, dtype=torch.long)
    def answering(right: int, n: int = 32) -> torch.Tensor:  # [n, 2]: the first `right` demos answered right
        return torch.tensor([[0.0, -1.0]] * right + [[-1.0, 0.0]] * (n - right))
    checks = [Check.of(SENTENCE, answering(20 + ahead), gold), Check.of("set", answering(18), gold),
              Check.of("topk-embed", answering(20), gold)]
    best, report = choose(checks, seed=0)
    assert best.strategy == chosen == report["checks"][0]["strategy"]
    assert [c["strategy"] for c in report["checks"][1:]] == [c for c in (SENTENCE, "topk-embed", "set")
                                                              if c != chosen]
    low, high = report["margin_ci95"]
    assert (low <= high <= 0) if chosen == "topk-embed" and ahead else (0 <= low <= high)
    assert clear_win(checks[0], checks[2]) == (ahead >= 2)
    assert clear_win(Check.of(SENTENCE, answering(2, 8), gold[:8]), Check.of("set", answering(1, 8), gold[:8]))


@pytest.mark.parametrize("sentence, hybrid_sentence, chosen", [
    (21, 23, "hybrid-sentence"),  # only the hybrid clears the margin over topk-embed's 20
    (23, 23, SENTENCE),  # both clear it: a tie goes to the earlier
    (24, 25, "hybrid-sentence"),  # both clear it: the more accurate
    (21, 21, "topk-embed"),  # neither clears it, though both lead
    (22, 19, SENTENCE)])
def test_choose_holds_both_sentence_model_candidates_to_the_margin_over_the_others(sentence, hybrid_sentence, chosen):
    """topk-sentence and hybrid-sentence take the pick only by answering 2 of 32 more than the best of the other
    candidates; where both do, the better (a tie to the earlier in params.compare)."""
    gold = torch.zeros(32, dtype=torch.long)
    def answering(right: int) -> torch.Tensor:  # [32, 2]: the first `right` demos answered right
        return torch.tensor([[0.0, -1.0]] * right + [[-1.0, 0.0]] * (32 - right))
    checks = [Check.of("set", answering(18), gold), Check.of("topk-embed", answering(20), gold),
              Check.of("hybrid", answering(19), gold), Check.of(SENTENCE, answering(sentence), gold),
              Check.of("hybrid-sentence", answering(hybrid_sentence), gold)]
    best, report = choose(checks, seed=0)
    assert best.strategy == chosen == report["checks"][0]["strategy"]
    assert sorted(c["strategy"] for c in report["checks"]) == sorted(c.strategy for c in checks)


def test_topk_sentence_retrieves_by_the_cosine_of_the_sentence_models_embeddings(tiny, data):
    """Each query's k nearest pool demos by the sentence model's embeddings, best last, whatever the model's own
    embeddings say."""
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    pool_vectors = engine.sentences.embed([d.input for d in pool])  # [n, d], unit rows
    query_vectors = engine.sentences.embed([q.input for q in queries])  # [Q, d]
    assert torch.allclose(pool_vectors.norm(dim=-1), torch.ones(len(pool)), atol=1e-5)
    similarity = query_vectors @ pool_vectors.T  # [Q, n]
    expected = [[pool[i].id for i in row.argsort(descending=True, stable=True)[:3].flip(0).tolist()]
                for row in similarity]
    got = engine.retrieve_per_query(pool, queries, 3, "topk-sentence")
    assert [[d.id for d in demos] for demos in got] == expected
    assert got != engine.retrieve_per_query(pool, queries, 3, "topk-embed")


def test_auto_checks_the_sentence_models_retrieval_counted_apart_from_the_models_passes(tiny, data):
    """By default auto runs topk-sentence and hybrid-sentence as its fourth and fifth checks (params.compare can
    leave them out); the sentence model's texts (the pool, then the returned queries and targets when one of them
    wins) are counted as sentence_texts, not as passes of the model."""
    pool, queries = data
    params = {"rounds": 1}
    three = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, targets=TARGETS,
                                                                      params={**params, "compare": list(THREE)}))
    five = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, targets=TARGETS,
                                                                     params=params))
    assert [c["strategy"] for c in five["strategy"]["checks"]] != [] and len(five["strategy"]["checks"]) == 5
    validation = five["strategy"]["validation_queries"]
    embeds = len(queries) + len(TARGETS)
    model_extra = {c: embeds if c in ("topk-embed", "hybrid") else 0 for c in DEFAULT_COMPARE}
    assert five["passes"]["selection_forward_equivalent"] - model_extra[five["strategy"]["chosen"]] == (
        three["passes"]["selection_forward_equivalent"] - model_extra[three["strategy"]["chosen"]] + 2 * validation)
    assert five["passes"]["sentence_texts"] == len(pool) + (
        embeds if five["strategy"]["chosen"] in BY_SENTENCE else 0)


class SlowEncoder:
    """A sentence-transformers stand-in that takes DELAY seconds per text: a sentence model whose time shows."""
    DELAY = 0.05

    def __init__(self):
        self.texts = 0

    def encode(self, texts, **_):
        self.texts += len(texts)
        time.sleep(self.DELAY * len(texts))
        return torch.nn.functional.normalize(torch.randn(len(texts), 8), dim=-1)


def test_a_dry_run_prices_the_sentence_models_texts(tiny, data, monkeypatch):
    """The sentence model's texts are not passes of the language model, but they take time: a plan times the model
    on pool inputs and adds their seconds (topk-sentence: the pool, queries and targets; auto with its check: the
    pool, and half of the rest, as for the passes; params.retrieve by it: the pool, queries and targets)."""
    pool, queries = data
    encoder = SlowEncoder()
    engine = Engine(tiny, cache=MemoryCache(), sentence_model=SentenceModel(encoder, "slow", "slow"))
    priced = []  # (texts, seconds) of each plan's sentence-model price; the language model's own seconds are timed
    real = strategy.Strategies._sentence_seconds  # per plan and, under load, vary several-fold between two plans

    def price(self, texts):
        priced.append((texts, real(self, texts)))
        return priced[-1][1]
    monkeypatch.setattr(strategy.Strategies, "_sentence_seconds", price)

    def plan(**params):
        return engine.plan(SelectionRequest(pool, queries, k=3, targets=TARGETS,
                                            params={"evaluate_selected": False, **params}))

    texts = len(pool) + len(queries) + len(TARGETS)
    alone = plan(strategy="topk-sentence")
    assert alone.estimated_passes == 0 and encoder.texts > 0
    assert priced[-1][0] == texts and priced[-1][1] >= texts * SlowEncoder.DELAY  # sleeps: a floor under any load
    assert alone.estimated_seconds >= round(priced[-1][1], 3)  # plans round to the millisecond
    encoder.texts = 0
    three = plan(compare=list(THREE))
    assert encoder.texts == 0 and priced[-1] == (0, 0.0)  # without its check auto's plan leaves the sentence model alone
    five = plan()
    assert encoder.texts > 0 and five.estimated_passes > three.estimated_passes  # and the checks' rows
    assert priced[-1][0] == (len(pool) + texts) / 2 and priced[-1][1] >= priced[-1][0] * SlowEncoder.DELAY
    assert five.estimated_seconds >= round(priced[-1][1], 3)  # added to the language model's seconds
    # params.retrieve by the sentence model: its texts in seconds, none in passes (as by words, BM25)
    encoder.texts = 0
    by_sentence = plan(strategy="set", retrieve=1, retrieve_by="topk-sentence")
    by_words = plan(strategy="set", retrieve=1, retrieve_by="bm25")
    by_model = plan(strategy="set", retrieve=1, retrieve_by="topk-embed")
    assert encoder.texts > 0 and by_sentence.estimated_seconds >= texts * SlowEncoder.DELAY
    assert by_sentence.passes_high == by_words.passes_high == by_model.passes_high - texts


def test_a_dry_run_prices_each_per_query_prompt_as_a_model_call(tiny, data, monkeypatch):
    """A per-query retrieval's prompt has no prefix shared with another query's: each held-out demo it is checked on
    is a model call of its own (its demos its prefix), and a per-query answer's exact run on the queries is one per
    query; a set's rows share one. With the calibration fixed at 1 s a call and nothing a pass, a plan's seconds count
    calls: checking topk-embed too adds one per held-out demo and, where it would win, one per query."""
    pool, queries = data
    monkeypatch.setattr(plan_module, "calibrate", lambda ctx: (0.0, 1.0, 0))
    monkeypatch.setattr(strategy.Strategies, "_sentence_seconds", lambda self, texts: 0.0)
    engine = Engine(tiny, cache=MemoryCache())

    def plan(compare):
        return engine.plan(SelectionRequest(pool, queries, k=3, params={"compare": compare, "gate": None}))

    held_out = min(GradientParams().validation, len(pool) - 3)
    set_alone, with_retrieval = plan(["set"]), plan(["set", "topk-embed"])
    assert with_retrieval.estimated_passes - set_alone.estimated_passes == held_out  # a row per held-out demo
    # the fewest (the set returned, its final run one call) and the most (topk-embed returned: a call per query)
    assert with_retrieval.estimated_seconds - set_alone.estimated_seconds == pytest.approx(
        held_out + (len(queries) - 1) / 2)


@pytest.mark.parametrize("compare, message", [(["topk-embed", "hybrid"], "must include 'set'"),
                                              (["set", "set"], "twice"), (["set", "nearest"], "must be one of"),
                                              ("set", "non-empty list"), ([], "non-empty list")])
def test_params_compare_is_refused_by_name_when_it_cannot_be_run(tiny, data, compare, message):
    pool, queries = data
    with pytest.raises(InputError, match=message) as raised:
        Engine(tiny).select(SelectionRequest(pool, queries, k=3, params={"compare": compare}))
    assert raised.value.field == "params.compare"


def _check(name: str, right: int, rows: int = 16) -> Check:
    correct = torch.tensor([1.0] * right + [0.0] * (rows - right))
    return Check(name, correct.numpy(), (1 - correct).numpy())


@pytest.mark.parametrize("start, embed, sentence, share, returned", [
    (4, 10, 10, 0.375, "topk-embed"),  # a lead of 6 of 16 = 0.375: returned; a tie stays with the model's own
    (4, 9, 10, 0.375, "topk-sentence"),  # the sentence model's retrieval by a clear win (1 of 16) over topk-embed
    (4, 9, 9, 0.375, None),  # a lead of 5 of 16: search
    (4, 10, 11, 0.5, None),
    (12, 16, 16, 0.25, "topk-embed"),
    (12, 16, 16, 0.3, None),
])
def test_the_gate_returns_the_better_retrieval_only_by_its_lead_over_the_start(start, embed, sentence, share,
                                                                                returned):
    picked = gate(_check("start", start), [_check("topk-embed", embed), _check(SENTENCE, sentence)], share)
    assert (picked and picked.strategy) == returned


def same_prompts(engine, pool, queries) -> int:
    """Queries whose topk-embed and topk-sentence prompts are the same (the same demos in the same order): the gate
    runs such a prompt once (the second is found in the cache)."""
    embed = engine.retrieve_per_query(pool, queries, 3, "topk-embed", vote_order="topk-embed" in DEFAULT_VOTE_ORDER)
    sentence = engine.retrieve_per_query(pool, queries, 3, SENTENCE, vote_order=SENTENCE in DEFAULT_VOTE_ORDER)
    return sum([d.id for d in e] == [d.id for d in s] for e, s in zip(embed, sentence))


def gated_request(pool, queries, **params):
    return SelectionRequest(pool, queries, k=3, seed=1, targets=TARGETS, params={"rounds": 1, **params})


@pytest.mark.parametrize("skips", [True, False])
def test_auto_gates_the_search_on_the_queries_and_counts_the_gates_runs(tiny, monkeypatch, skips):
    """With MIN_GATE_QUERIES queries the gate runs the search's start and both retrievals on them; a retrieval it
    returns comes with no search and no held-out check, and the report holds the three on the queries; otherwise
    auto goes on as without the gate, its passes those runs more and its report the gate's figures."""
    pool, queries = make_examples(20, "d", 0), make_examples(MIN_GATE_QUERIES, "q", 1)
    seen = []

    def decide(start, retrievals, share):
        seen.append((start, retrievals, share))
        return retrievals[0] if skips else None
    monkeypatch.setattr(strategy, "gate", decide)
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(gated_request(pool, queries))
    SelectionResult.model_validate(result)
    (start, retrievals, share), = seen
    assert [c.strategy for c in retrievals] == ["topk-embed", SENTENCE] and share == 0.375
    assert len(start.correct) == len(queries)
    # the start is the search's own first set, run on the queries as evaluate() runs it
    alone = Engine(tiny, cache=MemoryCache()).select(gated_request(pool, queries, strategy="set", rounds=0))
    by_id = {d.id: d for d in pool}
    scored = engine.evaluate([by_id[d["id"]] for d in alone["selected"]], queries)
    assert start.accuracy == pytest.approx(scored["accuracy"])
    rows = len(queries)  # one row per query: single-token options
    ungated = Engine(tiny, cache=MemoryCache()).select(gated_request(pool, queries, gate=None))
    plan = Engine(tiny, cache=MemoryCache()).plan(gated_request(pool, queries))
    spent = result["passes"]["selection_forward_equivalent"] + result["passes"]["diagnostics_forward_equivalent"]
    assert plan.passes_low <= spent <= plan.passes_high
    if skips:
        report = result["strategy"]
        assert report["by"] == "gate" and report["chosen"] == "topk-embed" and report["searched"] == []
        assert report["search_queries"] == 0 and report["validation_queries"] == len(queries)
        assert [c["strategy"] for c in report["checks"]] == ["topk-embed", "start", SENTENCE]
        assert report["gate"] == report["checks"]
        assert result["selected"] == [] and result["explored_subsets"] == 0
        expected = engine.retrieve_per_query(pool, list(queries) + [Example("t", t, "positive") for t in TARGETS],
                                             3, "topk-embed")
        assert result["retrieved"]["queries"] + result["retrieved"]["targets"] == [[d.id for d in e]
                                                                                    for e in expected]
        # the start's and both retrievals' runs, and each text embedded once: pool, queries, targets
        assert result["passes"]["selection_forward_equivalent"] == (3 * rows - same_prompts(engine, pool, queries)
                                                                    + len(pool) + len(queries) + len(TARGETS))
    else:
        assert result["strategy"]["by"] == "validation"
        assert ungated["strategy"]["gate"] is None
        assert {k: v for k, v in result["strategy"].items() if k not in ("checks", "gate")} == \
            {k: v for k, v in ungated["strategy"].items() if k not in ("checks", "gate")}
        # the gate's figures, in the order it ran them, are the accuracies it decided on
        gate_report = result["strategy"]["gate"]
        assert [c["strategy"] for c in gate_report] == ["start", "topk-embed", SENTENCE]
        assert [c["accuracy"] for c in gate_report] == pytest.approx([start.accuracy,
                                                                      *(c.accuracy for c in retrievals)])
        assert result["selected"] == ungated["selected"]
        # the start's run (the search runs it again in its anchor pass), the retrievals' runs and the queries'
        # embeddings, unless the answer embeds them anyway (once: the gate's are kept)
        embedded = 0 if result["strategy"]["chosen"] in ("topk-embed", "hybrid") else len(queries)
        assert (result["passes"]["selection_forward_equivalent"] == ungated["passes"]["selection_forward_equivalent"]
                + 3 * rows - same_prompts(engine, pool, queries) + embedded)


@pytest.mark.parametrize("skips", [True, False])
def test_a_request_that_comes_back_runs_nothing_and_the_gates_prompts_run_once(tiny, monkeypatch, skips):
    """Every prompt's run (Engine.scores) and every text's embedding is cached by content: the same request again
    (another job on the same engine) runs no model pass and no sentence-model text and returns the same result; a
    retrieval the gate returns is not run again on the queries for its exact figures; a query changed runs again."""
    pool, queries = make_examples(20, "d", 0), make_examples(MIN_GATE_QUERIES, "q", 1)
    monkeypatch.setattr(strategy, "gate", lambda start, retrievals, share: retrievals[0] if skips else None)
    engine = Engine(tiny, cache=MemoryCache())
    first = engine.select(gated_request(pool, queries))
    assert (first["passes"]["diagnostics_forward_equivalent"] == 0) == skips  # the gate ran every query's prompt
    assert first["cache"]["misses"] > 0 and (not skips or first["cache"]["hits"] > 0)  # the gate's prompts, found
    plan = Engine(tiny, cache=MemoryCache()).plan(gated_request(pool, queries))
    spent = first["passes"]["selection_forward_equivalent"] + first["passes"]["diagnostics_forward_equivalent"]
    assert plan.passes_low <= spent <= plan.passes_high
    again = engine.select(gated_request(pool, queries))
    assert again["passes"]["forward_equivalent"] == 0 and again["passes"]["sentence_texts"] == 0
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] > first["cache"]["hits"]
    for part in ("selected", "retrieved", "strategy", "exact", "prompt"):
        assert again[part] == first[part]
    changed = [Example(queries[0].id, queries[0].input + " again", queries[0].output), *queries[1:]]
    other = engine.select(gated_request(pool, changed))
    assert 0 < other["passes"]["forward_equivalent"] < first["passes"]["forward_equivalent"]
    counter = PassCounter()
    scores = engine.scores(pool[:3], queries, ["positive", "negative"], DEFAULT_TEMPLATE, DEFAULT_SEPARATOR,
                           counter=counter)
    assert counter.forward == len(queries)
    assert torch.equal(engine.scores(pool[:3], queries, ["positive", "negative"], DEFAULT_TEMPLATE,
                                     DEFAULT_SEPARATOR, counter=counter), scores)
    assert counter.forward == len(queries)  # from the cache
    engine.scores(pool[:3], queries, ["positive", "negative"], "Text: {input}\nLabel: {output}", DEFAULT_SEPARATOR,
                  counter=counter)
    assert counter.forward == 2 * len(queries)  # another template: another prompt


def test_gate_queries_decides_on_a_random_draw_of_them_and_counts_only_its_runs(tiny, monkeypatch):
    """params.gate_queries: the start and both retrievals run on that many of the queries (strategy.gate_rows, in
    query order), the start is still the search's, and the gate's runs are three per drawn query."""
    pool, queries = make_examples(20, "d", 0), make_examples(MIN_GATE_QUERIES + 4, "q", 1)
    seen = []

    def decide(start, retrievals, share):
        seen.append((start, retrievals))
        return retrievals[0]
    monkeypatch.setattr(strategy, "gate", decide)
    rows = strategy.gate_rows(len(queries), MIN_GATE_QUERIES, 1)
    assert len(rows) == MIN_GATE_QUERIES and rows == sorted(set(rows))
    assert strategy.gate_rows(len(queries), None, 1) == strategy.gate_rows(len(queries), 99, 1) == \
        list(range(len(queries)))
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(gated_request(pool, queries, gate_queries=MIN_GATE_QUERIES))
    (start, retrievals), = seen
    drawn = [queries[i] for i in rows]
    alone = Engine(tiny, cache=MemoryCache()).select(gated_request(pool, queries, strategy="set", rounds=0))
    by_id = {d.id: d for d in pool}
    scored = engine.evaluate([by_id[d["id"]] for d in alone["selected"]], drawn)
    assert len(start.correct) == MIN_GATE_QUERIES and start.accuracy == pytest.approx(scored["accuracy"])
    nearest = engine.retrieve_per_query(pool, drawn, 3, "topk-embed")
    assert retrievals[0].accuracy == pytest.approx(engine.evaluate(nearest, drawn)["accuracy"])
    assert result["strategy"]["validation_queries"] == MIN_GATE_QUERIES
    embedded = len(pool) + len(queries) + len(TARGETS)  # the answer embeds every query and the targets
    assert result["passes"]["selection_forward_equivalent"] == (3 * MIN_GATE_QUERIES
                                                                - same_prompts(engine, pool, drawn) + embedded)
    with pytest.raises(InputError) as refused:
        engine.select(gated_request(pool, queries, gate_queries=MIN_GATE_QUERIES - 1))
    assert refused.value.field == "params.gate_queries"


def test_the_gate_waits_for_enough_queries_and_is_refused_by_name_out_of_range(tiny, data):
    pool, queries = data
    assert len(queries) < MIN_GATE_QUERIES
    engine = Engine(tiny, cache=MemoryCache())
    few = engine.select(gated_request(pool, queries, gate=0))
    assert few["strategy"]["by"] == "validation"  # even a gate that always returns retrieval needs the queries
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(InputError) as refused:
            engine.select(gated_request(pool, queries, gate=bad))
        assert refused.value.field == "params.gate"
