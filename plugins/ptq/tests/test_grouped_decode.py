"""Deployed SmolLM2 blocks run as linear-group operators give the same logits as the same
blocks run layer by layer, for every kind of deployed linear the presets make (weight-only
int8 and int4, static and dynamic A8W8 with rotation and a float prefix, an int8 KV cache,
an int8 output head), and the compiled decoder, which groups them, decodes the same tokens
(a float output head then runs on the float kernel: within float rounding); with its
preallocated caches each block runs as one operator, bit-identical to the groups, and a
single-token step runs those operators' kernels without the graph, bit-identical again."""

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


def deployed(make_llama, smollm2, windows, name: str, extra: dict):
    """Two real SmolLM2 blocks deployed with preset ``name``, a 12-token prompt and 4 tokens to follow it."""
    _, _, tokenizer = smollm2
    calibration, evaluation = windows
    net = make_llama(2)
    algo = gscore.get("ptq")(PTQConfig(**preset(name, progress=False, **extra)))
    algo.apply(net, LlamaHelper(tokenizer), datasets=calibration)
    algo.convert(net)
    return net, evaluation[:1, :12], [int(t) for t in evaluation[0, 12:16]]


@pytest.mark.parametrize(("name", "extra"), PRESETS, ids=[f"{n}{'-int8-head' if e else ''}" for n, e in PRESETS])
def test_grouped_blocks_equal_layer_by_layer_blocks(make_llama, smollm2, windows, name, extra):
    net, prompt, follow = deployed(make_llama, smollm2, windows, name, extra)
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
        rotated = net.model.entry_rotation is not None or net.model.exit_rotation is not None
        assert (decoder.native is None) == rotated  # single-token steps skip the graph where it can run them
        compiled = teacher_forced(decoder, prompt, follow)
    for got, want in zip(compiled, layer_by_layer):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        assert got.argmax() == want.argmax()
    with CompiledDecoder(net, capacity=16, fuse_blocks=False) as decoder:
        assert all(layer.block_op is None for layer in net.model.layers)
        operators_per_group = teacher_forced(decoder, prompt, follow)
    for got, want in zip(compiled, operators_per_group):
        np.testing.assert_array_equal(got, want)  # one operator per block runs the same functions


@pytest.mark.parametrize("name", ["a16w4-g128", "a8w8-dynamic"])
def test_native_steps_equal_the_graph_and_read_parameters_given_new_storage(make_llama, smollm2, windows, name):
    """Single-token steps without the graph: the same logits bit for bit; after a parameter gets
    new storage (as set_data or a checkpoint load may give it) they read the new values."""
    net, prompt, follow = deployed(make_llama, smollm2, windows, name, {})

    def decode(native_steps: bool) -> list[np.ndarray]:
        with CompiledDecoder(net, capacity=16, native_steps=native_steps) as decoder:
            assert decoder.native is not None
            return teacher_forced(decoder, prompt, follow)

    graph = decode(False)
    for got, want in zip(decode(True), graph):
        np.testing.assert_array_equal(got, want)
    weight = net.model.layers[1].post_attention_layernorm.weight
    with CompiledDecoder(net, capacity=16) as decoder:  # its native step holds views of the parameters now
        before = weight.data_ptr()
        weight.set_data(Tensor(weight.asnumpy() * 1.5))
        assert weight.data_ptr() != before
        native = teacher_forced(decoder, prompt, follow)
    graph_after = decode(False)
    assert not np.array_equal(graph_after[-1], graph[-1])
    for got, want in zip(native, graph_after):
        np.testing.assert_array_equal(got, want)
    with CompiledDecoder(net, capacity=16) as decoder:
        decoder(Tensor(prompt), 0)
        with pytest.raises(ValueError, match=r"token id 49152 is outside the vocabulary \[0, 49152\)"):
            decoder(Tensor(np.array([[49152]], np.int32)), prompt.shape[1])
