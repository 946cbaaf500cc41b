"""Prompt layout: the natural prompt, the one a user builds and sends.

The prompt of a demo set S = (d_1..d_k) for a query x is the text
    render(d_1) + ... + render(d_k) + head(x)
tokenised whole, the way a user's tokenizer call or a server does it (the tokenizer's default special tokens
first), then the option to score:
  - render(d) is the demo in the template, followed by the separator ("Input: ...\\nLabel: positive\\n\\n");
  - head(x) is the template up to the label ("Input: ...\\nLabel:"), the option its verbalizer (" positive"),
    whitespace before {output} moving into the option.
No filler: a demo takes as many positions as it has tokens, so a swap shifts every later position.

Tokens can merge across a demo boundary ("\\n\\n" + "Input" is "\\n", "\\n", "Input" to a GPT-2-style
tokenizer, but "\\n\\n" at the end of a text), so every prompt run is tokenised whole (``Layout.prompt``); the
tokens all of a set's query rows share form the prefix that runs once. For first-order estimates each demo also
has its tokens as they stand inside a prompt (``demo_ids``: the demo followed by the next demo's start),
right-aligned in a slot of ``width`` positions: a slot-relative frame in which a candidate demo is compared with
the anchor's demo end to end (the label and separator line up; models/estimate.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data import Example, InputError
from .defaults import DEFAULT_OPTION_SCORE, OPTION_SCORES

PAD = -1  # demo_ids before a demo's first token (its slot is wider than the demo)


@dataclass(frozen=True)
class Prompt:
    """The natural prompts of one demo set for some query rows, as token ids.

    Row r's whole prompt is ``prefix + rows[r]``: ``prefix`` the tokens every row shares (special tokens, then
    the demos' tokens up to where a query could merge with them), ``rows[r]`` the rest up to the answer."""
    prefix: list[int]  # [P]
    rows: list[list[int]]  # per query row
    spans: list[tuple[int, int]]  # [k] each demo's tokens [start, end) in the first row's prompt (end may pass P)


