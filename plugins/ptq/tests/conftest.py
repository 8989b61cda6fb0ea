"""Real SmolLM2 weights and Wikipedia windows, loaded once per test session."""

import mindspore as ms
import pytest

from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.models.llama import LlamaConfig, build_llama
from gscore.models.smollm2 import load_smollm2


@pytest.fixture(scope="session")
def smollm2():
    ms.runtime.launch_blocking()
    return load_smollm2()


@pytest.fixture(scope="session")
def windows(smollm2):
    """Calibration and evaluation windows of 64 tokens from the fixed article split."""
    _, _, tokenizer = smollm2
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), 64, 2)
    evaluation = token_windows(tokenizer, split_articles(articles, "evaluation"), 64, 2)
    return calibration, evaluation


@pytest.fixture
def make_llama(smollm2):
    """A fresh Llama with the real weights; ``layers`` keeps the first few for speed."""
    weights, config, _ = smollm2

    def make(layers: int = 4):
        return build_llama(LlamaConfig(**{**config, "num_layers": layers}), weights)

    return make
