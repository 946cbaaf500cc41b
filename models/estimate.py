"""First-order estimates of subsets from cached anchor quantities: gathers and sums, no model call.

For an anchor S0 = (a_1..a_k) with gradient G = df/dE over its demos' positions in the natural prompt, each
demo's positions right-aligned in a slot of W (``[.., k, W, d]``, inference.ModelRunner._slots), and any
subset S = (i_1..i_k) in prompt order:
    f(S) ~ f(S0) + sum_s <G[s], E(i_s) - E(a_s)> = f(S0) + sum_s c[s, i_s] - c[s, a_s]
with the per-slot, per-demo contributions c[.., s, i] = <G[s], E(i)> (one matrix product per anchor), E(i) the
demo's tokens right-aligned in the same frame (layout.Layout.demo_ids; no token, no contribution). The frame is
slot-relative: a candidate is compared with the anchor's demo end to end (label and separator aligned), and the
shift a length change gives later demos is not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .anchor import AnchorTensors
from .layout import PAD
from .outcome import objective, on_all_rows, query_losses


def slot_contributions(grad: torch.Tensor, demo_ids: torch.Tensor, embedding: torch.Tensor,
                       chunk: int = 256) -> torch.Tensor:
    """grad [..., k, W, d], demo_ids [n, W] (layout.PAD where a demo has no token), embedding [V, d]
    -> c [..., k, n] = <grad[.., s], E(demo i)>: one matrix product [.. k, W*d] x [W*d, n], demo embeddings
    gathered in chunks."""
    embedding = embedding.detach().to(device="cpu", dtype=grad.dtype)
    flat_grad = grad.reshape(-1, grad.shape[-2] * grad.shape[-1])  # [.. * k, W*d]
    parts = []
    for start in range(0, demo_ids.shape[0], chunk):
        ids = demo_ids[start:start + chunk]  # [m, W]
        present = (ids != PAD).unsqueeze(-1).to(grad.dtype)  # [m, W, 1]
        demo_embeds = (embedding[ids.clamp_min(0)] * present).flatten(1)  # [m, W*d]
        parts.append(flat_grad @ demo_embeds.T)  # [.. * k, m]
    return torch.cat(parts, dim=-1).view(*grad.shape[:-2], demo_ids.shape[0])


def subset_deltas(contrib: torch.Tensor, subsets: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """contrib [..., k, n], subsets [S, k], anchor [k] -> [S, ...]: sum_s c[.., s, i_s] - c[.., s, a_s]."""
    by_slot = contrib.movedim(-2, 0).movedim(-1, 1)  # [k, n, ...]
    slots = torch.arange(subsets.shape[1])
    at_subsets = by_slot[slots, subsets].sum(1)  # [S, ...]
    at_anchor = by_slot[slots, anchor].sum(0)  # [...]
    return at_subsets - at_anchor


@dataclass(frozen=True)
class Estimates:
    """First-order estimates of S subsets."""
    loss: torch.Tensor  # [S] mean query loss
    objective: torch.Tensor  # [S] the search objective (outcome.objective; the loss itself for "loss")
    accuracy: torch.Tensor | None = None  # [S] (margin anchors only)
    predictions: torch.Tensor | None = None  # [S, Q] predicted option per query (margin anchors only)
    zero_order: torch.Tensor | None = None  # [S] the estimating anchor's own loss (estimate_with_anchors)
    anchor: torch.Tensor | None = None  # [S] index of the estimating anchor (estimate_with_anchors)


class AnchorEstimator:
    """Estimates around one anchor, from either kind of AnchorTensors (inference.ModelRunner.anchor):
    - margin gradients (label-groups, per-query): each query's margins move by its gradient row's mean
      shift, then the loss, the predicted label and accuracy are computed exactly from the estimated margins;
    - mean-loss: a first-order estimate of the mean loss only.
    Q here counts the anchor's scored queries: ``rows`` [Q] are their indices in the whole query set of
    ``n_queries``; ``query_demo`` [Q] the pool index of a query that is a pool demo (-1 if none). A subset
    that contains such a demo does not count that query (per-query and label-group estimates; a mean-loss
    estimate cannot drop a query's share of the gradient and keeps it)."""

    def __init__(self, anchor: list[int], tensors: AnchorTensors, demo_ids: torch.Tensor,
                 embedding: torch.Tensor, gold: torch.Tensor, query_demo: torch.Tensor | None = None,
                 rows: torch.Tensor | None = None, n_queries: int | None = None):
        self.anchor = torch.tensor(anchor, dtype=torch.long)
        self.gold = gold
        self.query_demo = query_demo if query_demo is not None else torch.full_like(gold, -1)
        self.has_pool_queries = bool((self.query_demo >= 0).any())
        self.rows = rows if rows is not None else torch.arange(gold.shape[0])
        self.n_queries = n_queries if n_queries is not None else gold.shape[0]
        self.per_query = tensors.has_margins  # per-query estimates available
        grad = tensors.grad_margins if self.per_query else tensors.grad_loss_sum
        self.contrib = slot_contributions(grad, demo_ids, embedding)  # [R, O, k, n] or [k, n]
        if self.per_query:
            self.reference = tensors.reference  # [Q]
            self.row_of_query = tensors.row_of_query  # [Q]
            self.row_weight = (1.0 / tensors.row_count.clamp_min(1)).to(grad.dtype)  # [R]
        self.scores = tensors.scores.to(grad.dtype)  # [Q, O] the anchor's own outcome (the zero-order term)
        self.losses = query_losses(self.scores, self.gold)  # [Q]
        if self.per_query:
            self.margins = self.scores - self.scores.gather(1, self.reference[:, None])  # [Q, O]

    @property
    def loss(self) -> float:
        return float(self.losses.mean())

    def estimated_margins(self, subsets: torch.Tensor) -> torch.Tensor:
        """subsets [S, k] -> estimated margins [S, Q, O] (per-query anchors only)."""
        delta = subset_deltas(self.contrib, subsets, self.anchor) * self.row_weight[:, None]  # [S, R, O]
        return self.margins + delta[:, self.row_of_query]

    def all_rows_margins(self, subset: torch.Tensor) -> torch.Tensor:
        """subset [k] -> estimated margins [n_queries, O], NaN on the rows the anchor did not score."""
        return on_all_rows(self.estimated_margins(subset[None])[0], self.rows, self.n_queries)

    def counted(self, subsets: torch.Tensor) -> torch.Tensor:
        """subsets [S, k] -> [S, Q] float, 1 where the query counts for the subset (it is not one of its demos)."""
        if not self.has_pool_queries:
            return torch.ones((subsets.shape[0], self.gold.shape[0]))
        return (subsets[:, :, None] != self.query_demo[None, None, :]).all(1).float()

    def objective(self, name: str) -> float:
        """The anchor's own value of the search objective ``name`` (outcome.objective) on its exact scores."""
        return float(objective(self.scores, self.gold, name, self.counted(self.anchor[None])[0]))

    def estimate(self, subsets: torch.Tensor, chunk: int = 4096, objective_name: str = "loss") -> Estimates:
        """subsets [S, k] -> their Estimates (accuracy and predictions with margin anchors). Objectives other
        than the loss need per-query margins (not a mean-loss anchor)."""
        if objective_name != "loss" and not self.per_query:
            raise ValueError(f"objective {objective_name!r} needs per-query margins, not a mean-loss anchor")
        losses, accuracies, predictions, objectives = [], [], [], []
        for start in range(0, subsets.shape[0], chunk):
            part = subsets[start:start + chunk]
            if self.per_query:
                margins = self.estimated_margins(part)  # [s, Q, O]
                counted = self.counted(part).to(margins.dtype)  # [s, Q]
                count = counted.sum(-1)
                losses.append(objective(margins, self.gold, "loss", counted))
                objectives.append(losses[-1] if objective_name == "loss" else objective(margins, self.gold, objective_name, counted))
                predicted = margins.argmax(-1)
                predictions.append(predicted)
                accuracies.append((((predicted == self.gold).to(margins.dtype) * counted).sum(-1) / count).float())
            else:
                delta = subset_deltas(self.contrib, part, self.anchor)
                losses.append(self.loss + delta / self.gold.shape[0])
                objectives.append(losses[-1])
        return Estimates(torch.cat(losses), torch.cat(objectives),
                         accuracy=torch.cat(accuracies) if self.per_query else None,
                         predictions=torch.cat(predictions) if self.per_query else None)


def nearest_anchor(subsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """subsets [S, k], anchors [A, k] -> [S] index of the anchor sharing most slot-aligned demos."""
    overlap = (subsets[:, None, :] == anchors[None, :, :]).sum(-1)  # [S, A]
    return overlap.argmax(-1)


def estimate_with_anchors(estimators: list[AnchorEstimator], subsets: torch.Tensor) -> Estimates:
    """Estimate each subset's loss from its nearest anchor; also return that anchor's own loss (zero-order)."""
    anchors = torch.stack([e.anchor for e in estimators])
    assignment = nearest_anchor(subsets, anchors)
    dtype = estimators[0].scores.dtype
    loss = torch.empty(subsets.shape[0], dtype=dtype)
    zero_order = torch.empty(subsets.shape[0], dtype=dtype)
    per_query = all(e.per_query for e in estimators)
    accuracy = torch.empty(subsets.shape[0]) if per_query else None
    predictions = torch.empty((subsets.shape[0], estimators[0].gold.shape[0]), dtype=torch.long) if per_query else None
    for a, estimator in enumerate(estimators):
        chosen = (assignment == a).nonzero().squeeze(-1)
        if chosen.numel() == 0:
            continue
        result = estimator.estimate(subsets[chosen])
        loss[chosen] = result.loss
        zero_order[chosen] = estimator.loss
        if per_query:
            accuracy[chosen] = result.accuracy
            predictions[chosen] = result.predictions
    return Estimates(loss, loss, accuracy=accuracy, predictions=predictions, zero_order=zero_order, anchor=assignment)