@dataclass
class Layout:
    tokenizer: Any = field(repr=False, compare=False)
    template: str
    separator: str
    options: list[str]
    option_ids: list[list[int]]  # tokens of each option
    special_ids: list[int]  # tokens the tokenizer puts first (BOS), may be empty
    pad_id: int  # a token id to right-pad batches with (masked out)
    demo_texts: list[str]  # [n] each pool demo rendered and followed by the separator
    demo_ids: torch.Tensor  # [n, W] each demo's tokens inside a prompt, right-aligned, PAD before
    demo_lengths: torch.Tensor  # [n] tokens of each demo inside a prompt
    query_texts: list[str]  # [Q] per query row: its own context demos (params.retrieve), then head(query)
    query_ids: list[list[int]]  # [Q] each query text tokenised on its own (lengths and costs)
    gold: torch.Tensor  # [Q] index of each query's option
    demo_outputs: list[str]  # label text of each pool demo
    option_score: str = DEFAULT_OPTION_SCORE  # "sum" or "mean" of an option's token log-probabilities

    @property
    def width(self) -> int:
        """Slot width W of the estimates' frame: the longest demo, in tokens."""
        return self.demo_ids.shape[1]

    @property
    def n_options(self) -> int:
        return len(self.options)

    @property
    def single_token_options(self) -> bool:
        """Every option is one token: one logit vector scores them all, and sum and mean score alike."""
        return all(len(ids) == 1 for ids in self.option_ids)

    def prefix_text(self, subset: list[int] | tuple[int, ...]) -> str:
        """The demos of ``subset`` as the prompt's text, in order (what a user puts before the query)."""
        return "".join(self.demo_texts[int(i)] for i in subset)

    def prefix_ids(self, subset: list[int] | tuple[int, ...]) -> list[int]:
        """``prefix_text(subset)`` tokenised as a user's tokenizer call does (default special tokens)."""
        return self.tokenizer(self.prefix_text(subset))["input_ids"]

    def prompt(self, subset: list[int] | tuple[int, ...], queries: list[int]) -> Prompt:
        """The natural prompts of demos ``subset`` for query rows ``queries``, each tokenised whole."""
        text = self.prefix_text(subset)
        encoded = self.tokenizer([text + self.query_texts[q] for q in queries], add_special_tokens=False,
                                 return_offsets_mapping=True)
        whole, offsets = encoded["input_ids"], encoded["offset_mapping"][0]
        demo_tokens = sum(start < len(text) for start, _ in offsets)  # tokens that start in the demos (row 0)
        shared = min([demo_tokens] + [len(ids) - 1 for ids in whole])
        for ids in whole[1:]:  # what every row has in common (rows differ from the first query's tokens on)
            shared = _common_length(whole[0][:shared], ids)
        specials = len(self.special_ids)
        lengths = [len(self.demo_texts[int(i)]) for i in subset]
        return Prompt(prefix=self.special_ids + whole[0][:shared], rows=[ids[shared:] for ids in whole],
                      spans=[(specials + a, specials + b) for a, b in _token_spans(offsets[:demo_tokens], lengths)])

    def fingerprint(self) -> str:
        """Hash of everything a prompt's tokens depend on apart from the chosen demos and the queries."""
        content = {"template": self.template, "separator": self.separator, "options": self.option_ids,
                   "specials": self.special_ids, "width": self.width}
        if self.option_score != DEFAULT_OPTION_SCORE and not self.single_token_options:
            content["option_score"] = self.option_score  # one-token options score the same either way
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _common_length(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _token_spans(offsets: list[tuple[int, int]], lengths: list[int]) -> list[tuple[int, int]]:
    """Token offsets (char start, end) of a text made of pieces of ``lengths`` chars -> each piece's token range
    [start, end): a token belongs to the piece its first character is in."""
    bounds = np.cumsum([0] + lengths)
    starts = np.array([start for start, _ in offsets], dtype=np.int64)
    piece = np.searchsorted(bounds, starts, side="right") - 1  # [T] piece of each token
    return [(int(np.searchsorted(piece, j, side="left")), int(np.searchsorted(piece, j, side="right")))
            for j in range(len(lengths))]


def split_template(template: str) -> tuple[str, str, str]:
    """'Input: {input}\\nLabel: {output}' -> (head 'Input: {input}\\nLabel:', gap ' ', tail '')."""
    if template.count("{input}") != 1 or template.count("{output}") != 1:
        raise InputError("template", "must contain {input} and {output} exactly once")
    head, tail = template.split("{output}")
    if "{input}" not in head:
        raise InputError("template", "{input} must come before {output}")
    stripped = head.rstrip()
    return stripped, head[len(stripped):], tail


def render_demo(template: str, separator: str, example: Example) -> str:
    head, gap, tail = split_template(template)
    return head.replace("{input}", example.input) + gap + example.output + tail + separator


def render_query(template: str, example: Example) -> str:
    head, _, _ = split_template(template)
    return head.replace("{input}", example.input)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class TokenMemo:
    """Batch tokenisation with a bounded memo: a service sees the same pools again and again.

    ``memo(texts)`` gives each text's tokens; ``memo(texts, follow=s)`` each text's tokens as they stand when
    ``s`` follows it (the tokens that start inside the text, from one tokenisation of text + s)."""

    def __init__(self, tokenizer, max_entries: int = 200_000):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._memo: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._lock = threading.Lock()

    def _compute(self, texts: list[str], follow: str) -> list[list[int]]:
        if not follow:
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        encoded = self.tokenizer([t + follow for t in texts], add_special_tokens=False, return_offsets_mapping=True)
        return [[token for token, (start, _) in zip(ids, offsets) if start < len(text)]
                for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"])]

    def __call__(self, texts: list[str], follow: str = "") -> list[list[int]]:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (t, follow) not in self._memo))
        if missing:
            encoded = self._compute(missing, follow)
            with self._lock:
                self._memo.update(((t, follow), ids) for t, ids in zip(missing, encoded))
                while len(self._memo) > self.max_entries:
                    self._memo.popitem(last=False)
        with self._lock:
            found = [self._memo.get((t, follow)) for t in texts]
        if any(ids is None for ids in found):  # evicted meanwhile by another thread's batch
            return self._compute(texts, follow)
        return found


