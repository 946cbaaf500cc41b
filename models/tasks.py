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
from .layout import Layout


@dataclass(frozen=True)
class AnchorTask:
    key: str  # tensor cache key of the result (a content hash: see SelectionContext.anchor_key)
    model: str  # fingerprint of the model it must run on
    mode: str  # one of anchor.ANCHOR_MODES
    special_ids: list[int]
    filler_id: int
    option_ids: list[list[int]]
    demo_ids: list[list[int]]  # the anchor's demos, in slot order (padded to its prompt's slot width)
    query_ids: list[list[int]]  # the chunk's queries
    gold: list[int]  # the chunk's gold option indices

    @classmethod
    def of(cls, layout: Layout, subset: list[int], queries: list[int], mode: str, key: str,
           model_fingerprint: str) -> "AnchorTask":
        return cls(key=key, model=model_fingerprint, mode=mode, special_ids=layout.special_ids,
                   filler_id=layout.filler_id, option_ids=layout.option_ids,
                   demo_ids=[layout.demo_ids[i].tolist() for i in subset],
                   query_ids=[layout.query_ids[q] for q in queries], gold=[int(layout.gold[q]) for q in queries])

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
    k = len(task.demo_ids)
    layout = Layout(template="", separator="", options=[str(o) for o in range(len(task.option_ids))],
                    option_ids=task.option_ids, special_ids=task.special_ids, filler_id=task.filler_id,
                    demo_ids=torch.tensor(task.demo_ids, dtype=torch.long),
                    demo_lengths=torch.tensor([len(ids) for ids in task.demo_ids]),
                    query_ids=task.query_ids, gold=torch.tensor(task.gold, dtype=torch.long),
                    demo_outputs=[""] * k)
    runner = ModelRunner(loaded_model.model, layout, batch_size=batch_size, checkpoint=checkpoint)
    tensors, cost = with_cost(runner.counter, lambda: runner.anchor(task.mode, list(range(k)), list(range(len(task.query_ids)))))
    return replace(tensors, cost=cost)
