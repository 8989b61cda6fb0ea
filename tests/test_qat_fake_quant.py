"""The MindSpore fake-quant cells agree with gscore.quant's numpy math, and their STE gradient."""

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mindspore import Tensor

from gscore import kernels
from gscore.errors import ConfigError
from gscore.nn.fake_quant import ActivationFakeQuant, FakeQuantSTE, WeightFakeQuant, graph_params
from gscore.nn.quant_conv import ActivationQuantizer, Int8Weight, PackedWeight
from gscore.quant import QuantScheme, compute_params, fake_quantize, quant_params
from gscore.quant.bitpack import unpack_bits

ms.runtime.launch_blocking()

schemes = st.builds(
    QuantScheme,
    bits=st.integers(2, 8),
    symmetric=st.booleans(),
    signed=st.booleans(),
    narrow=st.just(False),
    granularity=st.just("per_tensor"),
)
# MindSpore's CPU kernels flush subnormal float32 inputs to zero, so ranges are drawn without
# them (see graph_params); ranges whose *scale* would be subnormal are drawn
tiny_free = st.floats(-50, 50, width=32, allow_subnormal=False)
ranges = hnp.arrays(np.float32, 6, elements=tiny_free)


@settings(max_examples=40, deadline=None)
@given(schemes, ranges, ranges)
def test_in_graph_params_equal_the_numpy_params(scheme, a, b):
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    scale, zero = graph_params(Tensor(lo), Tensor(hi), scheme)
    expected = compute_params(lo, hi, scheme)
    np.testing.assert_array_equal(scale.asnumpy(), expected.scale)
    np.testing.assert_array_equal(zero.asnumpy(), expected.zero_point)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_in_graph_zero_points_equal_numpy_near_halves(bits, signed):
    """Ranges built from short binary fractions put ``qmin - lo / scale`` within float32 rounding
    of a half (e.g. 3 bits, [-0.0234375, 0.0234375]: float32 arithmetic gives zero point 4,
    float64 gives 3); every one must match numpy's zero point and scale exactly."""
    magnitudes = np.array([m * 2.0**e for m in (1, 1.5, 3, 5, 7, 0.1, 0.3, 1.1) for e in range(-8, 6)], np.float32)
    lo, hi = (g.ravel() for g in np.meshgrid(-magnitudes, magnitudes))
    scheme = QuantScheme(bits=bits, symmetric=False, signed=signed, narrow=False, granularity="per_tensor")
    scale, zero = graph_params(Tensor(lo), Tensor(hi), scheme)
    expected = compute_params(lo, hi, scheme)
    np.testing.assert_array_equal(scale.asnumpy(), expected.scale)
    np.testing.assert_array_equal(zero.asnumpy(), expected.zero_point)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.booleans(), hnp.arrays(np.float32, (4, 7), elements=st.floats(-3, 3, width=32)))
def test_weight_fake_quant_equals_numpy_fake_quantize(bits, symmetric, w):
    scheme = QuantScheme(bits=bits, symmetric=symmetric, granularity="per_channel", axis=0)
    out = WeightFakeQuant(scheme)(Tensor(w)).asnumpy()
    np.testing.assert_allclose(out, fake_quantize(w, scheme), rtol=0, atol=1e-6 * max(1.0, np.abs(w).max()))


def test_ste_gradient_is_one_inside_the_range_and_zero_outside():
    fq = FakeQuantSTE(0, 255, symmetric=False)
    scale, zero = Tensor(np.float32(0.01)), Tensor(np.float32(100.0))  # range [-1.00, 1.55]
    x = Tensor(np.array([-2.0, -0.999, 0.0, 0.333, 1.55, 1.6], np.float32))
    grad = ms.grad(lambda v: (fq(v, scale, zero) * Tensor(np.arange(1, 7, dtype=np.float32))).sum())(x).asnumpy()
    np.testing.assert_array_equal(grad, [0, 2, 3, 4, 5, 0])
    out = fq(x, scale, zero).asnumpy()
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 0.33, 1.55, 1.55], atol=1e-6)


def test_deployed_parts_reproduce_their_numpy_definition():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 2, 2)).astype(np.float32)
    params = quant_params(w, QuantScheme(bits=8, symmetric=False, granularity="per_channel", axis=0))
    weight = Int8Weight.from_params(w, params)
    np.testing.assert_allclose(weight().asnumpy(), fake_quantize(w, params), atol=1e-6)
    codes = rng.integers(0, 4, size=(5, 3, 3, 3))
    levels, scale = np.array([-1.5, -0.5, 0.5, 1.5], np.float32), np.arange(1, 6, dtype=np.float32)
    packed = PackedWeight(codes, levels, scale, bits=2)
    assert packed.packed.asnumpy().shape == (5, 7) and packed.packed.dtype == ms.uint8
    np.testing.assert_array_equal(unpack_bits(packed.packed.asnumpy(), 2, 27).reshape(codes.shape), codes)
    np.testing.assert_array_equal(packed().asnumpy(), levels[codes] * scale[:, None, None, None])
    act = ActivationQuantizer.from_range(-0.5, 2.0, QuantScheme(bits=8, symmetric=False, signed=False, granularity="per_tensor"))
    x = np.linspace(-1, 3, 11, dtype=np.float32)
    expected = fake_quantize(x, compute_params(np.array([-0.5]), np.array([2.0]), act.scheme))
    np.testing.assert_allclose(act(Tensor(x)).asnumpy(), expected, atol=1e-6)