def resolve_options(pool: list[Example], queries: list[Example], options: list[str] | None) -> list[str]:
    if options is None:
        options = sorted({example.output for example in pool + queries})
    if len(options) < 2:
        raise InputError("options", "at least two distinct options (labels) are needed")
    if len(set(options)) != len(options):
        raise InputError("options", "options must be distinct")
    if any(not option.strip() for option in options):
        raise InputError("options", "options must not be empty")
    return list(options)


def _check_sizes(pool: list[Example], queries: list[Example], k: int) -> None:
    if not pool:
        raise InputError("pool", "must not be empty")
    if not queries:
        raise InputError("queries", "must not be empty")
    if not isinstance(k, int) or k < 1:
        raise InputError("k", "must be a positive integer")
    if k > len(pool):
        raise InputError("k", f"k={k} is larger than the pool ({len(pool)} demos)")


def build_layout(tokenizer, pool: list[Example], queries: list[Example], k: int, options: list[str] | None,
                 template: str, separator: str, max_positions: int, max_slot_tokens: int | None = None,
                 encode_all: TokenMemo | None = None, query_context: list[list[Example]] | None = None,
                 option_score: str = DEFAULT_OPTION_SCORE) -> Layout:
    """Render and tokenise pool and queries for natural prompts, validating what the user gave.

    ``query_context`` (params.retrieve): per query, demos rendered between the set's demos and the query (each
    query's own retrieved neighbours, best last); they are part of that query's row."""
    encode_all = encode_all or TokenMemo(tokenizer)
    _check_sizes(pool, queries, k)
    options = resolve_options(pool, queries, options)
    option_index = {option: i for i, option in enumerate(options)}
    for position, query in enumerate(queries):
        if query.output not in option_index:
            raise InputError(f"queries[{position}].output", f"{query.output!r} is not among the options {options}")

    if option_score not in OPTION_SCORES:
        raise InputError("option_score", f"{option_score!r} is not one of {list(OPTION_SCORES)}")
    _, gap, _ = split_template(template)
    option_ids = [_encode(tokenizer, gap + option) for option in options]
    if len({tuple(ids) for ids in option_ids}) != len(option_ids):
        raise InputError("options", "two options tokenise to the same tokens")

    special_ids = tokenizer("", add_special_tokens=True)["input_ids"]
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)

    demo_texts = [render_demo(template, separator, demo) for demo in pool]
    follow = template.split("{input}")[0] or " "  # how every next demo or query starts
    demo_tokens = encode_all(demo_texts, follow=follow)
    if max_slot_tokens is not None:
        too_long = [i for i, ids in enumerate(demo_tokens) if len(ids) > max_slot_tokens]
        if too_long:
            raise InputError(f"pool[{too_long[0]}].input", f"demo is {len(demo_tokens[too_long[0]])} tokens, over the slot limit {max_slot_tokens}")
    lengths = [len(ids) for ids in demo_tokens]
    width = max(lengths)
    # filled row by row in one array: a flat Python list of n * W ints would cost ~36 bytes per token
    demo_array = np.full((len(pool), width), PAD, dtype=np.int64)
    for row, (ids, length) in enumerate(zip(demo_tokens, lengths)):
        demo_array[row, width - length:] = ids

    query_texts = [render_query(template, query) for query in queries]
    if query_context is not None:
        query_texts = ["".join(render_demo(template, separator, demo) for demo in context) + text
                       for context, text in zip(query_context, query_texts, strict=True)]
    query_ids = encode_all(query_texts)
    # the k longest demos, the longest query and option; + k + 1 for tokens a boundary may split in two
    longest = (len(special_ids) + sum(sorted(lengths)[-k:]) + max(len(ids) for ids in query_ids)
               + max(len(ids) for ids in option_ids) + k + 1)
    if longest > max_positions:
        raise InputError("k", f"prompts could be {longest} tokens (the k={k} longest demos plus the query), "
                              f"over the model's context of {max_positions}")

    return Layout(tokenizer=tokenizer, template=template, separator=separator, options=options,
                  option_ids=option_ids, special_ids=special_ids, pad_id=pad_id, demo_texts=demo_texts,
                  demo_ids=torch.from_numpy(demo_array), demo_lengths=torch.tensor(lengths),
                  query_texts=query_texts, query_ids=query_ids,
                  gold=torch.tensor([option_index[q.output] for q in queries], dtype=torch.long),
                  demo_outputs=[demo.output for demo in pool], option_score=option_score)
