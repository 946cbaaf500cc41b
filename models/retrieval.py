"""Similarity baselines: BM25 over words and cosine over the model's own hidden-state embeddings."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
from rank_bm25 import BM25Okapi


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bm25_similarity(pool_texts: list[str], query_texts: list[str]) -> np.ndarray:
    """[Q, n] BM25 scores of each pool text for each query."""
    bm25 = BM25Okapi([words(text) or [""] for text in pool_texts])
    return np.stack([bm25.get_scores(words(text)) for text in query_texts])


def cosine_similarity(pool_embeddings: torch.Tensor, query_embeddings: torch.Tensor) -> np.ndarray:
    """[Q, n] cosine similarity between query and pool embeddings ([Q, d], [n, d])."""
    pool = torch.nn.functional.normalize(pool_embeddings.float(), dim=-1)
    queries = torch.nn.functional.normalize(query_embeddings.float(), dim=-1)
    return (queries @ pool.T).numpy()


def set_scores(similarity: np.ndarray) -> np.ndarray:
    """One score per pool demo for a whole query set: mean over queries of similarity scaled to [0, 1] per query."""
    low = similarity.min(axis=1, keepdims=True)
    span = similarity.max(axis=1, keepdims=True) - low
    return ((similarity - low) / np.where(span > 0, span, 1.0)).mean(axis=0)


def majority_last(nearest: list[int], labels: list[str]) -> list[int]:
    """``nearest`` (demo indices, nearest last) reordered so that the label most of them carry comes last, where a
    small model's answer follows it: label groups by count, then by the rank of their nearest member, ascending;
    within a group the nearest last. The same demos (bench/experiments/README.md: neighbours in vote order)."""
    rank = {demo: position for position, demo in enumerate(nearest)}  # higher: nearer
    count = Counter(labels[demo] for demo in nearest)
    nearest_of = {label: max(rank[demo] for demo in nearest if labels[demo] == label) for label in count}
    return sorted(nearest, key=lambda demo: (count[labels[demo]], nearest_of[labels[demo]], rank[demo]))


def top_k_ascending(scores: np.ndarray, k: int) -> list[int]:
    """The k best indices, best LAST (nearest the query in the prompt); ties broken by index."""
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [int(i) for i in order[::-1]]
