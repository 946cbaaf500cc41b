"""The ML core on a tiny random Llama (and a linear model): estimates, gradients, inference, selectors."""

import pytest
import torch

from iclsel.models.cache import MemoryCache
from iclsel.models.context import ModelAccess, SelectionContext, SelectionProblem
from iclsel.models.data import Example, InputError
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.inference import ModelRunner, PassBudgetExhausted, PassCounter
from iclsel.models.layout import build_layout
from iclsel.models.loading import load_model
from iclsel.models.outcome import query_losses
from iclsel.models.methods import METHODS as SELECTORS
from iclsel.models.strategy import Neighbours

from linear_model import LinearLM

WORDS = ["good", "bad", "great", "awful", "fun", "dull", "film", "plot", "acting", "boring"]


def make_examples(count, prefix, seed, labels=("positive", "negative")):
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(count):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (length,), generator=generator)]
        examples.append(Example(f"{prefix}{i}", " ".join(words), labels[i % len(labels)]))
    return examples


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    loaded.model.double()
    return loaded


@pytest.fixture(scope="module")
def data():
    return make_examples(10, "d", 0), make_examples(5, "q", 1)


def context(loaded, pool, queries, k=3, options=None, model=None, batch_size=3, pool_queries=False):
    scored = queries + (pool if pool_queries else [])
    layout = build_layout(loaded.tokenizer, pool, scored, k, options, "Input: {input}\nLabel: {output}", "\n\n",
                          loaded.max_positions)
    runner = ModelRunner(model if model is not None else loaded.model, layout, batch_size=batch_size)
    query_demo = [-1] * len(queries) + (list(range(len(pool))) if pool_queries else [])
    return SelectionContext(SelectionProblem(layout, pool, queries, k, query_demo=query_demo),
                            ModelAccess(runner, loaded.tokenizer, MemoryCache(), "test", anchor_chunk=2),
                            0, lambda *a: None)


@pytest.mark.parametrize("mode", ["mean-loss", "per-query", "label-groups"])
def test_estimate_of_anchor_equals_its_exact_outcome(tiny, data, mode):
    ctx = context(tiny, *data)
    anchor = [4, 1, 7]
    estimator = ctx.anchor(anchor, mode)
    exact = query_losses(ctx.runner.exact_scores(anchor, ctx.queries), ctx.layout.gold).mean()
    estimate = estimator.estimate(torch.tensor([anchor])).loss[0]
    assert float(estimate) == pytest.approx(float(exact), rel=1e-6)


@pytest.mark.parametrize("mode", ["per-query", "label-groups"])
def test_linear_model_makes_first_order_estimates_exact(tiny, data, mode):
    """(In this model every query's margins move alike, so label-group mean shifts are exact too.)"""
    pool, queries = data
    model = LinearLM(len(tiny.tokenizer))
    ctx = context(tiny, pool, queries, model=model)
    anchor = [0, 5, 2]
    estimator = ctx.anchor(anchor, mode)
    subsets = torch.tensor([[1, 2, 3], [9, 8, 7], [0, 5, 6], [3, 4, 5]])  # near and far from the anchor
    estimate = estimator.estimate(subsets)
    for row, subset in enumerate(subsets.tolist()):
        exact_scores = ctx.runner.exact_scores(subset, ctx.queries)
        exact_margins = exact_scores - exact_scores[:, :1]
        estimated_margins = estimator.estimated_margins(subsets[row:row + 1])[0]
        torch.testing.assert_close(estimated_margins - estimated_margins[:, :1], exact_margins, rtol=1e-6, atol=1e-8)
        assert float(estimate.loss[row]) == pytest.approx(float(query_losses(exact_scores, ctx.layout.gold).mean()), rel=1e-6)
        assert torch.equal(estimate.predictions[row], exact_scores.argmax(-1))
    # and the estimate really moves: far subsets differ from the anchor's own value
    assert float((estimate.loss - estimator.loss).abs().max()) > 1e-3


def _embeds_loss(ctx, subset, perturbation, mode):
    """Exact outputs of the natural prompts with each demo's slot frame (the W positions ending with its last token)
    moved by ``perturbation`` [k, W, d]; every row runs its whole prompt, unshared."""
    runner, layout = ctx.runner, ctx.layout
    prompt = layout.prompt(subset, ctx.queries)
    embeds = runner.embed(torch.tensor(prompt.prefix)).detach().clone()
    width = layout.width
    for s, (_, end) in enumerate(prompt.spans):
        for position in range(max(end - width, 0), min(end, len(prompt.prefix))):
            embeds[position] += perturbation[s, width - (end - position)]
    rows = []
    for row in prompt.rows:
        inputs = torch.cat([embeds, runner.embed(torch.tensor(row))])[None]
        hidden = runner.base(inputs_embeds=inputs).last_hidden_state[0, -1]
        log_probs = torch.log_softmax(runner.head(hidden), -1)
        rows.append(torch.stack([log_probs[ids[0]] for ids in layout.option_ids]))
    scores = torch.stack(rows)
    if mode == "mean-loss":
        return query_losses(scores, layout.gold).sum()
    if mode == "label-groups":  # [G, O]: summed margins over the queries of each gold label
        margins = scores - scores.gather(1, layout.gold[:, None])
        return torch.zeros(len(layout.options), len(layout.options), dtype=scores.dtype).index_add(0, layout.gold, margins)
    return scores - scores[:, :1]


