"""Prompt layout: fixed-width demo slots so that swapping one demo changes only that slot.

A prompt is   [specials] [slot 1] ... [slot k] [query] [option]
  - each slot holds one demo, rendered with the template and followed by the separator, LEFT-padded
    with a visible filler token (default: the tokenizer's "\\n") to the slot width W;
  - the query is the template up to the label ("Input: ...\\nLabel:"), the option its verbalizer
    (" positive"), whitespace before {output} moving into the option.
What the model scores is this token sequence; `prompt_text` decodes it for the user.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import torch

from .data import Example, InputError


@dataclass
class Layout:
    template: str
    separator: str
    options: list[str]
    option_ids: list[list[int]]  # tokens of each option
    special_ids: list[int]  # tokens the tokenizer puts first (BOS), may be empty
    filler_id: int
    demo_ids: torch.Tensor  # [n, W] left-padded demo tokens
    demo_lengths: torch.Tensor  # [n] real (unpadded) lengths
    query_ids: list[list[int]]  # per query: prompt tokens up to the answer
    gold: torch.Tensor  # [Q] index of each query's option
    demo_outputs: list[str]  # label text of each pool demo

    @property
    def slot_width(self) -> int:
        return self.demo_ids.shape[1]

    @property
    def n_options(self) -> int:
        return len(self.options)

    def subset_width(self, subset: list[int] | torch.Tensor) -> int:
        """The widest demo of ``subset``, in tokens: the slot width of its compact prompt."""
        return int(self.demo_lengths[torch.as_tensor(subset, dtype=torch.long)].max())

    def prefix_ids(self, subset: list[int] | torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Token ids [len(specials) + k*w] of the demo prefix for demos ``subset`` in slot order, each slot
        w = ``width`` tokens wide (default: the pool's slot width W). Slots are left-padded, so a narrower
        slot drops filler only (``width`` must be at least ``subset_width(subset)``)."""
        width = self.slot_width if width is None else width
        slots = self.demo_ids[torch.as_tensor(subset, dtype=torch.long)][:, self.slot_width - width:].reshape(-1)
        return torch.cat([torch.tensor(self.special_ids, dtype=torch.long), slots])

    def narrowed(self, width: int) -> "Layout":
        """The same layout with slots ``width`` tokens wide: each demo's last ``width`` tokens (a view, no copy).
        Demos of at most ``width`` tokens keep all their tokens and lose filler only; a longer demo is cut to its
        end, which is how a first-order estimate in a narrower prompt sees it."""
        if width == self.slot_width:
            return self
        return replace(self, demo_ids=self.demo_ids[:, self.slot_width - width:],
                       demo_lengths=self.demo_lengths.clamp(max=width))

    def slot_start(self) -> int:
        """Position of the first demo slot in a prompt."""
        return len(self.special_ids)

    def fingerprint(self) -> str:
        """Hash of everything a prompt's tokens depend on apart from the chosen demos and the query."""
        content = {"template": self.template, "separator": self.separator, "options": self.option_ids,
                   "specials": self.special_ids, "filler": self.filler_id, "width": self.slot_width}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


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
    """Batch tokenisation with a bounded memo: a service sees the same pools again and again."""

    def __init__(self, tokenizer, max_entries: int = 200_000):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._memo: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            encoded = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
            with self._lock:
                self._memo.update(zip(missing, encoded))
                while len(self._memo) > self.max_entries:
                    self._memo.popitem(last=False)
        with self._lock:
            return [self._memo.get(t) or _encode(self.tokenizer, t) for t in texts]


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


def build_layout(tokenizer, pool: list[Example], queries: list[Example], k: int, options: list[str] | None,
                 template: str, separator: str, max_positions: int, filler: str = "\n",
                 max_slot_tokens: int | None = None, encode_all: TokenMemo | None = None,
                 query_context: list[list[Example]] | None = None) -> Layout:
    """Tokenise pool and queries into the slot layout, validating what the user gave.

    ``query_context`` (params.retrieve): per query, demos rendered unpadded between the slots and the
    query (each query's own retrieved neighbours, best last); they are part of that query's row, so the
    slots stay shared and slot-aligned."""
    encode_all = encode_all or TokenMemo(tokenizer)
    if not pool:
        raise InputError("pool", "must not be empty")
    if not queries:
        raise InputError("queries", "must not be empty")
    if not isinstance(k, int) or k < 1:
        raise InputError("k", "must be a positive integer")
    if k > len(pool):
        raise InputError("k", f"k={k} is larger than the pool ({len(pool)} demos)")
    options = resolve_options(pool, queries, options)
    option_index = {option: i for i, option in enumerate(options)}
    for position, query in enumerate(queries):
        if query.output not in option_index:
            raise InputError(f"queries[{position}].output", f"{query.output!r} is not among the options {options}")

    _, gap, _ = split_template(template)
    option_ids = [_encode(tokenizer, gap + option) for option in options]
    if len({tuple(ids) for ids in option_ids}) != len(option_ids):
        raise InputError("options", "two options tokenise to the same tokens")

    special_ids = tokenizer("", add_special_tokens=True)["input_ids"]
    filler_tokens = _encode(tokenizer, filler)
    filler_id = filler_tokens[0] if len(filler_tokens) == 1 else (tokenizer.pad_token_id or tokenizer.eos_token_id)

    demo_tokens = encode_all([render_demo(template, separator, demo) for demo in pool])
    if max_slot_tokens is not None:
        too_long = [i for i, ids in enumerate(demo_tokens) if len(ids) > max_slot_tokens]
        if too_long:
            raise InputError(f"pool[{too_long[0]}].input", f"demo is {len(demo_tokens[too_long[0]])} tokens, over the slot limit {max_slot_tokens}")
    lengths = [len(ids) for ids in demo_tokens]
    width = max(lengths)
    # filled row by row in one array: a flat Python list of n * W ints would cost ~36 bytes per token
    demo_array = np.full((len(pool), width), filler_id, dtype=np.int64)
    for row, (ids, length) in enumerate(zip(demo_tokens, lengths)):
        demo_array[row, width - length:] = ids
    demo_ids = torch.from_numpy(demo_array)

    query_ids = encode_all([render_query(template, query) for query in queries])
    if query_context is not None:
        query_ids = [sum(encode_all([render_demo(template, separator, demo) for demo in context]), []) + ids
                     for context, ids in zip(query_context, query_ids, strict=True)]
    longest = len(special_ids) + k * width + max(len(ids) for ids in query_ids) + max(len(ids) for ids in option_ids)
    if longest > max_positions:
        raise InputError("k", f"prompts would be {longest} tokens (k={k} slots of {width} tokens plus the query), "
                              f"over the model's context of {max_positions}")

    return Layout(template=template, separator=separator, options=options, option_ids=option_ids,
                  special_ids=special_ids, filler_id=filler_id, demo_ids=demo_ids,
                  demo_lengths=torch.tensor(lengths), query_ids=query_ids,
                  gold=torch.tensor([option_index[q.output] for q in queries], dtype=torch.long),
                  demo_outputs=[demo.output for demo in pool])
