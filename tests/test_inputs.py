"""Bad input gets a clear error naming the field; the CLI end to end."""

import json
import os
import subprocess
import sys

import pytest

from iclsel.models.data import Example, InputError, read_jsonl
from iclsel.models.engine import Engine, SelectionRequest
from iclsel.models.loading import ModelNotFound, load_model


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load_model(str(tiny_model_dir), device="cpu"))


POOL = [Example(str(i), f"good film {i}", ["positive", "negative"][i % 2]) for i in range(4)]
QUERIES = [Example("q0", "bad plot", "negative"), Example("q1", "great acting", "positive")]


@pytest.mark.parametrize("change, field", [
    (dict(pool=[]), "pool"),
    (dict(queries=[]), "queries"),
    (dict(k=5), "k"),
    (dict(k=0), "k"),
    (dict(queries=[Example("q", "x", "neutral")], options=["positive", "negative"]), "queries[0].output"),
    (dict(options=["positive"]), "options"),
    (dict(template="Input: {input}"), "template"),
    (dict(method="magic"), "method"),
    (dict(option_score="max"), "option_score"),
    (dict(seed=-1), "seed"),
    (dict(method="gradient", params={"anchor_mode": "sideways"}), "params.anchor_mode"),
    (dict(method="gradient", params={"rounds": "many"}), "params.rounds"),
    (dict(method="gradient", params={"init": "clever"}), "params.init"),
    (dict(pool=[Example("a", "very long " * 400, "positive"), Example("b", "x", "negative")]), "k"),
])
def test_bad_requests_name_the_field(engine, change, field):
    request = SelectionRequest(**{**dict(pool=POOL, queries=QUERIES, k=2, method="random"), **change})
    with pytest.raises(InputError) as raised:
        engine.select(request)
    assert raised.value.field == field


def test_duplicate_ids_and_unreadable_files(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text('{"id": 1, "input": "a", "output": "x"}\n{"id": "1", "input": "b", "output": "y"}\n')
    with pytest.raises(InputError, match="duplicate id"):
        read_jsonl(path, "pool")
    path.write_text('{"input": "a", "output": "x"}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        read_jsonl(path, "pool")
    with pytest.raises(InputError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl", "pool")
    path.write_bytes(b'{"input": "\xff", "output": "x"}\n')
    with pytest.raises(InputError, match="cannot read"):
        read_jsonl(path, "pool")
    path.write_text('{"input": 3, "output": "x"}\n')
    with pytest.raises(InputError) as raised:
        read_jsonl(path, "pool")
    assert raised.value.field == "pool[0].input"


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="cannot load"):
        load_model(str(tmp_path / "nothing-here"), home=tmp_path)


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run_cli(args, tiny_model_dir, tmp_path):
    env = {**os.environ, "ICLSEL_MODEL": str(tiny_model_dir), "ICLSEL_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "iclsel.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_end_to_end(tiny_model_dir, tmp_path):
    pool = _write(tmp_path / "pool.jsonl", [{"input": f"good film {i}", "output": ["positive", "negative"][i % 2]} for i in range(6)])
    queries = _write(tmp_path / "q.jsonl", [{"id": "a", "input": "bad plot", "output": "negative"},
                                             {"id": "b", "input": "great", "output": "positive"}])
    done = run_cli(["select", "--pool", pool, "--queries", queries, "-k", "2", "--seed", "3", "-q",
                    "--param", "rounds=1", "--param", "candidates=2", "--param", "strategy=set"], tiny_model_dir,
                   tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["selected"]) == 2 and set(result["scores"]) == {str(i) for i in range(6)}
    assert result["diagnostics"]["checked_subsets"] >= 1 and result["passes"]["backward"] > 0
    assert set(result["timings"]) >= {"anchor", "exact", "total"}
    again = run_cli(["select", "--pool", pool, "--queries", queries, "-k", "2", "--seed", "3", "-q",
                     "--param", "rounds=1", "--param", "candidates=2", "--param", "strategy=set"], tiny_model_dir,
                    tmp_path)
    assert json.loads(again.stdout)["selected"] == result["selected"]

    bad = run_cli(["select", "--pool", pool, "--queries", queries, "-k", "9", "-q"], tiny_model_dir, tmp_path)
    assert bad.returncode == 2 and "k: k=9 is larger than the pool" in bad.stderr
    missing = run_cli(["select", "--pool", str(tmp_path / "nope.jsonl"), "--queries", queries], tiny_model_dir, tmp_path)
    assert missing.returncode == 2 and "pool: cannot read" in missing.stderr

    targets = _write(tmp_path / "t.jsonl", [{"input": "fine film"}, {"input": "awful"}, {"input": "so so"}])
    retrieved = run_cli(["select", "--pool", pool, "--queries", queries, "-k", "3", "-q", "--targets", targets,
                         "--param", "retrieve=2", "--param", "rounds=1"], tiny_model_dir, tmp_path)
    assert retrieved.returncode == 0, retrieved.stderr
    document = json.loads(retrieved.stdout)
    assert len(document["selected"]) == 1 and len(document["retrieved"]["targets"]) == 3
    no_input = _write(tmp_path / "t2.jsonl", [{"text": "x"}])
    bad_targets = run_cli(["select", "--pool", pool, "--queries", queries, "--targets", no_input, "-q"],
                          tiny_model_dir, tmp_path)
    assert bad_targets.returncode == 2 and "targets[0].input" in bad_targets.stderr