@pytest.mark.parametrize("mode", ["mean-loss", "per-query", "label-groups"])
def test_gradients_match_finite_differences(tiny, data, mode):
    ctx = context(tiny, *data)
    anchor = [3, 8, 0]
    computed = ctx.runner.anchor(mode, anchor, ctx.queries)
    grad = (computed.grad_loss_sum if mode == "mean-loss" else computed.grad_margins).double()
    direction = torch.randn(grad.shape[-3:], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 1e-3  # LlamaRMSNorm computes in float32 even for a float64 model: smaller steps only add rounding noise
    numeric = (_embeds_loss(ctx, anchor, eps * direction, mode) - _embeds_loss(ctx, anchor, -eps * direction, mode)) / (2 * eps)
    analytic = (grad * direction).sum(dim=(-3, -2, -1))
    torch.testing.assert_close(analytic, numeric.to(analytic.dtype), rtol=1e-3, atol=1e-6)


def test_prefix_shared_and_unshared_inference_agree(tiny, data):
    pool, queries = data
    for options in (None, ["good film", "bad plot", "dull"]):  # single-token and multi-token options
        qs = queries if options is None else [Example(q.id, q.input, ["good film", "bad plot", "dull"][i % 3])
                                              for i, q in enumerate(queries)]
        ctx = context(tiny, pool, qs, options=options)
        shared = ctx.runner.exact_scores([2, 6, 9], ctx.queries, share_prefix=True)
        unshared = ctx.runner.exact_scores([2, 6, 9], ctx.queries, share_prefix=False)
        torch.testing.assert_close(shared, unshared, rtol=1e-6, atol=1e-6)
        if options is not None:
            assert any(len(ids) > 1 for ids in ctx.layout.option_ids)


def test_text_embeddings_come_back_in_the_given_order_whatever_the_batches(tiny, data):
    """Batches take the texts by length; each row is the text's embedding alone, in the order given."""
    pool, queries = data
    ctx = context(tiny, pool, queries)  # batch_size 3: texts of different lengths share batches
    texts = ["a much longer review of a film than the others here", "ok", "", "good film", "bad plot, dull and slow"]
    together = ctx.embed_texts(texts)
    alone = torch.cat([ctx.embed_texts([text]) for text in texts])
    torch.testing.assert_close(together, alone, rtol=1e-9, atol=1e-9)
    assert ctx.runner.counter.forward == 2 * len(texts)


def test_an_embedding_at_a_layer_is_that_layers_pooled_output_stopped_there_and_counted_as_its_share(tiny, data):
    """embed_texts(layer=l): the mean-pooled output of decoder layer l (hidden_states[l], no final norm), the forward
    stopped after it; l of the model's layers counts as that share of a pass, all of a counter's rounded up once."""
    pool, queries = data
    ctx = context(tiny, pool, queries)
    texts = ["a much longer review of a film than the others here", "ok", "good film"]
    tokens = tiny.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert ctx.runner.n_layers == tiny.n_layers == tiny.model.config.num_hidden_layers == 2
    ran = []
    hooks = [layer.register_forward_hook(lambda module, args, output, i=i: ran.append(i))
             for i, layer in enumerate(tiny.model.base_model.layers)]
    try:
        at_layer = ctx.runner.embed_texts(tiny.tokenizer, texts, layer=1)  # [3, d]
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0]  # one batch (batch_size 3), the second layer never ran
    for row, ids in enumerate(tokens):
        with torch.no_grad():
            hidden = tiny.model.base_model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        torch.testing.assert_close(at_layer[row], hidden[1][0].mean(0).float(), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(at_layer[row], hidden[2][0].mean(0).float())
    # 3 rows at 1/2 of a pass: 1.5, counted as 2; 1 more row: 2.0 in all, still 2; the last layer: a pass a row
    assert (ctx.runner.counter.forward, ctx.runner.counter.partial_forward) == (2, 1.5)
    ctx.runner.embed_texts(tiny.tokenizer, ["ok"], layer=1)
    assert ctx.runner.counter.forward == 2
    ctx.embed_texts(texts)
    assert ctx.runner.counter.forward == 2 + 3
    for layer in (0, 2):  # the last layer is layer None: after the final norm
        with pytest.raises(ValueError, match="layer must be between 1 and 1"):
            ctx.runner.embed_texts(tiny.tokenizer, texts, layer=layer)
    ctx.runner.counter.limit = ctx.runner.counter.forward  # the budget is spent: nothing more may run
    with pytest.raises(PassBudgetExhausted):
        ctx.runner.embed_texts(tiny.tokenizer, texts, layer=1)


def test_option_score_mean_divides_each_options_summed_log_probability_by_its_tokens(tiny, data):
    """request.option_score: "mean" is the summed score over the option's token count, in exact runs, in the
    anchor's scores and in Engine.evaluate; options of one token score the same either way; the layout's
    fingerprint (the cache key of exact runs) tells the two apart."""
    pool, queries = data
    options = ["good film", "bad plot", "dull"]
    multi = [Example(q.id, q.input, options[i % 3]) for i, q in enumerate(queries)]
    for qs, opts in ((queries, None), (multi, options)):
        layouts = {score: build_layout(tiny.tokenizer, pool, qs, 3, opts, "Input: {input}\nLabel: {output}", "\n\n",
                                       tiny.max_positions, option_score=score) for score in ("sum", "mean")}
        scores = {score: ModelRunner(tiny.model, layout).exact_scores([2, 6, 9], list(range(len(qs))))
                  for score, layout in layouts.items()}
        lengths = torch.tensor([len(ids) for ids in layouts["sum"].option_ids], dtype=scores["sum"].dtype)
        torch.testing.assert_close(scores["mean"], scores["sum"] / lengths)
        anchor = ModelRunner(tiny.model, layouts["mean"]).anchor_mean_loss([2, 6, 9], list(range(len(qs))))
        torch.testing.assert_close(anchor.scores.to(scores["mean"]), scores["mean"])
        assert (layouts["sum"].fingerprint() != layouts["mean"].fingerprint()) == (opts is not None)
    engine = Engine(tiny, cache=MemoryCache())
    by_score = {score: engine.evaluate(pool[:3], multi, options=options, option_score=score) for score in ("sum", "mean")}
    assert by_score["sum"]["loss"] != by_score["mean"]["loss"]
    with pytest.raises(InputError) as error:
        engine.evaluate(pool[:3], multi, options=options, option_score="max")
    assert error.value.field == "option_score"


def test_prompts_are_the_whole_text_tokenised(tiny, data):
    """Every prompt run is the demos' text followed by the query's, tokenised whole: the shared prefix and each
    row's continuation add up to tokenizer(text + query); each demo's span covers its own characters."""
    ctx = context(tiny, *data)
    subset = [1, 7, 3]
    prompt = ctx.layout.prompt(subset, ctx.queries)
    text = ctx.layout.prefix_text(subset)
    for q, row in zip(ctx.queries, prompt.rows):
        assert prompt.prefix + row == tiny.tokenizer(text + ctx.layout.query_texts[q])["input_ids"]
    decoded = [tiny.tokenizer.decode((prompt.prefix + prompt.rows[0])[a:b]) for a, b in prompt.spans]
    assert decoded == [ctx.layout.demo_texts[i] for i in subset]
    assert ctx.layout.prefix_ids(subset) == tiny.tokenizer(text)["input_ids"]


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_selector_returns_k_distinct_ids_deterministically(tiny, data, method):
    pool, queries = data
    params = {"strategy": "set", "subsets": 6, "rounds": 2, "candidates": 2, "checks": 3}
    results = [Engine(tiny, cache=MemoryCache(), batch_size=4).select(
        SelectionRequest(pool, queries, k=3, method=method, seed=7, params=params)) for _ in range(2)]
    ids = [d["id"] for d in results[0]["selected"]]
    assert len(ids) == 3 and len(set(ids)) == 3 and set(ids) <= {d.id for d in pool}
    assert ids == [d["id"] for d in results[1]["selected"]]
    assert results[0]["scores"] == results[1]["scores"] and len(results[0]["scores"]) == len(pool)
    passes = results[0]["passes"]
    assert passes["selection_forward_equivalent"] + passes["diagnostics_forward_equivalent"] == passes["forward_equivalent"]
    if method in ("gradient", "gradre"):
        diagnostics = results[0]["diagnostics"]
        assert diagnostics["checked_subsets"] >= 2
        assert ids in [c["ids"] for c in diagnostics["checks"]]  # the returned subset is always checked
        assert results[0]["passes"]["backward"] > 0


def test_random_selection_follows_the_seed(tiny, data):
    pool, queries = data
    picks = [tuple(d["id"] for d in Engine(tiny).select(
        SelectionRequest(pool, queries, k=3, method="random", seed=seed))["selected"]) for seed in (7, 7, 8, 9)]
    assert picks[0] == picks[1]
    assert len(set(picks[1:])) == 3  # other seeds, other sets


@pytest.mark.parametrize("mode", ["per-query", "label-groups"])
def test_pool_queries_never_score_a_demo_on_itself(tiny, data, mode):
    """With pool queries, a pool demo is a query only for prompts it is not in: the anchor skips its
    members' rows, exact runs leave them NaN, and estimates drop the rows of demos swapped in. On the
    linear model the estimate must equal the exact loss over the rows both the anchor and the subset score."""
    pool, queries = data
    ctx = context(tiny, pool, queries, model=LinearLM(len(tiny.tokenizer)), pool_queries=True)
    n_user = len(queries)
    anchor = [0, 5, 2]
    estimator = ctx.anchor(anchor, mode)
    assert estimator.rows.tolist() == [q for q in range(n_user + len(pool)) if q - n_user not in anchor]
    subsets = torch.tensor([[1, 5, 2], [0, 9, 2], [3, 4, 6]])  # swaps in demos whose rows the anchor scored
    estimate = estimator.estimate(subsets)
    for row, subset in enumerate(subsets.tolist()):
        exact = ctx.exact(subset)
        hidden = [n_user + i for i in subset]
        assert bool(exact[hidden].isnan().all()) and not bool(exact[ctx.visible(subset)].isnan().any())
        both = [q for q in ctx.visible(subset) if q in set(estimator.rows.tolist())]
        expected = query_losses(exact[both], ctx.layout.gold[both]).mean()
        assert float(estimate.loss[row]) == pytest.approx(float(expected), rel=1e-6)
    # and dropping the swapped-in demo's row matters: counting it would give another value
    assert estimator.counted(subsets).sum(-1).tolist() == [len(estimator.rows) - 1] * 2 + [len(estimator.rows) - 3]


def test_gradient_with_pool_queries_reports_the_user_queries(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    params = {"rounds": 2, "candidates": 2, "pool_queries": True, "evaluator": "exact"}
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=1, params=params))
    by_id = {d.id: d for d in pool}
    chosen = [by_id[d["id"]] for d in result["selected"]]
    assert result["exact"]["loss"] == pytest.approx(engine.evaluate(chosen, queries)["loss"], abs=1e-6)
    diagnostics = result["diagnostics"]
    assert all(c["exact_loss"] == c["exact_loss"] for c in diagnostics["checks"])  # no NaN
    assert diagnostics["label_agreement"] is not None and diagnostics["label_agreement"] == diagnostics["label_agreement"]
    # every anchor and check scored the pool's other demos too: more query rows than without pool queries
    plain = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, method="gradient", seed=1,
                                                                     params={"rounds": 2, "candidates": 2,
                                                                             "evaluator": "exact"}))
    assert result["passes"]["forward"] > plain["passes"]["forward"]
    with pytest.raises(InputError, match="params.pool_queries"):
        engine.select(SelectionRequest(pool, queries, k=3, method="gradient", params={"pool_queries": "yes"}))


