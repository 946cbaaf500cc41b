"""Anchor tasks: one (anchor, query chunk) gradient computation that travels as JSON, so that several
worker processes can share the anchor pass of a large query set. The result goes to the shared
tensor cache under ``task.key``; nothing is pickled."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import torch

from .anchor import AnchorTensors
from .inference import ModelRunner, with_cost
from .layout import PAD, Layout


@dataclass(frozen=True)
class AnchorTask:
    key: str  # tensor cache key of the result (a content hash: see runs.CacheKeys.anchor)
    model: str  # fingerprint of the model it must run on
    mode: str  # one of anchor.ANCHOR_MODES
    option_ids: list[list[int]]
    width: int  # the job's slot frame (layout.Layout.width): the gradient's shape
    demo_texts: list[str]  # the anchor's demos, rendered, in prompt order
    query_texts: list[str]  # the chunk's query rows, rendered up to the answer
    gold: list[int]  # the chunk's gold option indices

    @classmethod
    def of(cls, layout: Layout, subset: list[int], queries: list[int], mode: str, key: str,
           model_fingerprint: str) -> "AnchorTask":
        return cls(key=key, model=model_fingerprint, mode=mode, option_ids=layout.option_ids, width=layout.width,
                   demo_texts=[layout.demo_texts[i] for i in subset],
                   query_texts=[layout.query_texts[q] for q in queries], gold=[int(layout.gold[q]) for q in queries])

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "AnchorTask":
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError("not an anchor task")
        return cls(**data)


def run_anchor_task(loaded_model, task: AnchorTask, batch_size: int = 8,
                    checkpoint: Callable[[], None] = lambda: None) -> AnchorTensors:
    """Compute one anchor task's tensors with ``loaded_model`` (which must be the task's model)."""
    if task.model != loaded_model.fingerprint:
        raise ValueError("anchor task was made for another model")
    k = len(task.demo_texts)
    tokenizer = loaded_model.tokenizer
    layout = Layout(tokenizer=tokenizer, template="", separator="", options=[str(o) for o in range(len(task.option_ids))],
                    option_ids=task.option_ids, special_ids=tokenizer("", add_special_tokens=True)["input_ids"],
                    pad_id=0, demo_texts=task.demo_texts, demo_ids=torch.full((k, task.width), PAD),
                    demo_lengths=torch.zeros(k, dtype=torch.long), query_texts=task.query_texts,
                    query_ids=[[] for _ in task.query_texts], gold=torch.tensor(task.gold, dtype=torch.long),
                    demo_outputs=[""] * k)
    runner = ModelRunner(loaded_model.model, layout, batch_size=batch_size, checkpoint=checkpoint)
    tensors, cost = with_cost(runner.counter, lambda: runner.anchor(task.mode, list(range(k)), list(range(len(task.query_texts)))))
    return replace(tensors, cost=cost)
