"""Is the default's pick within its validation's noise of the best prompt it considered? (test seeds, report)

    python -m bench.experiments.hindsight --report-test-seeds --datasets imdb bbc sms sdg --seeds 0 1 2 3 4 5 6 7

The quality issue asks that the default never be worse than the best of the strategies it considered by more than
the noise of its own validation. Per test split of the regular run (the journal's default record: what RESULTS.md
reports) this puts every prompt the default weighed on the same test queries: where its gate returned a retrieval,
topk-embed and topk-sentence (the gate's two; the start is not a prompt it returns); where it searched, the five its
check ran (the set, topk-embed, hybrid, topk-sentence, hybrid-sentence). The test records come from the runs that
have them: the default's own pick, the searched set (`searched_set`), sentence_hybrid.py's records (their shared
demos must be the searched set's head), and for a default whose auto embeds at the last layer topk-embed per query
(the same prompts as auto's) and hybrid_candidate.py's records. What none has is run here and appended to
bench/experiments/results/hindsight.jsonl: topk-sentence in vote order (auto's order; the baseline keeps
similarity order), a missing hybrid, and for a default whose auto embeds at an earlier layer (`auto_layer`: 8 on
SmolLM2-135M) its topk-embed and hybrid with neighbours at that layer, topk-embed measured even where the default
returned it, as a check that the script reproduces the default's answer.

Printed per dataset: the default against the best prompt it considered, split by split in hindsight (the oracle),
with the splits where its shortfall on the test queries exceeds the half-width of the interval its result reports
for its pick's lead (`strategy.margin_ci95`: its validation's own noise); then against each fixed strategy (the
same prompt kind on every split) where the records cover every seed (where the gate returned a retrieval, the set
and hybrids of the search it skipped: the last earlier run that searched). The reading, fixed once the records
already held had been tabulated, before this script's runs: a split is outside its noise when the shortfall exceeds
that half-width; a dataset, when the default's paired interval against a fixed strategy or the oracle lies wholly
below 0. Test seeds are reported, never used to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iclsel.models.inference import PassCounter
from iclsel.models.strategy import HYBRID, SENTENCE, Neighbours

from ..quality import BENCH_DIR, _evaluate, default_engine_factory
from . import hybrid_candidate, sentence_hybrid, vote_order
from .dev import (AutoView, append_measured, default_config, dev_parser, dev_splits, paired_difference,
                  parse_dev_args, read_records, records_by_split, searched_ids)

RESULTS = BENCH_DIR / "experiments" / "results" / "hindsight.jsonl"
GATE = ("topk-embed", SENTENCE)  # the prompts a gate return weighed
CHECK = ("set", "topk-embed", HYBRID, SENTENCE, sentence_hybrid.CANDIDATE)  # the check's five
LAYERED = ("topk-embed", HYBRID)  # the prompts whose neighbours come from the language model, at auto's layer
# auto's layer of the journal's first engine that had one, whose records do not name it (later records: auto_layer)
FIRST_LAYERED = {"b2c30fd6fac6a456": 8}


def defaults(path: Path) -> list[dict]:
    """The journal's records of the default (gradient in the default configuration), in order, gate returns too."""
    return [r for r in read_records(path) if r["method"] == "gradient" and default_config(r)]


def auto_layer(run: dict) -> int | None:
    """The layer after which the run's auto embedded for its language-model neighbours (None: the last)."""
    return run["auto_layer"] if "auto_layer" in run else FIRST_LAYERED.get(run.get("engine_source"))


def considered(run: dict) -> tuple[str, ...]:
    """The prompts the default weighed on a split: the gate's two retrievals, or the check's five."""
    return GATE if run["strategy"]["by"] == "gate" else CHECK