def test_exact_confirmed_search_never_returns_worse_than_its_start(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient",
                                            params={"strategy": "set", "rounds": 3, "candidates": 3, "evaluator": "exact"}))
    start = result["diagnostics"]["checks"]
    assert result["exact"]["loss"] <= min(c["exact_loss"] for c in start) + 1e-6
    assert result["explored_subsets"] == result["notes"]["rounds_run"] * 3 * (len(pool) - 3)


def test_gradient_searches_from_the_best_of_its_starts(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    one = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=5, params={"strategy": "set", "rounds": 0}))
    many = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=5, params={"strategy": "set", "rounds": 0, "starts": 6}))
    assert many["notes"]["starts"] == 6 and many["explored_subsets"] == one["explored_subsets"] + 6
    assert many["exact"]["loss"] <= one["exact"]["loss"] + 1e-9  # the first start is the single start's set
    labels = {d.id: d.output for d in pool}
    assert sorted(labels[d["id"]] for d in many["selected"]) in (["negative", "positive", "positive"],
                                                                 ["negative", "negative", "positive"])
    with pytest.raises(InputError, match="params.starts"):
        engine.select(SelectionRequest(pool, queries, k=3, method="gradient", params={"strategy": "set", "starts": 0}))


def test_gradient_same_label_moves_keep_the_label_mix(tiny):
    labels = ("a", "b", "c")
    pool, queries = make_examples(12, "d", 3, labels), make_examples(6, "q", 4, labels)
    result = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(
        pool, queries, k=3, method="gradient", seed=2, params={"rounds": 3, "candidates": 2, "moves": "same-label", "strategy": "set"}))
    output_of = {d.id: d.output for d in pool}
    assert sorted(output_of[d["id"]] for d in result["selected"]) == list(labels)  # balanced start, kept
    for check in result["diagnostics"]["checks"]:
        assert sorted(output_of[i] for i in check["ids"]) == list(labels)
    # per round: each of the 3 slots may take the 3 other demos of its label
    assert result["explored_subsets"] == result["notes"]["rounds_run"] * 3 * 3
    assert result["notes"]["move_set"] == "same-label"
    with pytest.raises(InputError, match="params.moves"):
        Engine(tiny).select(SelectionRequest(pool, queries, k=3, method="gradient", params={"moves": "nearby"}))


