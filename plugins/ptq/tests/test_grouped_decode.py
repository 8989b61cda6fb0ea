"""Deployed SmolLM2 blocks run as linear-group operators give the same logits as the same
blocks run layer by layer, for every kind of deployed linear the presets make (weight-only
int8 and int4, static and dynamic A8W8 with rotation and a float prefix, an int8 KV cache,
an int8 output head), and the compiled decoder, which groups them, decodes the same tokens
(a float output head then runs on the float kernel: within float rounding); with its
preallocated caches each block runs as one operator, bit-identical to the groups."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor

import gscore
from gscore import PTQConfig, kernels
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.decoding import CompiledDecoder
from gscore_ptq.presets import preset

PRESETS = [("a16w8", {}), ("a16w4-g128", {}), ("a8w8-dynamic", {"head": "int8"}), ("a8w8-rotation-kv-int8", {"head": "int8"}), ("a8w4-gptq", {})]

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="linear groups need native kernels (GSCORE_KERNELS=portable or no compiler)")


def teacher_forced(run, prompt: np.ndarray, follow: list[int]) -> list[np.ndarray]:
    logits = [run(Tensor(prompt), 0).asnumpy()[:, -1]]
    for i, token in enumerate(follow):
        logits.append(run(Tensor(np.array([[token]], np.int32)), prompt.shape[1] + i).asnumpy()[:, -1])
    return logits


@pytest.mark.parametrize(("name", "extra"), PRESETS, ids=[f"{n}{'-int8-head' if e else ''}" for n, e in PRESETS])
def test_grouped_blocks_equal_layer_by_layer_blocks(make_llama, smollm2, windows, name, extra):
    _, _, tokenizer = smollm2
    calibration, evaluation = windows
    net = make_llama(2)
    algo = gscore.get("ptq")(PTQConfig(**preset(name, progress=False, **extra)))
    algo.apply(net, LlamaHelper(tokenizer), datasets=calibration)
    algo.convert(net)
    prompt, follow = evaluation[:1, :12], [int(t) for t in evaluation[0, 12:16]]
    net.reset_cache()
    layer_by_layer = teacher_forced(net, prompt, follow)
    net.reset_cache()
    assert net.group_linears() == 2
    assert (net.head_kernel is not None) == (not net.head_is_linear)  # a float head moves to the float kernel
    head_kernel, net.head_kernel = net.head_kernel, None  # the blocks alone first: bit-identical
    grouped = teacher_forced(net, prompt, follow)
    net.reset_cache()
    net.head_kernel = head_kernel
    for got, want in zip(grouped, layer_by_layer):
        np.testing.assert_array_equal(got, want)
    with CompiledDecoder(net, capacity=16) as decoder:
        assert decoder.grouped_blocks == 2  # already grouped: grouping again is harmless
        assert all(layer.block_op is not None for layer in net.model.layers)
        compiled = teacher_forced(decoder, prompt, follow)
    for got, want in zip(compiled, layer_by_layer):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        assert got.argmax() == want.argmax()
    with CompiledDecoder(net, capacity=16, fuse_blocks=False) as decoder:
        assert all(layer.block_op is None for layer in net.model.layers)
        operators_per_group = teacher_forced(decoder, prompt, follow)
    for got, want in zip(compiled, operators_per_group):
        np.testing.assert_array_equal(got, want)  # one operator per block runs the same functions
