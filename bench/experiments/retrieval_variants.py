"""Would a better per-query retriever beat topk-embed and BM25? Two candidates for auto's per-query strategies,
scored like the benchmark's per-query baselines (each test query gets its own k demos, best last, natural prompt):

    rrf        reciprocal-rank fusion of the two retrievers: score = 1/(60 + rank by embedding) + 1/(60 + rank
               by BM25), the k highest
    bal-topk   label-balanced nearest by embedding: the nearest demo of every label, then the second nearest of
               every label, ... (labels taken in order of their nearest demo's similarity) until k
    minilm     the k nearest by a sentence-embedding model, all-MiniLM-L6-v2 (strategy "topk-sentence" with the
               default sentence model), in place of the default model's own hidden states
    rrf-sentence  reciprocal-rank fusion of the two embeddings auto retrieves by: score = 1/(60 + rank by the
               model's embedding) + 1/(60 + rank by the sentence model), the k highest

    python -m bench.experiments.retrieval_variants --datasets sms sdg --seeds 10 11 12 13 \
        --journal bench/results/quality_runs.jsonl

Dev seeds only (10 and above). With --journal, topk-embed and BM25 are read from the quality benchmark's
per-query records of the same dataset and seed where they exist (the same neighbours scored the same way;
marked "from_journal") and run here otherwise. Appends one record per (dataset, seed, variant) to
bench/experiments/results/retrieval_variants.jsonl (a resume skips what is there) and prints the table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from iclsel.models.inference import PassCounter
from iclsel.models.retrieval import top_k_ascending
from iclsel.models.strategy import Neighbours

from ..protocol import DATASET_SPECS
from ..quality import BENCH_DIR, _evaluate, default_engine_factory
from .dev import BASELINES, append_record, dev_splits, journal_records, paired_difference, read_records

RESULTS = BENCH_DIR / "experiments" / "results" / "retrieval_variants.jsonl"
VARIANTS = ("topk-embed", "bm25", "rrf", "bal-topk", "minilm", "rrf-sentence")
RRF_CONSTANT = 60


def ranks(similarity: np.ndarray) -> np.ndarray:
    """[T, n] similarity -> [T, n] rank of each pool demo for each text (0 = the most similar)."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(similarity.shape[1])[None, :].repeat(len(similarity), 0), axis=1)
    return rank


def label_balanced(similarity: np.ndarray, labels: list[str], k: int) -> list[list[int]]:
    """Per text: the nearest demo of each label, then the second nearest of each, ... until k; best last."""
    chosen = []
    for row in similarity:
        by_label: dict[str, list[int]] = {}
        for i in np.argsort(-row, kind="stable"):
            by_label.setdefault(labels[i], []).append(int(i))
        picked: list[int] = []
        for depth in range(max(len(ids) for ids in by_label.values())):
            layer = sorted((ids[depth] for ids in by_label.values() if depth < len(ids)), key=lambda i: -row[i])
            picked += layer[:k - len(picked)]
            if len(picked) == k:
                break
        chosen.append(sorted(picked, key=lambda i: row[i]))
    return chosen


def fused(*similarities: np.ndarray) -> np.ndarray:
    """[T, n] similarities by several retrievers -> [T, n] reciprocal-rank fusion score (higher: nearer)."""
    return sum(1.0 / (RRF_CONSTANT + ranks(similarity)) for similarity in similarities)


def neighbours(variant: str, embedding: np.ndarray, bm25: np.ndarray, labels: list[str], k: int,
               minilm: np.ndarray | None = None) -> list[list[int]]:
    """embedding, bm25, minilm: [T, n] similarities of the test queries to the pool -> per query its k demos, best
    last."""
    if variant == "minilm":
        return [top_k_ascending(row, k) for row in minilm]
    if variant == "topk-embed":
        return [top_k_ascending(row, k) for row in embedding]
    if variant == "bm25":
        return [top_k_ascending(row, k) for row in bm25]
    if variant == "rrf":
        return [top_k_ascending(row, k) for row in fused(embedding, bm25)]
    if variant == "rrf-sentence":
        return [top_k_ascending(row, k) for row in fused(embedding, minilm)]
    if variant == "bal-topk":
        return label_balanced(embedding, labels, k)
    raise ValueError(variant)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["imdb", "bbc", "sms", "sdg"], choices=sorted(DATASET_SPECS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12, 13])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--journal", type=Path, help="the quality benchmark's journal, to reuse its per-query runs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.seeds) < 10:
        parser.error("dev seeds only (10 and above)")
    journal = journal_records(args.journal) if args.journal else {}
    done = {(r["dataset"], r["seed"], r["variant"]) for r in read_records(RESULTS)}
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
        engine = new_engine()
        index = Neighbours(engine, split.pool, PassCounter())
        texts = [q.input for q in split.test]
        todo = [v for v in args.variants if (dataset, seed, v) not in done]
        if not todo:
            continue
        own = {v for v in todo if journal.get((dataset, seed, BASELINES.get(v))) is None}  # not in the journal
        embedding = (index.similarity(texts, "topk-embed")  # [T, n]
                     if own & {"topk-embed", "rrf", "bal-topk", "rrf-sentence"} else None)
        bm25 = index.similarity(texts, "bm25")  # [T, n]
        minilm = index.similarity(texts, "topk-sentence") if {"minilm", "rrf-sentence"} & set(todo) else None
        for variant in todo:
            known = journal.get((dataset, seed, BASELINES.get(variant)))
            if known is not None and len(known["correct"]) != len(split.test):  # another split size
                known = None
            started = time.perf_counter()
            if known is not None:
                scored = {"accuracy": known["accuracy"], "correct": known["correct"], "from_journal": True}
            else:
                ids = neighbours(variant, embedding, bm25, [d.output for d in split.pool], spec.k, minilm)
                demos = [[split.pool[i] for i in row] for row in ids]
                scored = _evaluate(engine, demos, split, spec.template, options)
            record = {"dataset": dataset, "seed": seed, "variant": variant, "accuracy": scored["accuracy"],
                      "correct": scored["correct"], "from_journal": bool(scored.get("from_journal")),
                      "seconds": round(time.perf_counter() - started, 1)}
            append_record(RESULTS, record)
            print(f"{dataset} {seed} {variant}: {record['accuracy']:.3f}", flush=True)
    print_table(read_records(RESULTS), args.variants)
    return 0


def print_table(records: list[dict], variants_shown: list[str] | None = None) -> None:
    """Per dataset, over the seeds where every variant ran: each variant's mean accuracy and, for the others,
    its difference from topk-embed with a paired 95% bootstrap interval (seeds and test queries resampled)."""
    by = {(r["dataset"], r["seed"], r["variant"]): r for r in records}
    variants = [v for v in VARIANTS if variants_shown is None or v in variants_shown]
    print("| dataset | seeds | " + " | ".join(variants) + " |\n|---|---|" + "---|" * len(variants))
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        seeds = sorted({s for d, s, _ in by if d == dataset and all((d, s, v) in by for v in variants)})
        if not seeds:
            continue
        cells = []
        for variant in variants:
            cell = f"{np.mean([by[(dataset, s, variant)]['accuracy'] for s in seeds]):.3f}"
            if variant != "topk-embed":
                cell += " (" + paired_difference([by[(dataset, s, variant)]["correct"] for s in seeds],
                                                 [by[(dataset, s, "topk-embed")]["correct"] for s in seeds]) + ")"
            cells.append(cell)
        print(f"| {dataset} | {' '.join(map(str, seeds))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
