"""Is the default's pick within its validation's noise of the best prompt it considered? (test seeds, report)

    python -m bench.experiments.hindsight --report-test-seeds --datasets imdb bbc sms sdg --seeds 0 1 2 3 4 5 6 7

The quality issue asks that the default never be worse than the best of the strategies it considered by more than
the noise of its own validation. Per test split of the regular run (the journal's default record: what RESULTS.md
reports) this puts every prompt the default weighed on the same test queries: where its gate returned a retrieval,
topk-embed and topk-sentence (the gate's two; the start is not a prompt it returns); where it searched, the five its
check ran (the set, topk-embed, hybrid, topk-sentence, hybrid-sentence). The test records come from the runs that
have them: the default's own pick, the searched set (`searched_set`), topk-embed per query (the same prompts as
auto's), hybrid_candidate.py's and sentence_hybrid.py's records (their shared demos must be the searched set's
head); what none has, topk-sentence in vote order (auto's order; the baseline keeps similarity order) and a
missing hybrid, is run here and appended to bench/experiments/results/hindsight.jsonl.

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

from iclsel.models.strategy import HYBRID, SENTENCE

from ..quality import BENCH_DIR, default_engine_factory
from . import hybrid_candidate, sentence_hybrid, vote_order
from .dev import (AutoView, append_measured, default_config, dev_parser, dev_splits, paired_difference,
                  parse_dev_args, read_records, records_by_split, searched_ids)

RESULTS = BENCH_DIR / "experiments" / "results" / "hindsight.jsonl"
GATE = ("topk-embed", SENTENCE)  # the prompts a gate return weighed
CHECK = ("set", "topk-embed", HYBRID, SENTENCE, sentence_hybrid.CANDIDATE)  # the check's five


def defaults(path: Path) -> list[dict]:
    """The journal's records of the default (gradient in the default configuration), in order, gate returns too."""
    return [r for r in read_records(path) if r["method"] == "gradient" and default_config(r)]


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
    measured: dict[tuple[str, int], dict]  # this script's

    @classmethod
    def load(cls, journal: Path) -> "Records":
        runs = defaults(journal)
        return cls({(r["dataset"], r["seed"]): r for r in runs},
                   {(r["dataset"], r["seed"]): r for r in runs if r["strategy"]["by"] != "gate" and searched_ids(r)},
                   {(r["dataset"], r["seed"], r["method"]): r for r in read_records(journal)
                    if r["method"] != "gradient" and default_config(r)},
                   hybrid_candidate.by_split(), records_by_split(sentence_hybrid.RESULTS), records_by_split(RESULTS))

    def tests(self, run: dict) -> dict[str, list[int]]:
        """Each prompt's correct [T] on the test queries of ``run``'s split, from the records that hold it: the run's
        pick, topk-embed per query, this script's, and where the run searched its set and the hybrids that share
        its head."""
        key, k = (run["dataset"], run["seed"]), run["k"]
        embed = self.baselines[(*key, "topk-embed-per-query")]["correct"]
        if run["strategy"]["chosen"] == "topk-embed" and embed != run["correct"]:
            print(f"  {key}: topk-embed per query does not reproduce the default's topk-embed answer")
        found = {name: c for name, c in self.measured.get(key, {}).items() if name in CHECK}
        if run["strategy"]["by"] != "gate":
            head = searched_ids(run)[:k - k // 2]
            if "searched_set" in run:
                found["set"] = run["searched_set"]["correct"]
            for name, records in ((HYBRID, self.hybrids), (sentence_hybrid.CANDIDATE, self.sentence_hybrids)):
                if key in records and records[key]["shared"] == head:
                    found[name] = records[key]["correct"]
        return {**found, "topk-embed": embed, run["strategy"]["chosen"]: run["correct"]}


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
        if default is None or (dataset, seed) in records.measured:
            continue
        missing = [name for name in considered(default) if name not in records.tests(default)]
        if not missing:
            continue

        def measure() -> dict:
            engine, found = new_engine(), {}
            if SENTENCE in missing:  # auto's topk-sentence: vote order
                voted = vote_order.measure(engine, split, spec, options, [SENTENCE], orders=("vote",))
                found[SENTENCE] = voted[f"{SENTENCE}/vote"]
            if HYBRID in missing:
                hybrid = hybrid_candidate.measure(engine, AutoView.of(split, options, default), spec, options,
                                                  default, spec.k // 2)
                if hybrid is not None:
                    found[HYBRID] = hybrid["correct"]
            return found

        record = append_measured(RESULTS, {"dataset": dataset, "seed": seed}, measure)
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
                tests = {**records.tests(skipped), **tests}
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
