"""Similarity baselines: BM25 over words and cosine over the model's own hidden-state embeddings."""

from __future__ import annotations

import re

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


def top_k_ascending(scores: np.ndarray, k: int) -> list[int]:
    """The k best indices, best LAST (nearest the query in the prompt); ties broken by index."""
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [int(i) for i in order[::-1]]
