"""From option scores to outcomes: per-query loss, predicted label, accuracy, macro-F1."""

from __future__ import annotations

import torch


def query_losses(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """scores [..., Q, O] (log-probabilities of each option, any offset) -> loss [..., Q]:
    -log p(gold | options) = logsumexp_o scores - scores[gold]."""
    gold_scores = scores.gather(-1, gold.expand(scores.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(scores, dim=-1) - gold_scores


def summarize(scores: torch.Tensor, gold: torch.Tensor) -> dict:
    """Mean loss and accuracy of one subset's scores [Q, O]."""
    predictions = scores.argmax(-1)
    return {"loss": float(query_losses(scores, gold).mean()),
            "accuracy": float((predictions == gold).float().mean())}


def macro_f1(predictions: torch.Tensor, gold: torch.Tensor, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    scores = []
    for label in range(n_classes):
        true_pos = int(((predictions == label) & (gold == label)).sum())
        predicted = int((predictions == label).sum())
        actual = int((gold == label).sum())
        if predicted == 0 and actual == 0:
            continue
        scores.append(2 * true_pos / (predicted + actual))
    return sum(scores) / len(scores) if scores else 0.0
