"""``algo_args["head"] = "int8"``: SmolLM2's tied output head becomes its own int8 per-row layer
(the embedding lookup keeps the float table), close to the float head, refused by a helper
that cannot make one, and left float in the per-layer reference (streaming refuses it:
tests/test_streaming.py)."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import ConfigError, PTQConfig
from gscore.calib import NetworkHelper
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.quant_linear import QuantLinear
from gscore.quant import Granularity, QuantScheme, dequantize, quant_params, quantize

PTQ = gscore.get("ptq")


def logits(net, ids):
    net.reset_cache()
    out = net(Tensor(ids), 0).asnumpy()
    net.reset_cache()
    return out


def test_int8_head_is_the_tables_per_row_rtn(make_llama, smollm2, windows):
    weights, _, _ = smollm2
    _, evaluation = windows
    x = evaluation[:1, :32]
    net = make_llama(1)
    reference = logits(net, x)
    algo = PTQ(PTQConfig(algo_args={"head": "int8", "progress": False}))
    algo.convert(algo.apply(net, LlamaHelper()))
    head = net.lm_head
    assert isinstance(head, QuantLinear) and net.head_is_linear
    assert head.weight.dtype == ms.int8 and head.weight.shape == (49152, 576)
    table = weights["model.embed_tokens.weight"]
    np.testing.assert_array_equal(net.model.embed_tokens.embedding_table.asnumpy(), table)  # the lookup stays float
    scheme = QuantScheme(bits=8, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0)
    params = quant_params(table, scheme)
    codes = quantize(table, params)
    np.testing.assert_array_equal(head.weight.asnumpy(), codes)
    # logits of the quantized head: the float head's on the dequantized table
    hidden = Tensor(np.random.default_rng(0).standard_normal((4, 576)).astype(np.float32))
    expected = hidden.asnumpy() @ dequantize(codes, params).T
    np.testing.assert_allclose(head(hidden).asnumpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    got = logits(net, x)
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 0.01
    assert (got.argmax(-1) == reference.argmax(-1)).mean() > 0.9


def test_reference_network_keeps_a_float_linear_head(make_llama, windows):
    _, evaluation = windows
    x = evaluation[:1, :16]
    net = make_llama(1)
    before = logits(net, x)
    PTQ(PTQConfig(algo_args={"head": "int8", "progress": False})).prepare_reference(net, LlamaHelper())
    assert type(net.lm_head) is nn.Dense
    np.testing.assert_allclose(logits(net, x), before, rtol=1e-5, atol=1e-5)


def test_bad_head_value_names_the_choices():
    with pytest.raises(ConfigError, match=r"algo_args\['head'\] must be one of \['float', 'int8'\]"):
        PTQ(PTQConfig(algo_args={"head": "int4"}))


def test_generic_helper_cannot_make_a_head_and_says_so(make_llama):
    net = make_llama(1)
    with pytest.raises(gscore.MissingHelperMethodError, match=r"an int8 output head need.*lacks \['linear_head'\]"):
        PTQ(PTQConfig(algo_args={"head": "int8", "progress": False})).apply(net, NetworkHelper())
    assert not net.head_is_linear