def test_anchor_cache_reuse_runs_no_gradient_pass(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    request = SelectionRequest(pool, queries, k=3, method="gradre", params={"subsets": 4, "anchors": 2, "checks": 1})
    first = engine.select(request)
    second = engine.select(request)
    assert first["cache"]["misses"] > 0 and first["passes"]["backward"] > 0
    assert second["cache"]["misses"] == 0 and second["passes"]["backward"] == 0
    assert second["passes"]["forward"] == 0  # exact runs are cached by content too
    assert second["selected"] == first["selected"]


def test_evaluate_shared_and_per_query_demos(tiny, data):
    pool, queries = data
    engine = Engine(tiny)
    shared = engine.evaluate(pool[:3], queries)
    per_query = engine.evaluate([pool[:3]] * len(queries), queries)
    assert shared["predictions"] == per_query["predictions"]
    gold = [q.output for q in queries]
    hits = [p == g for p, g in zip(shared["predictions"], gold)]
    assert shared["accuracy"] == pytest.approx(sum(hits) / len(hits))
    f1 = []  # per class present in gold or predictions: 2 TP / (predicted + actual)
    for label in sorted(set(gold) | set(shared["predictions"])):
        true_pos = sum(p == g == label for p, g in zip(shared["predictions"], gold))
        f1.append(2 * true_pos / (shared["predictions"].count(label) + gold.count(label)))
    assert shared["macro_f1"] == pytest.approx(sum(f1) / len(f1))
    assert shared["loss"] == pytest.approx(per_query["loss"], abs=1e-9)
    retrieved = engine.retrieve_per_query(pool, queries, 2, "bm25")
    assert len(retrieved) == len(queries) and all(len(r) == 2 for r in retrieved)
    assert engine.evaluate(retrieved, queries)["passes"]["forward"] == len(queries)


def test_selection_returns_and_scores_the_prompt_evaluate_scores(tiny, data):
    """select runs and returns the natural prompt (demos joined by the separator, no filler), the one evaluate()
    scores; the retired padded-slot parameters are refused by name."""
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    by_id = {d.id: d for d in pool}
    result = engine.select(SelectionRequest(pool, queries, k=3, method="random", seed=3))
    chosen = [by_id[d["id"]] for d in result["selected"]]
    assert result["exact"]["loss"] == pytest.approx(engine.evaluate(chosen, queries)["loss"], abs=1e-6)
    text = "".join(f"Input: {d.input}\nLabel: {d.output}\n\n" for d in chosen)
    assert result["prompt"]["text"] == text
    assert result["prompt"]["token_ids"] == tiny.tokenizer(text)["input_ids"]
    for retired in ("prompt_width", "filler"):
        with pytest.raises(InputError, match=f"params.{retired}"):
            engine.select(SelectionRequest(pool, queries, k=3, method="random", params={retired: "pool"}))


@pytest.mark.parametrize("method,by", [("gradient", "topk-embed"), ("random", "topk-embed"),
                                       ("gradient", "topk-sentence"), ("random", "bm25")])
def test_retrieve_fills_slots_per_query_and_reports_the_prompts_evaluate_scores(tiny, data, method, by):
    """params.retrieve = r: k - r shared demos, then each query's (and target's) r nearest pool demos outside
    them by params.retrieve_by, best last; result["exact"] is the outcome evaluate() gives those very prompts."""
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    targets = ["good fun film", "boring plot"]
    result = engine.select(SelectionRequest(pool, queries, k=3, method=method, seed=1, targets=targets,
                                            params={"strategy": "set", "retrieve": 2, "retrieve_by": by,
                                                    "rounds": 1, "candidates": 2}))
    shared = [d["id"] for d in result["selected"]]
    retrieved = result["retrieved"]
    assert len(shared) == 1 and retrieved["slots"] == 2 and retrieved["by"] == by
    assert len(retrieved["queries"]) == len(queries) and len(retrieved["targets"]) == len(targets)
    for ids in retrieved["queries"] + retrieved["targets"]:
        assert len(ids) == 2 and not set(ids) & set(shared)
    # the nearest neighbours among the whole pool (BM25 weighs words by it) by the retrieval, the shared demo excluded
    expected = Neighbours(engine, pool, PassCounter()).nearest(targets, by, 2,
                                                               exclude=[i for i, d in enumerate(pool) if d.id in shared])
    assert retrieved["targets"] == [[pool[i].id for i in ids] for ids in expected]
    texts = len(pool) + len(queries) + len(targets)  # what the neighbours embed: the model's rows or the sentence model's
    assert result["passes"]["sentence_texts"] == (texts if by == "topk-sentence" else 0)
    if method == "random":  # its only model rows: the embeddings (topk-embed) and the exact run on the queries
        assert result["passes"]["forward"] == len(queries) + (texts if by == "topk-embed" else 0)
    by_id = {d.id: d for d in pool}
    context = [[by_id[i] for i in ids] for ids in retrieved["queries"]]
    scored = engine.evaluate([by_id[i] for i in shared], queries, context=context)
    assert result["exact"]["loss"] == pytest.approx(scored["loss"], abs=1e-6)
    as_demos = engine.evaluate([[by_id[i] for i in shared] + c for c in context], queries)
    assert scored["loss"] == pytest.approx(as_demos["loss"], abs=1e-6)  # context demos follow the shared ones as text
    without = engine.select(SelectionRequest(pool, queries, k=3, method=method, seed=1, targets=targets,
                                               params={"strategy": "set"}))
    assert without["retrieved"] is None and len(without["selected"]) == 3
    for bad in (3, -1, True, "2"):
        with pytest.raises(InputError, match="params.retrieve"):
            engine.select(SelectionRequest(pool, queries, k=3, method=method, params={"strategy": "set", "retrieve": bad}))
    with pytest.raises(InputError, match="params.retrieve_by"):
        engine.select(SelectionRequest(pool, queries, k=3, method=method,
                                       params={"strategy": "set", "retrieve": 2, "retrieve_by": "minilm"}))
    with pytest.raises(InputError, match="targets"):
        engine.select(SelectionRequest(pool, queries, k=3, method=method, targets=[1, 2]))


def test_an_anchor_is_the_exact_run_of_its_prompt(tiny, data):
    """An anchor runs the natural prompt of its subset: its own value is that prompt's exact outcome, memoised as
    the subset's exact run (no second run); its gradient has one slot frame of the layout's width per demo."""
    pool, queries = data
    ctx = context(tiny, pool, queries)
    anchor = [4, 1, 7]
    estimator = ctx.anchor(anchor, "label-groups")
    assert estimator.contrib.shape[-1] == ctx.n
    spent = ctx.runner.counter.forward_equivalent
    memoised = ctx.exact(anchor)
    assert ctx.runner.counter.forward_equivalent == spent  # the anchor pass was the exact run
    exact = ctx.runner.exact_scores(anchor, ctx.queries)
    assert torch.allclose(memoised, exact, atol=1e-6)
    loss = float(query_losses(exact, ctx.layout.gold).mean())
    assert float(estimator.estimate(torch.tensor([anchor])).loss[0]) == pytest.approx(loss, rel=1e-6)
    tensors = ctx.runner.anchor("label-groups", anchor, ctx.queries)
    assert tensors.grad_margins.shape[-3:-1] == (3, ctx.layout.width)  # [G, O, k, W, d]


def test_anchor_tasks_run_elsewhere_give_the_same_selection(tiny, tiny_model_dir, data):
    """An anchor_runner that computes JSON anchor tasks on a separately loaded model (as another
    worker would) fills the shared cache; the selection is the same as computing locally."""
    from iclsel.models.tasks import AnchorTask, run_anchor_task

    pool, queries = data
    other_worker = load_model(str(tiny_model_dir), device="cpu")
    other_worker.model.double()
    shared = MemoryCache()
    sent = []

    def runner(tasks):
        for task in tasks:
            task = AnchorTask.from_json(task.to_json())  # crosses a process boundary as JSON
            sent.append(task.key)
            shared.put(task.key, run_anchor_task(other_worker, task, batch_size=2).named())

    request = SelectionRequest(pool, queries, k=3, method="gradre", params={"subsets": 6, "anchors": 2, "checks": 2})
    distributed = Engine(tiny, cache=shared, anchor_chunk=2, anchor_runner=runner).select(request)
    local = Engine(tiny, cache=MemoryCache(), anchor_chunk=2).select(request)
    assert len(sent) == 2 * 3  # 2 anchors x 3 query chunks, all computed by the other worker
    assert distributed["passes"]["backward"] == 0 and local["passes"]["backward"] > 0
    assert distributed["selected"] == local["selected"]
    assert distributed["scores"] == pytest.approx(local["scores"], rel=1e-6)


def test_errors_objective_counts_errors_first_and_breaks_ties_by_loss():
    from iclsel.models.outcome import mean_loss, objective

    gold = torch.tensor([0, 1, 1])
    one_error_confident = torch.tensor([[0.0, -9.0], [-9.0, 0.0], [0.0, -0.1]])  # 1 error, tiny losses elsewhere
    no_error_unsure = torch.tensor([[0.0, -0.01], [-0.01, 0.0], [-0.01, 0.0]])  # 0 errors, losses near log 2
    assert mean_loss(one_error_confident, gold) < mean_loss(no_error_unsure, gold)
    assert objective(no_error_unsure, gold, "errors") < objective(one_error_confident, gold, "errors")
    assert float(objective(no_error_unsure, gold, "loss")) == pytest.approx(mean_loss(no_error_unsure, gold))
    sharper = torch.tensor([[0.0, -1.0], [-1.0, 0.0], [-1.0, 0.0]])  # same predictions, lower loss
    assert objective(sharper, gold, "errors") < objective(no_error_unsure, gold, "errors") < 1 / 3
    # counted: a query weighted 0 does not count
    both = torch.stack([one_error_confident, one_error_confident])
    weights = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    values = objective(both, gold, "errors", weights)
    assert values[0] > 1 / 3 - 1e-9 and values[1] < 1 / 3
    with pytest.raises(ValueError):
        objective(both, gold, "accuracy")


def test_per_slot_proposals_take_each_slots_best_estimate_first():
    from iclsel.models.selectors import _proposals, _single_swaps

    anchor = [0, 1]
    swaps = _single_swaps(anchor, 5)  # slot 0 <- 2, 3, 4; slot 1 <- 2, 3, 4
    estimated = torch.tensor([0.5, 0.1, 0.3, 0.2, 0.9, 0.0])
    batches = _proposals(swaps, estimated, torch.tensor(anchor), "per-slot", candidates=4, patience=2)
    assert [sorted(b.tolist()) for b in batches] == [[1, 5], [2, 3], [0, 4]]
    assert all(len({int((swaps[i] != torch.tensor(anchor)).int().argmax()) for i in b}) == 2 for b in batches)
    glob = _proposals(swaps, estimated, torch.tensor(anchor), "global", candidates=4, patience=1)
    assert [b.tolist() for b in glob] == [[5, 1, 3, 2], [0, 4]]
    assert len(_proposals(swaps, estimated, torch.tensor(anchor), "per-slot", candidates=4, patience=0)) == 1


def test_gradient_search_objective_and_proposal_params(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=3,
                                            params={"rounds": 2, "objective": "errors", "patience": 2,
                                                    "evaluator": "exact"}))
    notes = result["notes"]
    assert (notes["objective"], notes["propose"], notes["patience"]) == ("errors", "per-slot", 2)
    # each batch of per-slot proposals holds at most one swap per slot; at most 1 + patience batches a round
    assert notes["confirmed"] <= notes["rounds_run"] * 3 * 3 + 1
    # the search only moves when the exact objective drops: never more errors than its start (rounds=0)
    start = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=3,
                                           params={"rounds": 0, "objective": "errors", "evaluator": "exact"}))
    assert result["exact"]["accuracy"] >= start["exact"]["accuracy"]
    for params, field in (({"objective": "accuracy"}, "params.objective"),
                          ({"objective": "errors", "anchor_mode": "mean-loss", "evaluator": "exact"}, "params.objective"),
                          ({"propose": "best"}, "params.propose"), ({"patience": -1}, "params.patience")):
        with pytest.raises(InputError, match=field):
            engine.select(SelectionRequest(pool, queries, k=3, method="gradient", params=params))


