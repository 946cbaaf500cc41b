"""Can a gate before the search return the sentence model's retrieval?

    python -m bench.experiments.sentence_gate --datasets bbc sms imdb sdg --seeds 10 11 12 13 14 15

search_gate.py's gate with the sentence model among the retrievals. Before the search: the search's
label-balanced start and two per-query retrievals (topk-embed; topk-sentence) run on the selection queries. The
better retrieval is topk-embed unless topk-sentence answers at least auto's margin (strategy.SENTENCE_MARGIN of the
queries, rounded up) more; if its accuracy beats the start's by at least G, the gate skips the search and the held-out check
and returns it. Otherwise auto runs as it ships (sentence_hybrid.py's five-candidate replay).

Dev seeds only. Per split with a sentence_hybrid.py record it appends one record to
bench/experiments/results/sentence_gate.jsonl: the start's and both retrievals' correct [Q] on the selection
queries (the start and topk-embed from search_gate.py's record where it has one, checked to name the journal
run's anchor; topk-sentence measured here). The table replays the gate at several G (the pre-registered one
marked): a skip returns the per-query baseline's test record; passes as the experiments README says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iclsel.models.inference import PassCounter
from iclsel.models.layout import resolve_options
from iclsel.models.strategy import SENTENCE, Check
from iclsel.models.strategy import gate as strategy_gate

from ..quality import BENCH_DIR, default_engine_factory
from . import hybrid_candidate, minilm_candidate, search_gate, sentence_hybrid
from .dev import (EMBEDS_TARGETS, append_measured, by_dataset, dev_parser, mean_accuracy, paired_difference, parse_dev_args,
                  pending, print_replayed_against_baselines, read_records, records_by_split,
                  replay_main)

RESULTS = BENCH_DIR / "experiments" / "results" / "sentence_gate.jsonl"
RETRIEVALS = ("topk-embed", SENTENCE)  # the gate's retrievals: the first unless the second wins by the margin
GATES = (0.25, 0.3125, 0.375, 0.5)
DECIDING = 0.375  # pre-registered (experiments README)
MARGIN = 2  # auto's margin on 32 held-out demos (sentence_hybrid.replay)


def measure(engine, split, spec, options, seed: int, earlier: dict | None) -> dict:
    """The start's and both retrievals' correct [Q] on the selection queries (the start's and topk-embed's from
    search_gate's ``earlier`` record when there is one)."""
    if earlier is None:
        return search_gate.measure(engine, split, spec, options, seed, RETRIEVALS)
    resolved = resolve_options(split.pool, split.select, options)
    sentence = search_gate.retrieval_checks(engine, split, spec, resolved, (SENTENCE,), PassCounter())[SENTENCE]
    kept = {name: earlier["correct"][name] for name in ("start", "topk-embed")}
    return {**{key: earlier[key] for key in ("start", "rows_per_query", "embedded")},
            "correct": {**kept, SENTENCE: sentence.correct.tolist()}}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "imdb", "sdg"], list(range(10, 22)))
    parser.add_argument("--margin", type=int, default=None, help=(
        "answers by which topk-sentence must lead topk-embed to be the gate's retrieval (default: the engine's, "
        "strategy.SENTENCE_MARGIN of the queries rounded up; a large one: the gate on topk-embed alone)"))
    parser.add_argument("--defer", type=int, default=None, help=(
        "the gate searches (and the check chooses) whenever topk-sentence and topk-embed answer within this many "
        "queries of each other (default: never)"))
    args = parse_dev_args(parser, argv)
    return replay_main(args, RESULTS, run, lambda records, journal: print_table(
        [r for r in records if r["dataset"] in args.datasets and r["seed"] in args.seeds], journal, args.margin,
        args.defer))


def run(args, journal: dict) -> None:
    earlier = records_by_split(search_gate.RESULTS)
    replayable = {(r["dataset"], r["seed"]) for r in read_records(sentence_hybrid.RESULTS)}
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in pending(args, journal, RESULTS):
        if (dataset, seed) not in replayable:
            continue
        anchor = journal[(dataset, seed, "gradient")]["notes"].get("anchor")

        def measured() -> dict:
            found = measure(new_engine(), split, spec, options, seed, earlier.get((dataset, seed)))
            return {**found, "same_start": anchor == found["start"]}

        record = append_measured(RESULTS, {"dataset": dataset, "seed": seed}, measured)
        print(f"{dataset} {seed}: " + ", ".join(f"{name} {np.mean(c):.3f}" for name, c in record["correct"].items())
              + f" (same start as the run: {record['same_start']})", flush=True)


def exact_passes(record: dict) -> int:
    """What `exact` spends on the split of ``record``: its 64 subsets run on every selection query."""
    return 64 * record["rows_per_query"] * len(record["correct"]["start"])


def gate(record: dict, g: float, margin: int | None = None, defer: int | None = None) -> str | None:
    """The retrieval the gate returns without searching (None: it searches): the engine's rule (strategy.gate) on
    the recorded answers (losses are not recorded; the rule does not read them); with ``margin``, topk-sentence is
    the better retrieval only when it answers that many queries more than topk-embed; with ``defer``, the gate
    searches whenever the two retrievals answer within ``defer`` queries of each other (the check chooses)."""
    checks = {name: Check(name, np.array(c, float), np.zeros(len(c))) for name, c in record["correct"].items()}
    retrievals = [checks[name] for name in RETRIEVALS]
    embed, sentence = retrievals
    if defer is not None and abs(sentence.correct.sum() - embed.correct.sum()) <= defer:
        return None
    if margin is not None:
        retrievals = [sentence if sentence.correct.sum() - embed.correct.sum() >= margin else embed]
    returned = strategy_gate(checks["start"], retrievals, g)
    return returned and returned.strategy


