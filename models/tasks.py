"""Anchor tasks: one (anchor, query chunk) gradient computation as a JSON-able dict, so that several
worker processes can share the anchor pass of a large query set. The result goes to the shared
tensor cache under ``task["key"]``; nothing is pickled."""

from __future__ import annotations

from typing import Callable

import torch

from .inference import ModelRunner, with_cost
from .layout import Layout


def anchor_task(layout: Layout, subset: list[int], queries: list[int], mode: str, key: str, model_fingerprint: str) -> dict:
    return {
        "kind": "anchor", "key": key, "model": model_fingerprint, "mode": mode,
        "special_ids": layout.special_ids, "filler_id": layout.filler_id, "option_ids": layout.option_ids,
        "demo_ids": [layout.demo_ids[i].tolist() for i in subset],
        "query_ids": [layout.query_ids[q] for q in queries],
        "gold": [int(layout.gold[q]) for q in queries],
    }


def run_anchor_task(loaded_model, task: dict, batch_size: int = 8,
                    checkpoint: Callable[[], None] = lambda: None) -> dict[str, torch.Tensor]:
    """Compute one anchor task's tensors with ``loaded_model`` (which must be the task's model)."""
    if task.get("kind") != "anchor":
        raise ValueError("not an anchor task")
    if task["model"] != loaded_model.fingerprint:
        raise ValueError("anchor task was made for another model")
    k = len(task["demo_ids"])
    layout = Layout(template="", separator="", options=[str(o) for o in range(len(task["option_ids"]))],
                    option_ids=task["option_ids"], special_ids=task["special_ids"], filler_id=task["filler_id"],
                    demo_ids=torch.tensor(task["demo_ids"], dtype=torch.long),
                    demo_lengths=torch.tensor([len(ids) for ids in task["demo_ids"]]),
                    query_ids=task["query_ids"], gold=torch.tensor(task["gold"], dtype=torch.long),
                    demo_outputs=[""] * k)
    runner = ModelRunner(loaded_model.model, layout, batch_size=batch_size, checkpoint=checkpoint)
    return with_cost(runner.counter, lambda: runner.anchor(task["mode"], list(range(k)), list(range(len(task["query_ids"])))))
