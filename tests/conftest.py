import pytest

from iclsel.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + BPE tokenizer saved as a Hugging Face folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
