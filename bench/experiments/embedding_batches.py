"""Does batching texts by length make the pool's embeddings cheaper? The same texts, batched as given and by length.

    python -m bench.experiments.embedding_batches --dataset imdb-tail --n 1000 --threads 1

The first n texts of a dataset (their inputs) through ModelRunner.embed_texts as strategy.Neighbours calls it, which
batches by length, and through the same method one batch at a time in the given order (what batches cost when
a batch pads to its longest text, whatever the others' lengths). The two run alternately, --repeats times each;
prints the median seconds of each, their ratio, the padded tokens each computes and the largest difference
between their embeddings; appends the record to results/embedding_batches.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from iclsel.models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE
from iclsel.models.engine import Engine
from iclsel.models.loading import load_model

from .. import data as bench_data
from .. import report
from ..protocol import load_examples
from ..quality import BENCH_DIR, engine_source_hash
from ..scale import TEMPLATES
from .dev import append_record

RESULTS = BENCH_DIR / "experiments" / "results" / "embedding_batches.jsonl"


def padded_tokens(lengths: list[int], batch_size: int) -> int:
    """Tokens computed when each batch of ``batch_size`` consecutive lists pads to its longest."""
    return sum(max(lengths[s:s + batch_size]) * len(lengths[s:s + batch_size])
               for s in range(0, len(lengths), batch_size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imdb-tail", choices=sorted(TEMPLATES))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    examples = load_examples(bench_data.ensure(args.dataset))[:args.n]
    model = load_model(args.model)
    engine = Engine(model)
    # the runner strategy.Neighbours embeds with (its layout only names the pad token)
    runner = engine._runner(engine.layout(examples, examples[:1], 1, None, DEFAULT_TEMPLATE, DEFAULT_SEPARATOR))
    texts, size = [e.input for e in examples], runner.batch_size

    def as_given() -> torch.Tensor:
        return torch.cat([runner.embed_texts(model.tokenizer, texts[s:s + size]) for s in range(0, len(texts), size)])

    def by_length() -> torch.Tensor:
        return runner.embed_texts(model.tokenizer, texts)

    seconds: dict[str, list[float]] = {"given order": [], "by length": []}
    embeddings = {}
    for _ in range(args.repeats):
        for name, embed in (("given order", as_given), ("by length", by_length)):
            started = time.perf_counter()
            embeddings[name] = embed()
            seconds[name].append(time.perf_counter() - started)
    lengths = [len(ids) or 1 for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    record = {"dataset": args.dataset, "n": len(texts), "batch_size": size, "seconds": seconds,
              "median_seconds": median, "ratio": median["by length"] / median["given order"],
              "tokens": sum(lengths), "padded_tokens": {"given order": padded_tokens(lengths, size),
                                                         "by length": padded_tokens(sorted(lengths), size)},
              "max_abs_difference": float((embeddings["by length"] - embeddings["given order"]).abs().max()),
              "torch_threads": torch.get_num_threads(), "engine_source": engine_source_hash(),
              "machine": report.machine_info()}
    print(f"{args.dataset}, {len(texts)} texts ({sum(lengths)} tokens), batches of {size}:")
    for name in seconds:
        print(f"  {name}: median {median[name]:.1f} s over {args.repeats}, "
              f"{record['padded_tokens'][name]} padded tokens")
    print(f"  ratio {record['ratio']:.3f}; largest embedding difference {record['max_abs_difference']:.2e}")
    append_record(RESULTS, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