def test_subsample_search_runs_only_the_sampled_query_rows(tiny, data):
    pool, queries = data  # 10 demos, 5 queries, single-token options
    engine = Engine(tiny, cache=MemoryCache())
    params = {"strategy": "set", "rounds": 1, "patience": 0, "per_slot": 1, "screen": 1, "finalists": 1, "sample": 2, "checks": 0,
              "evaluate_selected": False}
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=4, params=params))
    assert result["notes"]["evaluator"] == "subsample" and result["notes"]["anchor_mode"] == "mean-loss"
    assert result["notes"]["evaluated"] == 3  # one proposal per slot
    # the mean-loss anchor at the start (5 rows forward and back; its scores are the start's exact run, which
    # the sampled rows are taken from), the 3 proposals on the 1 screening row, the finalist on 2 other rows
    assert result["passes"]["forward"] == 5 + 3 * 1 + 2
    assert result["passes"]["backward"] == 5
    assert result["passes"]["selection_forward_equivalent"] == result["passes"]["forward_equivalent"]


def test_subsample_search_in_random_order_tries_other_candidates_for_the_same_passes(tiny, data):
    """order=random: what the gradient's order must beat. The same anchor pass (the gradient still runs), the same
    batch, other candidates; the order is drawn apart from the job's generator, so a rerun tries the same ones."""
    pool, queries = data  # 10 demos, 5 queries, k = 3: 7 candidates per slot
    params = {"strategy": "set", "rounds": 1, "patience": 0, "per_slot": 1, "screen": 1, "finalists": 1, "sample": 2,
              "checks": 10, "evaluate_selected": False}

    def tried(order: str) -> tuple[set, dict]:
        result = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, method="gradient", seed=4,
                                                                           params={**params, "order": order}))
        return {tuple(c["ids"]) for c in result["diagnostics"]["checks"]}, result["passes"]  # the proposals (and start)

    by_gradient, passes = tried("gradient")
    by_chance, random_passes = tried("random")
    assert len(by_gradient) >= 3 and len(by_chance) >= 3 and by_gradient != by_chance
    rows = lambda counts: {key: n for key, n in counts.items() if not key.startswith("tokens")}  # noqa: E731 (texts differ)
    assert rows(random_passes) == rows(passes)
    assert tried("random")[0] == by_chance
    with pytest.raises(InputError, match="params.order"):
        Engine(tiny).select(SelectionRequest(pool, queries, k=3, method="gradient", params={"order": "best"}))


