"""Deployed quantized layers: native kernels against the portable MindSpore path.

The kernels read the same parameters (checkpoint layout unchanged). Tolerances: weight-only
and A8W4 layers agree within float32 summation order (1e-5 relative to the output scale; A8W4
multiplies identical activation codes by the float int4 weight on both paths); A8W8 layers
are bit-identical while the portable path's float matmul of integer codes is itself exact
(accumulators below 2^24, as here).
"""

from __future__ import annotations

import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from gscore import kernels
from gscore.nn.linear_view import linear_view
from gscore.nn.passes import WeightSpec, quantize_network, simulated_linear
from gscore.nn.quant_linear import QuantLinear
from gscore.nn.quantizers import DynamicInputQuantizer, StaticInputQuantizer

CASES = {
    # name: (weight spec, input quantizer factory, expected kernel)
    "w8": (WeightSpec(), lambda: None, "w8_linear"),
    "w8-asymmetric": (WeightSpec(symmetric=False), lambda: None, "w8_linear"),
    "w4-g64-ragged": (WeightSpec(bits=4, group_size=64, symmetric=False), lambda: None, "w4_linear"),
    "a8w8-static": (WeightSpec(), lambda: StaticInputQuantizer(0.02, -3.0), "a8w8_static_linear"),
    "a8w8-dynamic": (WeightSpec(), DynamicInputQuantizer, "a8w8_dynamic_linear"),
    "a8w8-static-smooth": (WeightSpec(), lambda: StaticInputQuantizer(0.02, 5.0), "a8w8_static_linear"),
    "a8w4-g64-static": (WeightSpec(bits=4, group_size=64), lambda: StaticInputQuantizer(0.02, -3.0), "a8w4_static_linear"),
    "a8w4-g64-dynamic-smooth": (WeightSpec(bits=4, group_size=64, symmetric=False), DynamicInputQuantizer, "a8w4_dynamic_linear"),
}
SMOOTHED = {"a8w8-static-smooth", "a8w4-g64-dynamic-smooth"}


class Wrapper(nn.Cell):
    def __init__(self, layer: nn.Cell) -> None:
        super().__init__()
        self.layer = layer

    def construct(self, x):
        return self.layer(x)


