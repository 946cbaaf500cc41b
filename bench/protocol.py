"""The benchmark protocol: datasets, templates, label-balanced disjoint splits, and the methods compared.

Kept free of the engine and of torch so that it can be tested on its own.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iclsel.models.data import Example, read_jsonl


@dataclass
class Sizes:
    pool: int = 100
    select: int = 32
    test: int = 200


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    template: str
    k: int
    sizes: Sizes | None = None  # the dataset's own split sizes, when it is too small for the default ones


DATASET_SPECS = {
    "imdb": DatasetSpec("imdb", "Review: {input}\nSentiment: {output}", k=4),
    "bbc": DatasetSpec("bbc", "Headline: {input}\nTopic: {output}", k=5),
    "sms": DatasetSpec("sms", "Message: {input}\nCategory: {output}", k=4),
    # 229 texts over 5 goals (43-50 each): the default 332 do not fit
    "sdg": DatasetSpec("sdg", "Text: {input}\nGoal: {output}", k=5, sizes=Sizes(pool=75, select=20, test=120)),
}
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Split:
    pool: list[Example]
    select: list[Example]  # the queries a selection method may look at (with labels)
    test: list[Example]  # held out: only ever used to score a finished selection


def load_examples(path: str | Path) -> list[Example]:
    return read_jsonl(path, "dataset")


def balanced_take(groups: dict[str, list[Example]], size: int) -> list[Example]:
    """Pop ``size`` examples from ``groups`` (label -> list, consumed from the end), round-robin over
    labels in sorted order, so that labels are balanced where the data allows and the rest is filled
    from the labels that still have examples."""
    taken: list[Example] = []
    labels = sorted(groups)
    while len(taken) < size:
        progressed = False
        for label in labels:
            if len(taken) == size:
                break
            if groups[label]:
                taken.append(groups[label].pop())
                progressed = True
        if not progressed:
            raise ValueError(f"not enough examples: wanted {size}, only {len(taken)} left")
    return taken


def shuffled_groups(examples: list[Example], rng: random.Random) -> dict[str, list[Example]]:
    """label -> its examples, each list shuffled with ``rng`` (labels in sorted order)."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.output, []).append(example)
    for label in sorted(groups):
        rng.shuffle(groups[label])
    return groups


def make_split(examples: list[Example], seed: int, sizes: Sizes) -> Split:
    """Shuffle with ``seed`` and cut a label-balanced pool, selection query set and test set, disjoint."""
    total = sizes.pool + sizes.select + sizes.test
    if total > len(examples):
        raise ValueError(f"the splits need {total} examples, the dataset has {len(examples)}")
    rng = random.Random(seed)
    groups = shuffled_groups(examples, rng)
    parts = []
    for size in (sizes.pool, sizes.select, sizes.test):
        part = balanced_take(groups, size)
        rng.shuffle(part)
        parts.append(part)
    return Split(*parts)


def label_options(examples: list[Example]) -> list[str]:
    return sorted({example.output for example in examples})


@dataclass(frozen=True)
class MethodSpec:
    """One row of the benchmark.

    kind "select": engine.select on the selection queries, one demo set scored on all test queries (with
        params.retrieve = r: k - r shared demos, and each test query's r nearest pool demos after them; the
        test INPUTS are sent as request.targets, never their labels).
    kind "per-query": engine.retrieve_per_query on the test queries (as retrieval users do); each
        test query gets its own demos. Uses the test INPUTS only, never their labels.
    kind "random": ``draws`` random selections per seed; the seed's figures are their means.
    """

    name: str
    kind: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    draws: int = 1
    note: str = ""

    def key_data(self) -> dict:
        # bench.quality sends evaluate_selected=False unless params say otherwise (part of what ran)
        return {"kind": self.kind, "method": self.method, "params": {"evaluate_selected": False, **self.params},
                "draws": self.draws}


def builtin_methods(random_draws: int = 5) -> dict[str, MethodSpec]:
    specs = [
        MethodSpec("random", "random", "random", draws=random_draws,
                   note=f"mean of {random_draws} random k-subsets per seed"),
        MethodSpec("bm25-per-query", "per-query", "bm25", note="k nearest pool demos per test query (BM25)"),
        MethodSpec("topk-embed-per-query", "per-query", "topk-embed",
                   note="k nearest pool demos per test query (embedding cosine)"),
        MethodSpec("topk-sentence-per-query", "per-query", "topk-sentence",
                   note="k nearest pool demos per test query (cosine of a sentence-embedding model, all-MiniLM-L6-v2)"),
        MethodSpec("bm25-set", "select", "bm25", note="one set for the selection query set (BM25)"),
        MethodSpec("topk-embed-set", "select", "topk-embed", note="one set for the selection query set (embeddings)"),
        MethodSpec("exact", "select", "exact", note="random k-subsets scored by exact inference (the reference the estimates save)"),
        MethodSpec("gradre", "select", "gradre", note="the paper's random ensemble: random subsets estimated from a few anchors"),
        MethodSpec("gradient", "select", "gradient", note="the default (params.strategy auto): the gate (per-query "
                   "retrieval returned without a search when it beats the search's start on the selection queries "
                   "by params.gate), else the gradient search (single swaps ranked by the start's gradient, "
                   "confirmed exactly on query samples), then the searched set, per-query retrieval by topk-embed "
                   "and topk-sentence and the two hybrids (the set's head, then per-query neighbours) run on "
                   "held-out pool demos and the best returned; retrieved demos in vote order (the label most of "
                   "them carry last), where the per-query baselines keep similarity order"),
    ]
    return {spec.name: spec for spec in specs}


def parse_variant(text: str) -> MethodSpec:
    """``NAME=METHOD[:key=value,key=value]`` -> a "select" MethodSpec; values are JSON when they parse."""
    if "=" not in text:
        raise ValueError(f"variant {text!r}: expected NAME=METHOD[:key=value,...]")
    name, rest = text.split("=", 1)
    method, _, param_text = rest.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, param_text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"variant {text!r}: parameter {item!r} is not key=value")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return MethodSpec(name.strip(), "select", method.strip(), params, note=f"{method} with {params}")


def record_key(payload: dict) -> str:
    """Content hash that identifies one (dataset, seed, method, setup) measurement for resuming."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def sizes_dict(sizes: Sizes) -> dict:
    return asdict(sizes)