def test_subsample_search_on_every_query_is_exact(tiny, data):
    """With the sample as large as the query set, the paired difference that decides a move is the exact
    difference: the running estimate equals the returned set's exact loss and the search never returns worse
    than its start."""
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    params = {"strategy": "set", "rounds": 3, "screen": 1, "sample": len(queries)}  # too few rows outside the screen: all of them
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=2, params=params))
    start = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=2, params={"strategy": "set", "rounds": 0}))
    assert result["estimate"]["loss"] == pytest.approx(result["exact"]["loss"], abs=1e-9)
    assert result["exact"]["loss"] <= start["exact"]["loss"] + 1e-9
    assert result["notes"]["moves"] >= 1  # the tiny model's balanced start is improvable: the test exercises moves


def test_subsample_search_diagnostics_measure_its_own_estimates(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=1,
                                            params={"strategy": "set", "rounds": 2, "sample": 2, "checks": 3}))
    diagnostics, passes = result["diagnostics"], result["passes"]
    assert diagnostics["checked_subsets"] == 3
    returned = diagnostics["checks"][-1]
    assert returned["is_anchor"] and returned["ids"] == [d["id"] for d in result["selected"]]
    assert returned["estimated_loss"] == pytest.approx(result["estimate"]["loss"])
    assert returned["exact_loss"] == pytest.approx(result["exact"]["loss"])
    # the checks run every query for diagnostics only: counted apart from the selection's passes
    assert passes["diagnostics_forward_equivalent"] >= 2 * len(queries)
    assert passes["selection_forward_equivalent"] + passes["diagnostics_forward_equivalent"] == passes["forward_equivalent"]


