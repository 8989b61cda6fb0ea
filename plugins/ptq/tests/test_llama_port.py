"""The MindSpore Llama port against an independent numpy forward, and greedy decoding on CPU."""

import numpy as np
import pytest
from mindspore import Tensor

from gscore.eval.perplexity import llama_forward, perplexity
from gscore.models.llama_helper import LlamaHelper
from gscore.testing.llama_reference import reference_logits


@pytest.mark.slow
def test_full_model_perplexity_matches_numpy_reference(smollm2, windows, make_llama):
    weights, config, _ = smollm2
    _, evaluation = windows
    net = make_llama(layers=config["num_layers"])
    ours = perplexity(llama_forward(net), evaluation)
    reference = perplexity(lambda ids: reference_logits(weights, config, ids), evaluation)
    assert abs(ours / reference - 1) < 0.01
    net.reset_cache()
    logits = net(Tensor(evaluation[:1]), 0).asnumpy()[0]
    np.testing.assert_allclose(logits, reference_logits(weights, config, evaluation[0]), atol=2e-3, rtol=1e-3)


@pytest.mark.slow
def test_greedy_decoding_with_the_kv_cache_says_paris(smollm2, make_llama):
    _, config, tokenizer = smollm2
    net = make_llama(layers=config["num_layers"])
    text = LlamaHelper(tokenizer).complete(net, "The capital of France is", max_new_tokens=2)
    assert text.startswith(" Paris")


def test_incremental_decoding_equals_a_full_forward(windows, make_llama):
    """Logits of token t from the cache path equal those of one full-sequence forward."""
    _, evaluation = windows
    net = make_llama(layers=2)
    ids = evaluation[:1, :12]
    net.reset_cache()
    full = net(Tensor(ids), 0).asnumpy()[0]
    net.reset_cache()
    prefix = net(Tensor(ids[:, :8]), 0).asnumpy()[0]
    steps = [net(Tensor(ids[:, t : t + 1]), t).asnumpy()[0, 0] for t in range(8, 12)]
    net.reset_cache()
    np.testing.assert_allclose(np.vstack([prefix, np.stack(steps)]), full, atol=1e-4, rtol=1e-4)
