"""From option scores to outcomes: per-query loss, predicted label, accuracy, macro-F1."""

from __future__ import annotations

import torch


def query_losses(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """scores [..., Q, O] (log-probabilities of each option, any offset) -> loss [..., Q]:
    -log p(gold | options) = logsumexp_o scores - scores[gold]."""
    gold_scores = scores.gather(-1, gold.expand(scores.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(scores, dim=-1) - gold_scores


def scored_rows(scores: torch.Tensor) -> torch.Tensor:
    """[Q] True where a query has scores. A query that is itself a demo of the prompt (pool queries, see
    context.SelectionContext) is not scored for that prompt: its row is NaN."""
    return ~scores.isnan().any(-1)


def on_all_rows(values: torch.Tensor, rows: torch.Tensor | list[int], n_rows: int) -> torch.Tensor:
    """values [len(rows), O] of query ``rows`` -> [n_rows, O], NaN on the other rows (not scored)."""
    if len(rows) == n_rows:
        return values
    full = torch.full((n_rows, values.shape[-1]), float("nan"), dtype=values.dtype)
    full[rows] = values
    return full


from iclsel.contract import OBJECTIVES  # noqa: E402  (the contract names the objectives a request may ask for)


def objective(scores: torch.Tensor, gold: torch.Tensor, name: str, counted: torch.Tensor | None = None) -> torch.Tensor:
    """What a search minimises, from scores [..., Q, O] -> [...]; ``counted`` [..., Q] weights the queries
    (1 = scored, 0 = not; default all).
    loss:   mean -log p(gold).
    errors: the error rate of the argmax prediction, ties broken by the mean loss: rate + (L / (1 + L)) / Q,
            where the second term is below one error's step 1/Q, so fewer errors always wins."""
    counted = torch.ones(scores.shape[:-1], dtype=scores.dtype) if counted is None else counted.to(scores.dtype)
    count = counted.sum(-1)
    loss = (query_losses(scores, gold) * counted).sum(-1) / count
    if name == "loss":
        return loss
    if name == "errors":
        errors = ((scores.argmax(-1) != gold).to(scores.dtype) * counted).sum(-1) / count
        return errors + loss / (1 + loss) / count
    raise ValueError(f"objective must be one of {OBJECTIVES}, not {name!r}")


def mean_loss(scores: torch.Tensor, gold: torch.Tensor) -> float:
    """Mean -log p(gold) over the scored queries of one subset's scores [Q, O]."""
    keep = scored_rows(scores)
    return float(objective(scores[keep], gold[keep], "loss"))


def summarize(scores: torch.Tensor, gold: torch.Tensor) -> dict:
    """Mean loss and accuracy over the scored queries of one subset's scores [Q, O]."""
    keep = scored_rows(scores)
    return {"loss": mean_loss(scores, gold),
            "accuracy": float((scores[keep].argmax(-1) == gold[keep]).float().mean())}


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
