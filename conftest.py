"""Fixtures for every test directory (tests/, bench/tests/)."""

import os

import pytest

from iclsel.models.tiny import build_tiny_sentence_model


@pytest.fixture(scope="session", autouse=True)
def tiny_sentence_model_dir(tmp_path_factory):
    """A tiny random sentence model, made the ICLSEL_SENTENCE_MODEL of this session and of the services its tests
    start, so that topk-sentence retrieval never loads the default (tests/test_sentence_model.py loads that)."""
    from iclsel.settings import get_settings

    folder = build_tiny_sentence_model(tmp_path_factory.mktemp("tiny-sentence-model"))
    before = os.environ.get("ICLSEL_SENTENCE_MODEL")
    os.environ["ICLSEL_SENTENCE_MODEL"] = str(folder)
    get_settings.cache_clear()
    yield folder
    if before is None:
        os.environ.pop("ICLSEL_SENTENCE_MODEL", None)
    else:
        os.environ["ICLSEL_SENTENCE_MODEL"] = before
    get_settings.cache_clear()
