"""Named models from PyPI packages: a GGUF in chunks is joined whole and checked against its pinned sha256."""

import hashlib
import os

import pytest

from iclsel.models.loading import NAMED_MODELS, ModelNotFound, PackagedModel, load_model, packaged_gguf

CHUNKS = [b"GGUF" + bytes(range(256)) * 40, b"second chunk " * 300, b"end"]


@pytest.fixture
def chunk_packages(tmp_path, monkeypatch):
    """Three importable packages on sys.path, each holding one chunk as data/model.gguf.partNN (as the Gemma 3
    packages do), and the model that names them."""
    site = tmp_path / "site"
    packages = []
    for index, chunk in enumerate(CHUNKS):
        module = f"iclsel_test_chunk{index}"
        (site / module / "data").mkdir(parents=True)
        (site / module / "__init__.py").write_text("")
        (site / module / "data" / f"model.gguf.part{index:02d}").write_bytes(chunk)
        packages.append((f"{module.replace('_', '-')}==1.0", module, f"data/model.gguf.part{index:02d}"))
    monkeypatch.syspath_prepend(str(site))
    sha256 = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    return PackagedModel("test-model", tuple(packages), "model.gguf", sha256)


def test_chunks_are_joined_once_in_order_and_checked(chunk_packages, tmp_path):
    home = tmp_path / "home"
    path = packaged_gguf(chunk_packages, home, install=False)
    assert path == home / "models" / "model.gguf" and path.read_bytes() == b"".join(CHUNKS)
    assert os.listdir(home / "models") == ["model.gguf"]  # no partial file left beside it
    stamp = path.stat().st_mtime_ns
    assert packaged_gguf(chunk_packages, home, install=False) == path and path.stat().st_mtime_ns == stamp


def test_a_damaged_join_is_replaced_and_wrong_chunks_are_refused(chunk_packages, tmp_path):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "model.gguf").write_bytes(CHUNKS[0])  # damaged since it was joined
    assert packaged_gguf(chunk_packages, home, install=False).read_bytes() == b"".join(CHUNKS)
    other = PackagedModel("test-model", chunk_packages.packages, "other.gguf", "0" * 64)
    with pytest.raises(ModelNotFound, match="not the pinned"):
        packaged_gguf(other, home, install=False)
    assert sorted(os.listdir(home / "models")) == ["model.gguf"]  # nothing written under the refused name


def test_a_missing_chunk_package_is_a_clear_error(tmp_path):
    missing = PackagedModel("test-model", (("iclsel-no-such-chunk==1.0", "iclsel_no_such_chunk", "data/x"),),
                            "x.gguf", "0" * 64)
    with pytest.raises(ModelNotFound, match="iclsel-no-such-chunk==1.0 is not installed"):
        packaged_gguf(missing, tmp_path, install=False)


def test_the_names_users_can_give():
    assert NAMED_MODELS["default"] == NAMED_MODELS["smollm2-135m"]
    gemma = NAMED_MODELS["gemma3-270m"]
    assert len(gemma.packages) == 4 and gemma.sha256 is not None
    assert [relative for _, _, relative in gemma.packages] == [f"data/{gemma.gguf}.part{i:02d}" for i in range(4)]


@pytest.mark.slow
def test_gemma3_loads_by_name():
    model = load_model("gemma3-270m", device="cpu")
    assert model.name == "gemma-3-270m-q4_k_m"
    assert model.tokenizer("Sentiment: positive")["input_ids"][0] == model.tokenizer.bos_token_id