def gated(record: dict, shipped: dict, g: float, tests: dict, targets: int, ran_gate: bool = False,
          margin: int | None = None, defer: int | None = None) -> dict:
    """Auto with the gate on this split: the pick, its test record's answers and the selection passes (``ran_gate``:
    the journal's run let through by the gate, its passes the gate's already)."""
    rows = record["rows_per_query"] * len(record["correct"]["start"])  # one run of a prompt per selection query
    skipped = gate(record, g, margin, defer)
    if skipped is not None:  # the start's and both retrievals' runs, the pool's and queries' embeddings, the targets'
        passes = 3 * rows + record["embedded"] + (targets if skipped == "topk-embed" else 0)
        return {"strategy": skipped, "correct": tests[skipped]["correct"], "passes": passes}
    embedded = shipped["strategy"] in EMBEDS_TARGETS  # the answer embedded the queries already
    # the start's run (the search runs it again in its anchor pass) and both retrievals', and the queries' embeddings
    passes = shipped["passes"] + (0 if ran_gate else 3 * rows + (0 if embedded else len(record["correct"]["start"])))
    return {"strategy": None, "correct": shipped["correct"], "passes": passes}


@dataclass
class GatedSplit:
    """A split as the gate's replays need it: auto as it ships there (the five-candidate replay's pick), the per-query
    retrievals' test records, the targets' count and whether the journal's run already ran the gate."""
    shipped: dict
    tests: dict[str, dict]
    targets: int
    ran_gate: bool

    @classmethod
    def of(cls, dataset: str, seed: int, journal: dict, hybrids: dict, minilms: dict, shipped_records: dict
           ) -> "GatedSplit":
        shipped = sentence_hybrid.replayed_default(shipped_records[(dataset, seed)], journal, hybrids, minilms, MARGIN)
        tests = {"topk-embed": journal[(dataset, seed, "topk-embed-per-query")], SENTENCE: minilms[(dataset, seed)]}
        return cls(shipped, tests, len(tests["topk-embed"]["correct"]),
                   "gate" in journal[(dataset, seed, "gradient")].get("timings", {}))

    def auto(self, record: dict, g: float = DECIDING, margin: int | None = None, defer: int | None = None) -> dict:
        """Auto with the gate at ``g`` deciding on ``record``'s answers (gated)."""
        return gated(record, self.shipped, g, self.tests, self.targets, self.ran_gate, margin, defer)


def gated_splits(dataset: str, rows: list[dict], journal: dict) -> list[GatedSplit]:
    """The GatedSplit of each of ``rows`` (sentence_gate records of ``dataset``)."""
    hybrids = hybrid_candidate.by_split()
    minilms = records_by_split(minilm_candidate.RESULTS)
    shipped_records = records_by_split(sentence_hybrid.RESULTS)
    return [GatedSplit.of(dataset, rec["seed"], journal, hybrids, minilms, shipped_records) for rec in rows]


def print_table(records: list[dict], journal: dict, margin: int | None = None, defer: int | None = None) -> None:
    """Per dataset and G: the seeds skipped, auto's mean test accuracy with the gate (topk-sentence held to
    ``margin`` answers over topk-embed, when given), its difference from auto as it ships (paired per test query,
    95% bootstrap interval) and the mean selection passes as a share of exact's."""
    print("| dataset | seeds | G | skips (seed: retrieval) | auto with the gate | minus auto | "
          "passes / exact's (auto) |\n|---|---|---|---|---|---|---|")
    replayed = {}
    for dataset, rows in by_dataset(records):
        for rec in rows:
            if not rec["same_start"]:
                print(f"  {dataset} {rec['seed']}: the start differs from the run's anchor")
        print(f"  {dataset}, per seed: start / topk-embed / topk-sentence on the selection queries: " + "; ".join(
            f"{rec['seed']} " + "/".join(f"{np.mean(rec['correct'][n]):.2f}" for n in ("start", *RETRIEVALS))
            for rec in rows))
        splits = gated_splits(dataset, rows, journal)
        shipped = [split.shipped for split in splits]
        exact = [exact_passes(rec) for rec in rows]
        base = [np.array(s["correct"], float) for s in shipped]
        before = np.mean([s["passes"] / e for s, e in zip(shipped, exact)])
        for g in GATES:
            mine = [split.auto(rec, g, margin, defer) for rec, split in zip(rows, splits)]
            got = [np.array(m["correct"], float) for m in mine]
            skips = " ".join(f"{rec['seed']}:{m['strategy']}" for rec, m in zip(rows, mine) if m["strategy"]) or "none"
            spent = np.mean([m["passes"] / e for m, e in zip(mine, exact)])
            if g == DECIDING:
                replayed[dataset] = [{"seed": rec["seed"], "accuracy": float(np.mean(m["correct"])),
                                      "correct": m["correct"], "passes": m["passes"],
                                      "strategy": (m["strategy"] + " (gate)") if m["strategy"] else s["strategy"]}
                                     for rec, m, s in zip(rows, mine, shipped)]
            mark = " (pre-registered)" if g == DECIDING else ""
            print(f"| {dataset} | {rows[0]['seed']}-{rows[-1]['seed']} ({len(rows)}) | {g:.3f}{mark} | {skips} | "
                  f"{mean_accuracy(got)} | {paired_difference(got, base)} | {spent:.2f} ({before:.2f}) |")
    print_replayed_against_baselines(f"auto with the gate at {DECIDING}", replayed, journal)


if __name__ == "__main__":
    raise SystemExit(main())
