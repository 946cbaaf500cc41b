"""Estimate-error diagnostics: how far first-order estimates were from exact inference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import spearmanr

from .outcome import summarize


@dataclass
class Check:
    """One explored subset that was also run exactly."""
    subset: list[int]
    estimated_loss: float
    zero_order_loss: float  # the nearest anchor's own loss, used as the estimate (zero-order)
    exact_scores: torch.Tensor  # [Q, O]
    estimated_margins: torch.Tensor | None = None  # [Q, O] (per-query estimates only)
    is_anchor: bool = False  # the subset is itself an anchor (its estimate is exact by construction)


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() / b.abs().clamp_min(1e-12)


def paper_metric(f_true: torch.Tensor, f_est: torch.Tensor) -> float:
    """Mean of (|f_true - f_est| / max(|f_true|, |f_est|))^2 (Zhang et al.), skipping 0/0 entries."""
    scale = torch.maximum(f_true.abs(), f_est.abs())
    keep = scale > 0
    if not bool(keep.any()):
        return 0.0
    return float((((f_true - f_est).abs()[keep] / scale[keep]) ** 2).mean())


def diagnose(checks: list[Check], gold: torch.Tensor, ids: list[str]) -> dict:
    outcomes = [summarize(c.exact_scores, gold) for c in checks]  # over each check's scored queries
    exact_loss = torch.tensor([outcome["loss"] for outcome in outcomes])
    estimated = torch.tensor([c.estimated_loss for c in checks])
    zero_order = torch.tensor([c.zero_order_loss for c in checks])
    exact_accuracy = [outcome["accuracy"] for outcome in outcomes]
    per_query = all(c.estimated_margins is not None for c in checks)

    spearman = None
    if len(checks) >= 3 and float(exact_loss.std()) > 0 and float(estimated.std()) > 0:
        value = spearmanr(estimated.numpy(), exact_loss.numpy()).statistic
        spearman = None if math.isnan(value) else float(value)

    if per_query:
        exact_margins = torch.stack([c.exact_scores - c.exact_scores[:, :1] for c in checks])  # [C, Q, O]
        estimated_margins = torch.stack([c.estimated_margins for c in checks])
        # rows both scored (with pool queries, a demo's own query row is NaN for prompts that hold it)
        both = ~(exact_margins.isnan().any(-1) | estimated_margins.isnan().any(-1))  # [C, Q]
        exact_margins, estimated_margins = exact_margins[both], estimated_margins[both]  # [rows, O]
        paper = paper_metric(exact_margins[..., 1:], estimated_margins[..., 1:])
        label_agreement = float((estimated_margins.argmax(-1) == exact_margins.argmax(-1)).float().mean())
        paper_on = "per-query option margins"
    else:
        paper, label_agreement, paper_on = paper_metric(exact_loss, estimated), None, "mean loss"

    non_anchor = [i for i, c in enumerate(checks) if not c.is_anchor]
    closer = [abs(estimated[i] - exact_loss[i]) < abs(zero_order[i] - exact_loss[i]) for i in non_anchor]
    return {
        "checked_subsets": len(checks),
        "spearman": spearman,
        "mean_relative_error": float(_relative(estimated, exact_loss).mean()),
        "zero_order_relative_error": float(_relative(zero_order, exact_loss).mean()),
        "mean_abs_error": float((estimated - exact_loss).abs().mean()),
        "zero_order_abs_error": float((zero_order - exact_loss).abs().mean()),
        "closer_than_zero_order": (sum(bool(x) for x in closer) / len(closer)) if closer else None,
        "paper_metric": paper,
        "paper_metric_on": paper_on,
        "label_agreement": label_agreement,
        "checks": [
            {"ids": [ids[i] for i in c.subset], "estimated_loss": c.estimated_loss, "exact_loss": float(exact_loss[j]),
             "zero_order_loss": c.zero_order_loss, "exact_accuracy": exact_accuracy[j], "is_anchor": c.is_anchor}
            for j, c in enumerate(checks)
        ],
    }