def test_first_order_search_runs_no_exact_inference(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=1,
                                            params={"strategy": "set", "rounds": 3, "evaluator": "first-order", "checks": 0,
                                                    "evaluate_selected": False}))
    # label-group anchors only (one per distinct position of the search): each query row runs forward once
    # and back-propagates one margin (two options); no forward-only (exact) row
    assert "exact" not in result["timings"]
    assert result["passes"]["forward"] == result["passes"]["backward"]
    assert len(queries) <= result["passes"]["forward"] <= (result["notes"]["moves"] + 1) * len(queries)


@pytest.mark.parametrize("params, field", [({"evaluator": "oracle"}, "params.evaluator"),
                                           ({"sample": 0}, "params.sample"), ({"per_slot": 0}, "params.per_slot"),
                                           ({"screen": 0}, "params.screen"), ({"finalists": 0}, "params.finalists"),
                                           ({"budget": -1}, "params.budget"),
                                           ({"checks": -1}, "params.checks"), ({"sample": "few"}, "params.sample")])
def test_gradient_search_rejects_bad_evaluator_params(tiny, data, params, field):
    with pytest.raises(InputError, match=field):
        Engine(tiny).select(SelectionRequest(*data, k=3, method="gradient", params=params))


def test_subsample_search_with_pool_queries_scores_each_row_only_where_visible(tiny, data):
    pool, queries = data
    engine = Engine(tiny, cache=MemoryCache())
    result = engine.select(SelectionRequest(pool, queries, k=3, method="gradient", seed=1,
                                            params={"strategy": "set", "rounds": 2, "sample": 6, "pool_queries": True}))
    by_id = {d.id: d for d in pool}
    chosen = [by_id[d["id"]] for d in result["selected"]]
    assert result["exact"]["loss"] == pytest.approx(engine.evaluate(chosen, queries)["loss"], abs=1e-6)
    assert all(c["exact_loss"] == c["exact_loss"] for c in result["diagnostics"]["checks"])  # no NaN


