import pytest

from iclsel.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + BPE tokenizer saved as a Hugging Face folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """The tiny model loaded once (float32, CPU); modules that need another dtype define their own ``tiny``."""
    from iclsel.models.loading import load_model

    return load_model(str(tiny_model_dir), device="cpu")
