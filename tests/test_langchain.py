"""iclsel.langchain with the real langchain-core: a FewShotPromptTemplate whose examples come from a
running iclsel service (embedded mode, tiny model) over HTTP."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

from iclsel.client import Client
from iclsel.langchain import IclselExampleSelector
from service_fixtures import POOL, QUERIES, embedded_api

# LangChain examples: the label under another key, and an extra key that must come back untouched
EXAMPLES = [{"text": d["input"], "label": d["output"], "source": f"row {i}"} for i, d in enumerate(POOL)]
LABELLED = [{"text": q["input"], "label": q["output"]} for q in QUERIES]
EXAMPLE_PROMPT = PromptTemplate.from_template("Review: {text}\nSentiment: {label}")


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    with embedded_api(tiny_model_dir, tmp_path_factory.mktemp("langchain")) as server:
        yield server


@pytest.fixture
def client(api):
    with Client(api.url) as client:
        yield client


def few_shot(selector) -> FewShotPromptTemplate:
    return FewShotPromptTemplate(example_selector=selector, example_prompt=EXAMPLE_PROMPT,
                                 suffix="Review: {text}\nSentiment:", input_variables=["text"])


def expected_prompt(examples: list[dict], text: str) -> str:
    demos = [EXAMPLE_PROMPT.format(text=e["text"], label=e["label"]) for e in examples]
    return "\n\n".join([*demos, f"Review: {text}\nSentiment:"])


def test_few_shot_prompt_gets_the_demos_iclsel_selected(client):
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=2, input_key="text", output_key="label", seed=3,
                                     params={"strategy": "set"})
    prompt = few_shot(selector)
    text = prompt.format(text="a dull film")

    records = [{"id": str(i), "input": e["text"], "output": e["label"]} for i, e in enumerate(EXAMPLES)]
    direct = client.select(pool=records, queries=QUERIES, k=2, seed=3, params={"strategy": "set"},
                           timeout=60)  # the same request by hand
    chosen = [EXAMPLES[int(demo.id)] for demo in direct.selected]
    assert selector.select_examples({"text": "anything"}) == chosen  # the dicts given, extra keys kept
    assert text == expected_prompt(chosen, "a dull film")
    assert asyncio.run(prompt.aformat(text="a dull film")) == text


def test_with_retrieve_each_input_gets_its_own_neighbours(client):
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=3, input_key="text", output_key="label",
                                     params={"retrieve": 1})
    prompt = few_shot(selector)
    for text in ("awful and dull", "brilliant and funny"):
        records = [{"id": str(i), "input": e["text"], "output": e["label"]} for i, e in enumerate(EXAMPLES)]
        direct = client.select(pool=records, queries=QUERIES, k=3, params={"retrieve": 1}, targets=[text], timeout=60)
        ids = [demo.id for demo in direct.selected] + direct.retrieved.targets[0]
        assert len(ids) == 3
        assert prompt.format(text=text) == expected_prompt([EXAMPLES[int(i)] for i in ids], text)


@pytest.mark.parametrize("strategy", ["bm25", "topk-embed"])
def test_a_per_query_strategy_gives_each_input_its_nearest_demos(client, strategy):
    """When the selection returns per-query retrieval (auto's choice, or named), each input is sent as a target
    with that strategy pinned, and its own k nearest demos come back."""
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=2, input_key="text", output_key="label",
                                     params={"strategy": strategy})
    assert selector.selection().strategy.chosen == strategy and selector.selection().selected == []
    prompt = few_shot(selector)
    records = [{"id": str(i), "input": e["text"], "output": e["label"]} for i, e in enumerate(EXAMPLES)]
    for text in ("awful and dull", "brilliant and funny"):
        direct = client.select(pool=records, queries=QUERIES, k=2, params={"strategy": strategy}, targets=[text],
                               timeout=60)
        ids = direct.retrieved.targets[0]
        assert len(ids) == 2 and direct.strategy.chosen == strategy
        assert prompt.format(text=text) == expected_prompt([EXAMPLES[int(i)] for i in ids], text)


def test_added_examples_join_the_pool(client):
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=2, input_key="text", output_key="label")
    selector.select_examples({"text": "x"})
    first_pool = selector.pool_id()
    assert client.get_pool(first_pool).size == len(EXAMPLES)

    selector.add_example({"text": "a masterpiece, wonderful and moving", "label": "positive", "source": "new"})
    chosen = selector.select_examples({"text": "x"})
    grown = selector.pool_id()
    assert grown != first_pool and client.get_pool(grown).size == len(EXAMPLES) + 1
    assert len(chosen) == 2 and all(example in selector.examples for example in chosen)
    with pytest.raises(KeyError):
        selector.add_example({"text": "no label"})



def test_a_pool_the_service_lost_is_stored_again(client):
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=2, input_key="text", output_key="label",
                                     params={"retrieve": 1})  # every call asks the service
    chosen = selector.select_examples({"text": "dull"})
    client.delete_pool(selector.pool_id())  # as after a restart of the embedded service
    assert selector.select_examples({"text": "dull"}) == chosen
    assert client.get_pool(selector.pool_id()).size == len(EXAMPLES)


def test_the_prompt_langchain_formats_is_the_prompt_iclsel_scored(client, tiny):
    """few_shot_prompt() formats, for an input, exactly prompt.text + the query: tokenised, the prompt the
    service scored. With one selection query, the service's exact loss is -log p(gold) of that very text, which
    the test recomputes with the model on the tokens of LangChain's string."""
    import torch

    query = {"text": "a moving story  with\ngreat acting ", "label": "positive"}  # awkward spaces and a newline
    selector = IclselExampleSelector(client, EXAMPLES, [query], k=3, input_key="text", output_key="label", seed=2,
                                     method="random", template="Review: {input}\nSentiment: {output}",
                                     separator="\n\n")
    prompt = selector.few_shot_prompt()
    text = prompt.format(text=query["text"])
    result = selector.selection()
    assert text == result.prompt.text + result.prompt.query_template.replace("{input}", query["text"])
    assert tiny.tokenizer(result.prompt.text)["input_ids"] == result.prompt.token_ids

    prompt_ids = tiny.tokenizer(text)["input_ids"]
    options = sorted({e["label"] for e in EXAMPLES})
    scores = []
    with torch.no_grad():
        for option in options:
            option_ids = tiny.tokenizer(" " + option, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + option_ids[:-1]])
            log_probs = torch.log_softmax(tiny.model(ids).logits[0].double(), -1)
            scores.append(sum(float(log_probs[len(prompt_ids) - 1 + j, token]) for j, token in enumerate(option_ids)))
    scores = torch.tensor(scores)
    loss = float(torch.logsumexp(scores, 0) - scores[options.index(query["label"])])
    assert result.exact.loss == pytest.approx(loss, abs=1e-4)