def test_sample_rows_are_label_stratified_and_avoid_excluded_rows(tiny):
    labels = ("a", "b", "c")
    pool, queries = make_examples(9, "d", 3, labels), make_examples(12, "q", 4, labels)  # 4 queries per label
    ctx = context(tiny, pool, queries)
    screen = ctx.sample_rows(3)
    assert sorted(int(ctx.layout.gold[q]) for q in screen) == [0, 1, 2]  # one per label
    rows = ctx.sample_rows(6, exclude=screen)
    assert not set(rows) & set(screen) and len(set(rows)) == 6
    assert sorted(int(ctx.layout.gold[q]) for q in rows) == [0, 0, 1, 1, 2, 2]
    # too few rows outside the exclusion (9 < 11): drawn from all 12
    assert len(set(ctx.sample_rows(11, exclude=screen))) == 11


def test_subsample_search_default_budget_is_sixteen_exact_runs_whatever_the_options(tiny, data):
    """With options of several tokens a query takes one row per option: the default budget counts exact runs,
    so the search gets the same share of `exact`'s work as with single-token options (and moves at all)."""
    pool, queries = data  # 10 demos, 5 queries
    options = ["good film", "bad plot", "dull"]
    multi = [Example(q.id, q.input, options[i % 3]) for i, q in enumerate(queries)]
    for qs, opts, rows in ((queries, None, 1), (multi, options, 3)):
        result = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, qs, k=3, method="gradient", seed=3,
                                                                           options=opts, params={"strategy": "set", "checks": 0}))
        assert result["notes"]["budget"] == 16 * len(queries) * rows
        assert result["notes"]["batches"] >= 1


def test_subsample_search_stops_before_a_batch_would_pass_its_budget(tiny, data):
    pool, queries = data  # 10 demos, 5 queries: the anchor at the start (5 forward + 5 backward, its exact run) costs 15
    # (a fresh engine each time: a cached anchor would cost nothing)
    params = {"strategy": "set", "rounds": 4, "screen": 2, "sample": 2, "per_slot": 1, "finalists": 1, "checks": 0,
              "evaluate_selected": False}
    # a batch may cost (3 proposals + 1) * 2 + (1 finalist + 1) * 2 = 12: a budget of 26 leaves room for none
    none = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, method="gradient", seed=3, params={**params, "budget": 26}))
    assert none["notes"]["budget_exhausted"] and none["notes"]["batches"] == 0
    assert none["passes"]["selection_forward_equivalent"] == 15
    one = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, method="gradient", seed=3, params={**params, "budget": 27}))
    assert one["notes"]["batches"] == 1 and one["passes"]["selection_forward_equivalent"] <= 27
    free = Engine(tiny, cache=MemoryCache()).select(SelectionRequest(pool, queries, k=3, method="gradient", seed=3, params={**params, "budget": 0}))
    assert not free["notes"]["budget_exhausted"] and free["notes"]["batches"] >= 1