@dataclass
class Records:
    """Every record that holds a prompt's answers on a test split."""
    runs: dict[tuple[str, int], dict]  # the last default record: gate returns included, what RESULTS.md reports
    searched: dict[tuple[str, int], dict]  # the last default record that searched (where the gate returned: the
    # search it skipped, an earlier engine's run of the same search)
    baselines: dict[tuple[str, int, str], dict]
    hybrids: dict[tuple[str, int], dict]  # hybrid_candidate.py
    sentence_hybrids: dict[tuple[str, int], dict]  # sentence_hybrid.py
    measured: dict[tuple[str, int], list[dict]]  # this script's, in order

    @classmethod
    def load(cls, journal: Path) -> "Records":
        runs = defaults(journal)
        return cls({(r["dataset"], r["seed"]): r for r in runs},
                   {(r["dataset"], r["seed"]): r for r in runs if r["strategy"]["by"] != "gate" and searched_ids(r)},
                   {(r["dataset"], r["seed"], r["method"]): r for r in read_records(journal)
                    if r["method"] != "gradient" and default_config(r)},
                   hybrid_candidate.by_split(), records_by_split(sentence_hybrid.RESULTS), cls.by_split(RESULTS))

    @staticmethod
    def by_split(path: Path) -> dict[tuple[str, int], list[dict]]:
        out: dict[tuple[str, int], list[dict]] = {}
        for record in read_records(path):
            out.setdefault((record["dataset"], record["seed"]), []).append(record)
        return out

    def measured_for(self, run: dict) -> dict[str, list[int]]:
        """This script's answers that hold for ``run``: the language model's neighbours only at its auto's layer
        (a record with no layer measured the last)."""
        layer, found = auto_layer(run), {}
        for record in self.measured.get((run["dataset"], run["seed"]), []):
            found.update({name: record[name] for name in CHECK
                          if name in record and (name not in LAYERED or record.get("layer") == layer)})
        return found

    def tests(self, run: dict) -> dict[str, list[int]]:
        """Each prompt's correct [T] on the test queries of ``run``'s split, from the records that hold it: the run's
        pick, this script's, topk-embed per query where auto embedded at the last layer, and where the run searched
        its set and the hybrids that share its head (hybrid_candidate.py's at the last layer only)."""
        key, k, chosen = (run["dataset"], run["seed"]), run["k"], run["strategy"]["chosen"]
        last_layer = auto_layer(run) is None
        found = self.measured_for(run)
        if last_layer:
            found["topk-embed"] = self.baselines[(*key, "topk-embed-per-query")]["correct"]
        if chosen in found and found[chosen] != run["correct"]:
            print(f"  {key}: the measured {chosen} does not reproduce the default's answer")
        if run["strategy"]["by"] != "gate":
            head = searched_ids(run)[:k - k // 2]
            if "searched_set" in run:
                found["set"] = run["searched_set"]["correct"]
            sources = ((HYBRID, self.hybrids),) if last_layer else ()
            for name, records in (*sources, (sentence_hybrid.CANDIDATE, self.sentence_hybrids)):
                if key in records and records[key]["shared"] == head:
                    found[name] = records[key]["correct"]
        return {**found, chosen: run["correct"]}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["imdb", "bbc", "sms", "sdg"], list(range(8)))
    args = parse_dev_args(parser, argv)
    if not args.table_only:
        run(args)
    print_table(Records.load(args.journal), args.datasets, args.seeds)
    return 0