def test_bad_quantizer_settings_are_refused():
    with pytest.raises(ConfigError, match="per_tensor or per_channel with axis 0"):
        WeightFakeQuant(QuantScheme(granularity="per_channel", axis=1))
    with pytest.raises(ConfigError, match="ema_decay"):
        ActivationFakeQuant(QuantScheme(granularity="per_tensor"), ema_decay=1.5)
    with pytest.raises(ConfigError, match="quant_delay"):
        ActivationFakeQuant(QuantScheme(granularity="per_tensor"), quant_delay=-2)


negative = st.floats(-50, -0.0010000000474974513, width=32)
positive = st.floats(0.0010000000474974513, 50, width=32)


@settings(max_examples=60, deadline=None)
@given(schemes, negative, positive)
def test_deployed_activation_quantizer_is_bit_identical_to_the_observer_it_replaces(scheme, lo, hi):
    """Ranges with a negative minimum are where a float64 scale differs from the float32 one by an
    ulp (about one range in four); deploy must compute the scale exactly as evaluation does."""
    observer = ActivationFakeQuant(QuantScheme(bits=scheme.bits, symmetric=scheme.symmetric, signed=scheme.signed, granularity="per_tensor"))
    observer.minimum.set_data(Tensor(np.float32(lo)))
    observer.maximum.set_data(Tensor(np.float32(hi)))
    observer.step.set_data(Tensor(1, ms.int32))
    observer.set_train(False)
    x = Tensor(np.linspace(1.2 * lo, 1.2 * hi, 257, dtype=np.float32))
    np.testing.assert_array_equal(ActivationQuantizer.from_observer(observer)(x).asnumpy(), observer(x).asnumpy())


def test_an_observer_that_never_saw_data_refuses_to_evaluate():
    from gscore.errors import CalibrationDataError

    observer = ActivationFakeQuant(QuantScheme(granularity="per_tensor"), label="fc1.input_quant")
    observer.set_train(False)
    with pytest.raises(CalibrationDataError, match=r"never observed data.*fc1\.input_quant"):
        observer(Tensor(np.ones(3, np.float32)))
    observer.set_train(True)
    observer(Tensor(np.array([-1.0, 2.0], np.float32)))
    observer.set_train(False)
    assert observer(Tensor(np.ones(3, np.float32))).shape == (3,)


def _portable(make):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced("portable"):
            return make()


@pytest.mark.skipif(not kernels.enabled(), reason="needs native kernels (no C++ compiler here)")
@pytest.mark.parametrize("symmetric", [False, True])
def test_fused_fake_quant_equals_the_elementwise_ops_forward_and_backward(symmetric):
    """Forward values and observed ranges bit for bit; gradients within float32 rounding (the
    ops path multiplies by scale and divides by it again, the fused backward passes dout)."""
    rng = np.random.default_rng(5)
    act_scheme = QuantScheme(bits=8, symmetric=symmetric, granularity="per_tensor")
    w_scheme = QuantScheme(bits=8, symmetric=symmetric, granularity="per_channel", axis=0)
    pairs = [(_portable(lambda: ActivationFakeQuant(act_scheme, ema_decay=0.9)), ActivationFakeQuant(act_scheme, ema_decay=0.9)), (_portable(lambda: WeightFakeQuant(w_scheme)), WeightFakeQuant(w_scheme))]
    for ops_cell, fused_cell in pairs:
        assert fused_cell.fused and not ops_cell.fused
        for cell in (ops_cell, fused_cell):
            cell.set_train(True)
        for step in range(3):
            x = Tensor((rng.standard_normal((6, 5, 4)) * (step + 1)).astype(np.float32))
            weights = Tensor(rng.standard_normal((6, 5, 4)).astype(np.float32))
            results = []
            for cell in (ops_cell, fused_cell):
                out, grad = ms.value_and_grad(lambda v, c=cell: (c(v) * weights).sum())(x)
                results.append((cell(x).asnumpy() if isinstance(cell, WeightFakeQuant) else out.asnumpy(), grad.asnumpy()))
            np.testing.assert_array_equal(results[1][0], results[0][0])
            np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6, atol=0)
            if isinstance(ops_cell, ActivationFakeQuant):
                np.testing.assert_array_equal(fused_cell.minimum.asnumpy(), ops_cell.minimum.asnumpy())
                np.testing.assert_array_equal(fused_cell.maximum.asnumpy(), ops_cell.maximum.asnumpy())
        for cell in (ops_cell, fused_cell):
            cell.set_train(False)
        np.testing.assert_array_equal(fused_cell(x).asnumpy(), ops_cell(x).asnumpy())
