"""What one anchor pass yields (inference.ModelRunner.anchor), typed: the option scores at the anchor
prompt and the gradient of the loss or of the option margins w.r.t. the demo-slot embeddings. The
tensor cache stores it as named tensors (safetensors in Redis); estimate.AnchorEstimator reads it."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from iclsel.contract import ANCHOR_MODES  # noqa: F401  (the contract names the modes a request may ask for)


@dataclass(frozen=True)
class AnchorTensors:
    """Anchor quantities of one query chunk, or of all of them merged (``merge``). Two kinds:
    - mean-loss: ``grad_loss_sum`` [k, W, d], the gradient of the summed query losses;
    - margins (label-groups, per-query): ``grad_margins`` [R, O, k, W, d], the gradient of the summed margins
      score[q, o] - score[q, reference[q]] of the queries in gradient row r, with ``reference`` [Q],
      ``row_of_query`` [Q] and ``row_count`` [R]. Per-query anchors have one row per query, label-group
      anchors one row per gold label."""

    scores: torch.Tensor  # [Q, O] option scores at the anchor
    grad_loss_sum: torch.Tensor | None = None  # [k, W, d]
    grad_margins: torch.Tensor | None = None  # [R, O, k, W, d]
    reference: torch.Tensor | None = None  # [Q] option each query's margins are taken against
    row_of_query: torch.Tensor | None = None  # [Q] gradient row of each query
    row_count: torch.Tensor | None = None  # [R] queries per gradient row
    cost: torch.Tensor | None = None  # [] forward-equivalents computing it took (charged by a job finding it cached)

    @property
    def has_margins(self) -> bool:
        """Per-query margins can be estimated (label-groups, per-query); else only the mean loss."""
        return self.grad_margins is not None

    def named(self) -> dict[str, torch.Tensor]:
        """The tensors by field name, as the tensor cache stores them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_named(cls, tensors: dict[str, torch.Tensor]) -> "AnchorTensors":
        unknown = set(tensors) - {f.name for f in fields(cls)}
        if unknown or "scores" not in tensors:
            raise ValueError(f"not anchor tensors: {sorted(tensors)}")
        return cls(**tensors)

    @classmethod
    def merge(cls, mode: str, parts: list["AnchorTensors"]) -> "AnchorTensors":
        """One anchor from its query chunks' parts, in query order: gradients of sums add up (label groups,
        mean loss); per-query rows line up."""
        scores = torch.cat([p.scores for p in parts])
        if mode == "per-query":
            return cls(scores, grad_margins=torch.cat([p.grad_margins for p in parts]),
                       reference=torch.cat([p.reference for p in parts]),
                       row_of_query=torch.arange(scores.shape[0]), row_count=torch.cat([p.row_count for p in parts]))
        if mode == "label-groups":
            return cls(scores, grad_margins=torch.stack([p.grad_margins for p in parts]).sum(0),
                       reference=torch.cat([p.reference for p in parts]),
                       row_of_query=torch.cat([p.row_of_query for p in parts]),
                       row_count=torch.stack([p.row_count for p in parts]).sum(0))
        return cls(scores, grad_loss_sum=torch.stack([p.grad_loss_sum for p in parts]).sum(0))
