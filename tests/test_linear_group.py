"""Linear-group operators: several deployed layers on one input, with the norm before and the
RoPE / residual add / SiLU gate after, computed by one native operator.

The operator runs the functions the separate operators run, in the same order, so every
result must equal the layers and cells run one by one bit for bit — for every kernel kind,
with and without biases, at decode (rows <= 8, the GEMV kernels) and prefill row counts.
"""

from __future__ import annotations

import warnings

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mindspore import Tensor, nn

from gscore import kernels
from gscore.kernels.ops import linear_group_plan
from gscore.models.llama import LlamaConfig, build_llama
from gscore.nn.decoding import CompiledDecoder
from gscore.nn.fused import Add, RMSNormOp, Rotary, SiluMul
from gscore.nn.kv_cache import DynamicInt8KVCache, StaticInt8KVCache
from gscore.nn.linear_group import LinearGroup, can_group
from gscore.nn.linear_view import linear_view
from gscore.nn.passes import WeightSpec, quantize_network, simulated_linear
from gscore.nn.quantizers import DynamicInputQuantizer, StaticInputQuantizer
from gscore.nn.walk import iter_cells, replace_cell

K, HEAD_DIM, EPS = 150, 8, 1e-5  # K is not a multiple of the group size 64: a ragged last group
KINDS = {
    # name: (weight spec, input quantizer factory, kernel)
    "w8": (WeightSpec(symmetric=False), lambda: None, "w8_linear"),
    "w4-g64": (WeightSpec(bits=4, group_size=64, symmetric=False), lambda: None, "w4_linear"),
    "a8w8-static": (WeightSpec(), lambda: StaticInputQuantizer(0.05, -3.0), "a8w8_static_linear"),
    "a8w8-dynamic": (WeightSpec(), DynamicInputQuantizer, "a8w8_dynamic_linear"),
    "a8w4-static": (WeightSpec(bits=4, group_size=64), lambda: StaticInputQuantizer(0.05, 2.0), "a8w4_static_linear"),
    "a8w4-dynamic": (WeightSpec(bits=4, group_size=64, symmetric=False), DynamicInputQuantizer, "a8w4_dynamic_linear"),
}
# layer name: (out channels, bias); q and k are 4 and 2 heads of HEAD_DIM for RoPE
LAYERS = {"q": (4 * HEAD_DIM, True), "k": (2 * HEAD_DIM, False), "v": (2 * HEAD_DIM, True), "gate": (40, False), "up": (40, True), "o": (24, True)}