def run(args) -> None:
    """Per split with no record here, measure the considered prompts no other record holds."""
    records = Records.load(args.journal)
    new_engine, _ = default_engine_factory("default", args.threads)
    for dataset, spec, options, seed, split in dev_splits(args.datasets, args.seeds):
        default = records.runs.get((dataset, seed))
        if default is None:
            continue
        layer = auto_layer(default)
        missing = [name for name in considered(default) if name not in records.tests(default)]
        if layer is not None and "topk-embed" not in records.measured_for(default) and "topk-embed" not in missing:
            missing.append("topk-embed")  # the default returned it: measured to check the script reproduces it
        if not missing:
            continue

        def measure() -> dict:
            engine, found = new_engine(), {}
            neighbours = Neighbours(engine, split.pool, PassCounter(), layer=layer)
            if SENTENCE in missing:  # auto's topk-sentence: vote order
                voted = vote_order.measure(engine, split, spec, options, [SENTENCE], orders=("vote",))
                found[SENTENCE] = voted[f"{SENTENCE}/vote"]
            if "topk-embed" in missing:  # only at an earlier layer: the baseline is the last layer's
                nearest = neighbours.nearest([q.input for q in split.test], "topk-embed", spec.k)
                found["topk-embed"] = _evaluate(engine, [[split.pool[i] for i in ids] for ids in nearest], split,
                                                spec.template, options)["correct"]
            if HYBRID in missing:  # the search ran: the hybrid shares its set's head
                view = AutoView.of(split, options, default)
                if layer is not None:
                    found[HYBRID] = hybrid_candidate.hybrid_test(engine, view, spec, options, neighbours,
                                                                 spec.k // 2)["correct"]
                else:
                    hybrid = hybrid_candidate.measure(engine, view, spec, options, default, spec.k // 2)
                    if hybrid is not None:
                        found[HYBRID] = hybrid["correct"]
            return found

        key = {"dataset": dataset, "seed": seed, "engine_source": default.get("engine_source"), "layer": layer}
        record = append_measured(RESULTS, key, measure)
        print(f"{dataset} {seed}: " + ", ".join(f"{name} {np.mean(c):.3f}" for name, c in record.items()
                                                 if isinstance(c, list)), flush=True)


def print_table(records: Records, datasets: list[str], seeds: list[int]) -> None:
    """The default against the best considered prompt per split (the oracle), then against each fixed strategy."""
    print("| dataset | seeds | default | best considered, per split in hindsight | default minus it [95% CI] | "
          "splits it missed the best by (seed: pick, points; its interval's half-width) | outside its noise |\n"
          "|---|---|---|---|---|---|---|")
    fixed_rows = []
    for dataset in datasets:
        splits = [records.runs[(dataset, s)] for s in seeds if (dataset, s) in records.runs]
        picks, oracle, missed, outside, fixed = [], [], [], 0, {}
        for default in splits:
            seed, tests = default["seed"], records.tests(default)
            lacking = [name for name in considered(default) if name not in tests]
            if lacking:
                print(f"  {dataset} {seed}: no test record of {', '.join(lacking)}")
            accuracy = {name: float(np.mean(tests[name])) for name in considered(default) if name in tests}
            best = max(accuracy, key=accuracy.get)
            picks.append(np.array(default["correct"], float))
            oracle.append(np.array(tests[best], float))
            short = accuracy[best] - picks[-1].mean()
            low, high = default["strategy"]["margin_ci95"]
            if short > 0:
                outside += short > (high - low) / 2
                missed.append(f"{seed}: {default['strategy']['chosen']} for {best}, {100 * short:.1f} "
                              f"({100 * (high - low) / 2:.1f}){' *' if short > (high - low) / 2 else ''}")
            skipped = records.searched.get((dataset, seed)) if default["strategy"]["by"] == "gate" else None
            if skipped is not None:  # the set and hybrids of the search the gate skipped: fixed strategies only
                earlier = records.tests(skipped)  # its language-model neighbours only where at the same layer
                if auto_layer(skipped) != auto_layer(default):
                    earlier = {name: c for name, c in earlier.items() if name not in LAYERED}
                tests = {**earlier, **tests}
            for name in CHECK:
                fixed.setdefault(name, []).append(tests.get(name))
        print(f"| {dataset} | {' '.join(str(r['seed']) for r in splits)} | {np.mean([p.mean() for p in picks]):.3f} "
              f"| {np.mean([o.mean() for o in oracle]):.3f} | {paired_difference(picks, oracle)} | "
              f"{'; '.join(missed) or 'none'} | {outside} of {len(splits)} |")
        fixed_rows += [(dataset, name, picks, [np.array(c, float) for c in per_seed])
                       for name, per_seed in fixed.items() if all(c is not None for c in per_seed)]
    print("\n| dataset | fixed strategy (on every seed) | its mean | default minus it [95% CI] |\n|---|---|---|---|")
    for dataset, name, picks, per_seed in fixed_rows:
        print(f"| {dataset} | {name} | {np.mean([c.mean() for c in per_seed]):.3f} | "
              f"{paired_difference(picks, per_seed)} |")


if __name__ == "__main__":
    raise SystemExit(main())