@pytest.mark.parametrize("hybrid_name, by", [("hybrid", "topk-embed"), ("hybrid-sentence", "topk-sentence")])
def test_a_hybrid_selection_gives_each_input_the_shared_head_and_its_own_nearest(client, hybrid_name, by):
    """When auto returns a hybrid (the searched set's first k - k//2 demos, then each query's k//2 nearest other
    demos by its retrieval), an input gets the shared demos, then its own nearest demos outside them. The tiny model
    picks its strategy by chance: the selection here is auto's, relabelled as a hybrid answer."""
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=3, input_key="text", output_key="label",
                                     params={"strategy": "set"})
    searched = selector.selection()
    hybrid = searched.model_dump()
    hybrid["selected"] = hybrid["selected"][:2]
    hybrid["strategy"]["chosen"] = hybrid_name
    hybrid["retrieved"] = {"slots": 1, "by": by, "queries": [[] for _ in LABELLED], "targets": []}
    selector._shared = type(searched).model_validate(hybrid)
    head = selector._shared.selected
    records = [{"id": str(i), "input": e["text"], "output": e["label"]} for i, e in enumerate(EXAMPLES)]
    prompt = few_shot(selector)
    for text in ("awful and dull", "brilliant and funny"):
        ranked = client.select(pool=records, queries=QUERIES, k=len(records),  # every demo, nearest last
                               params={"strategy": by, "vote_order": []}, targets=[text], timeout=60
                               ).retrieved.targets[0]
        own = [i for i in ranked if i not in {d.id for d in head}][-1]
        assert prompt.format(text=text) == expected_prompt([EXAMPLES[int(d.id)] for d in head]
                                                           + [EXAMPLES[int(own)]], text)


def test_a_hybrids_own_demos_come_in_the_order_the_service_gives_them(client):
    """A hybrid's own demos (k//2 of them) come in vote order where the request's params.vote_order names their
    retrieval (the default names topk-sentence), as the service orders them; else the nearest last."""
    nearest = ["0", "1", "2", "3", "5"]  # positive, negative, positive, negative, negative; the nearest last
    selector = IclselExampleSelector(client, EXAMPLES, LABELLED, k=5, input_key="text", output_key="label")
    assert selector._ordered(nearest, "topk-sentence") == ["0", "2", "1", "3", "5"]  # negative (3 of 5) last
    assert selector._ordered(nearest, "topk-embed") == nearest
    unordered = IclselExampleSelector(client, EXAMPLES, LABELLED, k=5, input_key="text", output_key="label",
                                      params={"vote_order": []})
    assert unordered._ordered(nearest, "topk-sentence") == nearest