def deployed(name: str, choice: str) -> Wrapper:
    spec, input_quantizer, _ = CASES[name]
    ms.set_seed(7)
    net = Wrapper(nn.Dense(150, 37, has_bias=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced(choice):
            smooth = np.linspace(0.5, 2.0, 150).astype(np.float32) if name in SMOOTHED else None
            net.layer = simulated_linear(linear_view(net.layer), spec, input_quantizer=input_quantizer(), smooth_scale=smooth)
            quantize_network(net)
    return net


@pytest.fixture(scope="module", autouse=True)
def _blocking():
    ms.runtime.launch_blocking()


@pytest.mark.parametrize("level", kernels.supported_levels())
@pytest.mark.parametrize("name", list(CASES))
def test_native_layer_matches_the_portable_layer(name, level):
    x = Tensor(np.random.default_rng(8).standard_normal((2, 5, 150)).astype(np.float32))
    portable, native = deployed(name, "portable"), deployed(name, level)
    assert isinstance(native.layer, QuantLinear) and native.layer.kernel == CASES[name][2]
    assert portable.layer.kernel is None
    assert [(p.name, p.dtype, p.shape) for p in native.get_parameters()] == [(p.name, p.dtype, p.shape) for p in portable.get_parameters()]
    want, got = portable(x).asnumpy(), native(x).asnumpy()
    assert got.shape == (2, 5, 37)
    if name.startswith("a8w8"):
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def simulated(spec: WeightSpec, input_quantizer, choice: str | None) -> Wrapper:
    """A simulated layer built at kernel level ``choice`` (None: the default level)."""
    ms.set_seed(7)
    net = Wrapper(nn.Dense(150, 37, has_bias=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        if choice is None:
            net.layer = simulated_linear(linear_view(net.layer), spec, input_quantizer=input_quantizer())
        else:
            with kernels.forced(choice):
                net.layer = simulated_linear(linear_view(net.layer), spec, input_quantizer=input_quantizer())
    return net


@pytest.mark.skipif(not kernels.enabled(), reason="needs native kernels (no C++ compiler here)")
@pytest.mark.parametrize("input_quantizer", [lambda: None, lambda: StaticInputQuantizer(0.02, -3.0), DynamicInputQuantizer], ids=["weight-only", "static-input", "dynamic-input"])
@pytest.mark.parametrize(
    "spec",
    [WeightSpec(bits=4, group_size=64, symmetric=False), WeightSpec(bits=4, group_size=64), WeightSpec(bits=8, group_size=32, symmetric=False), WeightSpec(), WeightSpec(symmetric=False)],
    ids=["w4-asym", "w4-sym", "w8-g32-asym", "w8", "w8-asym"],
)
def test_simulated_layer_fake_quantizes_natively_to_the_ops_values(spec, input_quantizer):
    """A simulated layer fake-quantizes its weight and input with fused native operators where
    kernels are on; both, and the outputs, equal the portable layer's bit for bit. 150 inputs
    leave a ragged last group; the weight is set to values beyond the clipped range, on
    rounding midpoints, and ±0, the input to values on its rounding midpoints too."""
    portable, native = simulated(spec, input_quantizer, "portable"), simulated(spec, input_quantizer, None)
    wq = native.layer._weight_quantizer
    assert wq.fused is not None and portable.layer._weight_quantizer.fused is None
    if native.layer.has_input_quantizer and isinstance(native.layer._input_quantizer, StaticInputQuantizer):
        assert native.layer._input_quantizer.fused is not None and portable.layer._input_quantizer.fused is None
    rng = np.random.default_rng(11)
    weight = portable.layer.weight.asnumpy() * rng.uniform(0.5, 1.8, (37, 150)).astype(np.float32)
    group = spec.group_size or 150
    scale = np.repeat(wq.scale.asnumpy().reshape(37, -1), group, axis=1)[:, :150]
    zp_neg = np.repeat(wq.zp_neg.asnumpy().reshape(37, -1), group, axis=1)[:, :150]
    midpoints = rng.random((37, 150)) < 0.2
    weight[midpoints] = ((rng.integers(-8, 7, (37, 150)) + 0.5 + zp_neg) * scale)[midpoints]
    weight[0, :4] = [0.0, -0.0, 0.0, -0.0]
    for net in (portable, native):
        net.layer.weight.set_data(Tensor(weight))
    np.testing.assert_array_equal(wq.fake_quantize(native.layer.weight).asnumpy(), portable.layer._weight_quantizer.fake_quantize(portable.layer.weight).asnumpy())
    x = rng.standard_normal((2, 5, 150)).astype(np.float32)
    x[0, 0, :40] = (rng.integers(-150, 150, 40) + 0.5).astype(np.float32) * np.float32(0.02)
    x[0, 1, :4] = [0.0, -0.0, 3.0, -3.0]
    x = Tensor(x)
    if native.layer.has_input_quantizer:
        rows = ms.ops.reshape(x, (-1, 150))
        np.testing.assert_array_equal(native.layer._input_quantizer.fake_quantize(rows).asnumpy(), portable.layer._input_quantizer.fake_quantize(rows).asnumpy())
    np.testing.assert_array_equal(native(x).asnumpy(), portable(x).asnumpy())


@pytest.mark.skipif(not kernels.enabled(), reason="needs native kernels (no C++ compiler here)")
def test_fused_static_input_quantizer_passes_no_gradient_like_its_ops_path():
    """The ops path rounds and casts to int8, which passes no gradient; the fused operator's
    backward gives zeros too (rather than failing for want of one)."""
    x = Tensor(np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32))
    for choice in ("portable", None):
        quantizer = simulated(WeightSpec(), lambda: StaticInputQuantizer(0.02, -3.0), choice).layer._input_quantizer
        assert (quantizer.fused is None) == (choice == "portable")
        gradient = ms.grad(lambda t, q=quantizer: (q.fake_quantize(t) * 3.0).sum())(x)
        np.testing.assert_array_equal(gradient.asnumpy(), np.zeros((4, 9), np.float32))
