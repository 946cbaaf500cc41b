"""Would an earlier layer retrieve as well as the last? topk-embed by the mean-pooled hidden state of layer L.

    python -m bench.experiments.embedding_layer --datasets sms bbc imdb --seeds 10 11 12 13

topk-embed embeds every pool demo and every query with a whole forward pass and pools the last hidden state;
an embedding taken after L of the model's N layers costs L/N of that pass (layer 0, the token embeddings, costs
none). Per dataset and dev seed it embeds the pool and the test queries once, keeps the hidden states of every
layer in LAYERS, and scores topk-embed per query (each test query's k nearest pool demos by cosine, best last,
in the natural prompt, as the quality benchmark scores the per-query baseline) at each layer; the last layer must
reproduce the journal's topk-embed-per-query record query for query. Appends one record per (dataset, seed) to
bench/experiments/results/embedding_layer.jsonl (a resume skips what is there) and prints the table: mean test
accuracy per layer and the difference from the last layer, paired per test query (95% bootstrap interval).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from iclsel.models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE
from iclsel.models.retrieval import cosine_similarity, top_k_ascending

from ..quality import BENCH_DIR, _evaluate, default_engine_factory
from .dev import (BASELINES, append_record, by_dataset, dev_parser, mean_accuracy, paired_difference, pending,
                  parse_dev_args, replay_main)

RESULTS = BENCH_DIR / "experiments" / "results" / "embedding_layer.jsonl"
LAYERS = (0, 8, 15)  # besides the last; SmolLM2-135M has 30


@torch.no_grad()
def layer_embeddings(engine, pool, texts: list[str], layers: list[int]) -> dict[int, torch.Tensor]:
    """Per layer, [N, d] mean-pooled hidden state of each text (layer 0: the token embeddings; the last: after
    the final norm, as ModelRunner.embed_texts pools it), from one forward pass per batch."""
    runner = engine._runner(engine.layout(pool, pool[:1], 1, None, DEFAULT_TEMPLATE, DEFAULT_SEPARATOR), lambda: None)
    token_lists = engine.model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(token_lists), runner.batch_size):
        ids, mask = runner._pad([t or [runner.pad_id] for t in token_lists[start:start + runner.batch_size]])
        hidden = runner.base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        weights = mask.unsqueeze(-1).to(hidden[0].dtype)
        for layer in layers:
            parts[layer].append(((hidden[layer] * weights).sum(1) / weights.sum(1)).float().cpu())
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def measure(engine, split, spec, options) -> dict:
    """Per layer (by name: "0", "8", ..., "last"), the test record of topk-embed per query at that layer."""
    pool, test = split.pool, split.test
    n_layers = engine.model.model.config.num_hidden_layers
    layers = [*LAYERS, n_layers]
    vectors = layer_embeddings(engine, pool, [d.input for d in pool] + [q.input for q in test], layers)
    out = {}
    for layer in layers:
        similarity = cosine_similarity(vectors[layer][:len(pool)], vectors[layer][len(pool):])  # [T, n]
        per_query = [[pool[i] for i in top_k_ascending(row, spec.k)] for row in similarity]
        tested = _evaluate(engine, per_query, split, spec.template, options)
        out["last" if layer == n_layers else str(layer)] = {"accuracy": tested["accuracy"],
                                                            "correct": tested["correct"]}
    return {"layers": out, "n_layers": n_layers}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["sms", "bbc", "imdb"], [10, 11, 12, 13])
    return replay_main(parse_dev_args(parser, argv), RESULTS, run, print_table)


def run(args, journal: dict) -> None:
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS, needs_default_run=False):
        started = time.perf_counter()
        measured = measure(new_engine(), split, spec, options)
        recorded = journal.get((dataset, seed, BASELINES["topk-embed"]))
        record = {"dataset": dataset, "seed": seed, **measured,
                  "last_matches_journal": None if recorded is None else
                  recorded["correct"] == measured["layers"]["last"]["correct"],
                  "seconds": round(time.perf_counter() - started, 1)}
        append_record(RESULTS, record)
        print(f"{dataset} {seed}: " + ", ".join(f"layer {name} {m['accuracy']:.3f}"
                                                for name, m in record["layers"].items())
              + f" (last layer as the journal's: {record['last_matches_journal']})", flush=True)


def print_table(records: list[dict], journal: dict) -> None:
    if not records:
        return
    names = list(records[0]["layers"])
    n_layers = records[0]["n_layers"]
    print("| dataset | seeds | " + " | ".join(f"layer {name} ({'%d' % n_layers if name == 'last' else name}/"
                                               f"{n_layers} of a pass)" for name in names)
          + " |\n|---|---|" + "---|" * len(names))
    for dataset, rows in by_dataset(records):
        for rec in rows:
            if rec["last_matches_journal"] is False:
                print(f"  {dataset} {rec['seed']}: the last layer differs from the journal's topk-embed per query")
        last = [np.array(rec["layers"]["last"]["correct"], float) for rec in rows]
        cells = []
        for name in names:
            got = [np.array(rec["layers"][name]["correct"], float) for rec in rows]
            cells.append(mean_accuracy(got) if name == "last" else f"{mean_accuracy(got)} ({paired_difference(got, last)})")
        print(f"| {dataset} | {' '.join(str(rec['seed']) for rec in rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