class Layers(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        for name, (out, bias) in LAYERS.items():
            setattr(self, name, nn.Dense(K, out, has_bias=bias))


_built: dict[tuple[str, str], Layers] = {}


def deployed(kind: str, level: str) -> Layers:
    """The LAYERS deployed with ``kind``'s quantizers at kernel ``level`` (built once)."""
    if (kind, level) not in _built:
        spec, input_quantizer, _ = KINDS[kind]
        ms.set_seed(11)
        net = Layers()
        with warnings.catch_warnings(), kernels.forced(level):
            warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
            for name in LAYERS:
                setattr(net, name, simulated_linear(linear_view(getattr(net, name)), spec, input_quantizer=input_quantizer()))
            quantize_network(net)
            net.norm, net.rotary, net.silu, net.add = RMSNormOp(EPS), Rotary(), SiluMul(), Add()
        _built[(kind, level)] = net
    return _built[(kind, level)]


def heads(x: Tensor, batch: int) -> Tensor:
    return ms.ops.transpose(ms.ops.reshape(x, (batch, -1, x.shape[-1] // HEAD_DIM, HEAD_DIM)), (0, 2, 1, 3))


def group(net: Layers, names: list[str], level: str, **how) -> LinearGroup:
    with kernels.forced(level):
        return LinearGroup([getattr(net, n) for n in names], **how)


def inputs(net: Layers, names: list[str]) -> tuple:
    return sum((getattr(net, n).group_inputs() for n in names), ())


@pytest.fixture(scope="module", autouse=True)
def _blocking():
    ms.runtime.launch_blocking()


@pytest.mark.parametrize("level", kernels.supported_levels())
@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=6)
@given(batch=st.integers(1, 2), tokens=st.sampled_from([1, 3, 9]), seed=st.integers(0, 2**16), magnitude=st.sampled_from([0.1, 30.0]))
def test_a_group_equals_its_layers_run_one_by_one(kind, level, batch, tokens, seed, magnitude):
    net = deployed(kind, level)
    assert net.q.kernel == KINDS[kind][2] and can_group([net.q, net.k, net.v])
    rng = np.random.default_rng(seed)
    rows = batch * tokens
    x = Tensor((rng.standard_normal((rows, K)) * magnitude).astype(np.float32))
    residual = Tensor(rng.standard_normal((rows, LAYERS["o"][0])).astype(np.float32))
    gamma = Tensor(rng.uniform(0.5, 2.0, K).astype(np.float32))
    angles = rng.uniform(0, 6.3, (tokens, HEAD_DIM)).astype(np.float32)
    cos, sin = Tensor(np.cos(angles)), Tensor(np.sin(angles))
    eps = net.norm.eps_tensor

    normed = net.norm(x, gamma)
    q, k, v = group(net, ["q", "k", "v"], level, prologue="rms_norm", rope=True)(x, (gamma, eps, cos, sin), inputs(net, ["q", "k", "v"]))
    np.testing.assert_array_equal(heads(q, batch).asnumpy(), net.rotary(heads(net.q(normed), batch), cos, sin).asnumpy())
    np.testing.assert_array_equal(heads(k, batch).asnumpy(), net.rotary(heads(net.k(normed), batch), cos, sin).asnumpy())
    np.testing.assert_array_equal(v.asnumpy(), net.v(normed).asnumpy())

    gated = group(net, ["gate", "up"], level, prologue="rms_norm", epilogue="silu_mul")(x, (gamma, eps), inputs(net, ["gate", "up"]))
    np.testing.assert_array_equal(gated.asnumpy(), net.silu(net.gate(normed), net.up(normed)).asnumpy())

    added = group(net, ["o"], level, epilogue="add")(x, (residual,), inputs(net, ["o"]))
    np.testing.assert_array_equal(added.asnumpy(), net.add(residual, net.o(x)).asnumpy())

    plain = group(net, ["q", "gate"], level)(x, (), inputs(net, ["q", "gate"]))
    np.testing.assert_array_equal(plain[0].asnumpy(), net.q(x).asnumpy())
    np.testing.assert_array_equal(plain[1].asnumpy(), net.gate(x).asnumpy())


def test_layers_that_differ_or_run_on_mindspore_ops_are_not_grouped():
    native = deployed("w8", kernels.supported_levels()[0])
    assert not can_group([native.q, deployed("a8w8-dynamic", kernels.supported_levels()[0]).k])  # two kernel kinds
    assert not can_group([deployed("w8", "portable").q])  # no native kernel
    assert not can_group([nn.Dense(K, 4)])
    assert not can_group([])
    with pytest.raises(ValueError, match="one native kernel kind"):
        LinearGroup([deployed("w8", "portable").q])


@pytest.mark.parametrize(
    ("count", "how", "message"),
    [
        (2, {"epilogue": "add"}, "takes 1 linears, got 2"),
        (3, {"epilogue": "silu_mul"}, "takes 2 linears, got 3"),
        (1, {"rope": True}, "with RoPE takes 2 or 3 linears, got 1"),
        (2, {"epilogue": "silu_mul", "rope": True}, "with RoPE"),
        (1, {"prologue": "layer_norm"}, "no linear group for kernel"),
    ],
)
def test_a_plan_the_operator_cannot_run_is_refused(count, how, message):
    with pytest.raises(kernels.KernelError, match=message):
        linear_group_plan("w8_linear", (False,) * count, how.get("prologue"), how.get("epilogue"), how.get("rope", False))


# A tiny Llama (hidden 32, MLP 48, 2 blocks) with every linear layer deployed as a kind of KINDS;
# the 4-bit kinds in groups of 24, so the 32 inputs of q/k/v and gate/up end in a ragged group.
BLOCK_KINDS = {
    name: (WeightSpec(bits=spec.bits, group_size=24, symmetric=spec.symmetric) if spec.bits == 4 else spec, quantizer, kernel)
    for name, (spec, quantizer, kernel) in KINDS.items()
}
# int8 weights per channel, symmetric except in the layers below: a block operator is given the
# zero points of these only (the rest are zero), so its mask must name the right linears
BLOCK_KINDS["w8-mixed"] = (WeightSpec(), lambda: None, "w8_linear")
ASYMMETRIC_IN_MIXED = ("k_proj", "o_proj", "up_proj")


def deployed_llama(kind: str, level: str, cache: str):
    """The tiny Llama, its linears deployed as ``kind`` and its KV caches of ``cache`` kind."""
    spec, input_quantizer, _ = BLOCK_KINDS[kind]
    ms.set_seed(5)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2, max_positions=64)
    head_dim = config.hidden_size // config.num_heads
    with warnings.catch_warnings(), kernels.forced(level):
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        net = build_llama(config)
        for name, dense in list(iter_cells(net.model.layers, lambda c: isinstance(c, nn.Dense))):
            layer_spec = WeightSpec(symmetric=False) if kind == "w8-mixed" and name.endswith(ASYMMETRIC_IN_MIXED) else spec
            replace_cell(net.model.layers, name, simulated_linear(linear_view(dense), layer_spec, input_quantizer=input_quantizer()))
        quantize_network(net)
        for i in range(config.num_layers):
            shape = (config.num_kv_heads, 1, head_dim)
            if cache == "dynamic":
                replace_cell(net, f"model.layers.{i}.self_attn.kv_cache", DynamicInt8KVCache(config.num_kv_heads, head_dim))
            elif cache == "static":
                scale, zp = (Tensor(np.full(shape, value, np.float32)) for value in (0.03, 2.0))
                replace_cell(net, f"model.layers.{i}.self_attn.kv_cache", StaticInt8KVCache(config.num_kv_heads, head_dim, scale, zp, scale.copy(), zp.copy()))
    return net


@pytest.mark.parametrize("level", kernels.supported_levels())
@pytest.mark.parametrize("kind, cache", [*((kind, "float") for kind in BLOCK_KINDS), ("w8", "static"), ("a8w4-dynamic", "dynamic")])
def test_a_block_as_one_operator_equals_its_five_operators(kind, cache, level):
    """``gsk_decoder_layer`` calls the group and attention functions in the order the five
    operators run them: compiled decoding gives the same logits bit for bit."""
    prompt, follow = np.array([[3, 14, 15, 92, 65]], np.int32), [35, 89, 79, 1]
    logits = {}
    for fused in (True, False):
        net = deployed_llama(kind, level, cache)
        with kernels.forced(level), CompiledDecoder(net, capacity=12, fuse_blocks=fused) as decoder:
            assert decoder.grouped_blocks == 2
            assert all((layer.block_op is not None) == fused for layer in net.model.layers)
            if fused:  # the mask of linears given no zero points: q, k, v, o, gate, up, down from bit 0
                implied = 0b1010101 if kind == "w8-mixed" else (0b1111111 if BLOCK_KINDS[kind][0].symmetric else 0)
                assert [int(layer.block_meta.asnumpy()[-1]) for layer in net.model.layers] == [implied] * len(net.model.layers)
            steps = [decoder(Tensor(prompt), 0).asnumpy()]
            for i, token in enumerate(follow):
                steps.append(decoder(Tensor(np.array([[token]], np.int32)), prompt.shape[1] + i).asnumpy())
        logits[fused] = steps
    if kind == "w8-mixed":  # zero points the block must read, not take as zero
        assert all(np.any(getattr(net.model.layers[0].self_attn, name)._weight_quantizer.zp_neg.asnumpy() != 0) for name in ("k_proj", "o_proj"))
    for one, five in zip(logits[True], logits[False]):
        np.testing.assert_array_equal(one, five)
