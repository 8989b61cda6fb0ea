"""The integer Conv2d / Dense operator of QAT-deployed networks (``gsk_int8_layer``), at every
dispatch level this CPU runs.

* Against numpy, **exact**: the reference quantizes the input with the simulated network's
  float32 operations (``x / s + z``, round half to even, clip), sums integer products over
  windows cut from the zero-padded codes, and rescales as the kernel does
  (``float32(t) * s_x * s_w``), so outputs are bit-identical. Cases cover strides, dilations,
  uneven and 'same' padding, 1 x 1 kernels, unsigned and signed codes of 4 and 8 bits, weight
  zero points, Dense inputs of rank 1 to 3, and decode-sized (GEMV) and larger (GEMM) row
  counts.
* Against the dequantising MindSpore path (the same :class:`QuantLayer` built with
  ``GSCORE_KERNELS=portable``), within float32 rounding: both compute the same integers, and
  MindSpore's own Conv2D fixes what each padding mode means.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mindspore import Tensor, nn

from gscore import kernels
from gscore.kernels.direct import Call
from gscore.kernels.ops import conv_output_size, int8_layer_primitive, unpack_levels_primitive
from gscore.nn.quant_conv import ActivationQuantizer, Int8Weight, PackedWeight
from gscore.nn.quant_layer import LayerOp, QuantLayer
from gscore.quant import QuantScheme, quant_params
from gscore.quant.bitpack import pack_bits

LEVELS = kernels.supported_levels()
PROPERTY = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module", autouse=True)
def _blocking():
    ms.runtime.launch_blocking()


def activation_codes(x: np.ndarray, scale: np.float32, zero: np.float32, qmin: int, qmax: int) -> np.ndarray:
    """The simulated network's codes: float32 ``x / scale + zero``, rounded half to even, clipped."""
    return np.clip(np.rint(x / scale + zero), qmin, qmax).astype(np.int64)


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - size)
    return total // 2, total - total // 2


def conv_reference(x, q, w_scale, w_zero, x_scale, x_zero, qmin, qmax, stride, dilation, same, pads):
    """[B, O, HO, WO]: integer sums over windows of the padded codes, one rescale."""
    (sh, sw), (dh, dw) = stride, dilation
    kh, kw = q.shape[2:]
    if same:
        pads = (*same_pads(x.shape[2], kh, sh, dh), *same_pads(x.shape[3], kw, sw, dw))
    top, bottom, left, right = pads
    centred = activation_codes(x, x_scale, x_zero, qmin, qmax) - int(x_zero)  # padding reads 0.0: code - zero = 0
    padded = np.pad(centred, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
    weight = q.astype(np.int64) - w_zero.astype(np.int64)[:, None, None, None]
    t = np.zeros((x.shape[0], q.shape[0], ho, wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            t += np.einsum("bchw,oc->bohw", window, weight[:, :, i, j])
    return (t.astype(np.float32) * x_scale) * w_scale[None, :, None, None]


@st.composite
def act_range(draw):
    """``(qmin, qmax)`` of SimQAT's activation schemes: unsigned with a zero point, or signed."""
    bits = draw(st.sampled_from([4, 8]))
    if draw(st.booleans()):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@st.composite
def layer_case(draw, conv: bool):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    qmin, qmax = draw(act_range())
    zero = np.float32(draw(st.integers(qmin, qmax)) if qmin == 0 else 0)
    if conv:
        kh, kw = draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 3, 4]))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        same = draw(st.booleans())
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        c, o = draw(st.integers(1, 9)), draw(st.integers(1, 40))
        batch = draw(st.sampled_from([1, 3]))
        h = draw(st.integers(dilation[0] * (kh - 1) + 1, 13))
        w = draw(st.integers(dilation[1] * (kw - 1) + 1, 13))
        x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
        q = rng.integers(-128, 128, (o, c, kh, kw)).astype(np.int8)
        geometry = (*stride, *dilation, int(same), *pads)
    else:
        k, o = draw(st.integers(1, 300)), draw(st.integers(1, 40))
        lead = draw(st.sampled_from([(), (1,), (5,), (2, 7), (40,)]))
        x = rng.standard_normal((*lead, k)).astype(np.float32)
        q = rng.integers(-128, 128, (o, k)).astype(np.int8)
        geometry = (1, 1, 1, 1, 0, 0, 0, 0, 0)
    w_scale = (rng.random(o) * 0.02 + 1e-3).astype(np.float32)
    w_zero = rng.integers(-5, 6, o).astype(np.float32) if draw(st.booleans()) else np.zeros(o, np.float32)
    x_scale = np.float32(np.abs(x).max() / (qmax - qmin) * draw(st.sampled_from([0.5, 2.0])) + 1e-6)  # 0.5: some values clip
    meta = (int(conv), qmin, qmax, *geometry)
    return x, q, w_scale, w_zero, x_scale, zero, meta


def run(level, case) -> np.ndarray:
    x, q, w_scale, w_zero, x_scale, x_zero, meta = case
    op = int8_layer_primitive(meta, level)
    scalar = lambda v: Tensor(np.array(v, np.float32))
    return op(Tensor(x), Tensor(q), Tensor(w_scale), Tensor(w_zero), scalar(x_scale), scalar(x_zero), Tensor(np.array(meta, np.int32))).asnumpy()


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=layer_case(conv=True))
def test_int8_conv_is_exact(level, case):
    x, q, w_scale, w_zero, x_scale, x_zero, meta = case
    _, qmin, qmax, sh, sw, dh, dw, same, *pads = meta
    expected = conv_reference(x, q, w_scale, w_zero, x_scale, x_zero, qmin, qmax, (sh, sw), (dh, dw), bool(same), pads)
    np.testing.assert_array_equal(run(level, case), expected)


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=layer_case(conv=False))
def test_int8_dense_is_exact_for_inputs_of_any_rank(level, case):
    x, q, w_scale, w_zero, x_scale, x_zero, meta = case
    _, qmin, qmax = meta[:3]
    rows = x.reshape(-1, x.shape[-1])
    t = (activation_codes(rows, x_scale, x_zero, qmin, qmax) - int(x_zero)) @ (q.astype(np.int64) - w_zero.astype(np.int64)[:, None]).T
    expected = (t.astype(np.float32) * x_scale) * w_scale[None, :]
    np.testing.assert_array_equal(run(level, case), expected.reshape(*x.shape[:-1], q.shape[0]))


def test_same_padding_gives_mindspores_output_size():
    for size, kernel, stride, dilation in [(28, 3, 2, 1), (14, 1, 2, 1), (9, 3, 3, 2), (5, 5, 1, 1)]:
        conv = nn.Conv2d(1, 1, kernel, stride=stride, dilation=dilation, pad_mode="same")
        assert conv(Tensor(np.zeros((1, 1, size, size), np.float32))).shape[2] == conv_output_size(size, kernel, stride, dilation, True, 0, 0)


def build(cell: nn.Cell, act: QuantScheme, weight_scheme: QuantScheme) -> QuantLayer:
    w = cell.weight.asnumpy()
    weight = Int8Weight.from_params(w, quant_params(w, weight_scheme))
    return QuantLayer(LayerOp(cell), weight, cell.bias if cell.has_bias else None, ActivationQuantizer.from_range(-2.0, 3.0, act), None)


LAYERS = {
    "conv-uneven-pads-stride-dilation": (lambda: nn.Conv2d(3, 7, 3, stride=2, pad_mode="pad", padding=(1, 2, 0, 1), dilation=2, has_bias=True), (2, 3, 11, 9)),
    "conv-same": (lambda: nn.Conv2d(5, 16, 3, pad_mode="same"), (3, 5, 8, 7)),
    "conv-same-stride-2x1": (lambda: nn.Conv2d(5, 16, (3, 2), stride=(2, 1), pad_mode="same"), (1, 5, 9, 7)),
    "conv-1x1-valid": (lambda: nn.Conv2d(4, 33, 1, pad_mode="valid", has_bias=True), (2, 4, 5, 5)),
    "dense-rank-3": (lambda: nn.Dense(37, 19), (3, 4, 37)),
    "dense-one-row": (lambda: nn.Dense(37, 19), (1, 37)),
}


@pytest.mark.skipif(not kernels.enabled(), reason="native kernels are off on this machine (no compiler or GSCORE_KERNELS=portable)")
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_native_layer_equals_the_dequantising_layer_within_float_rounding(name, signed):
    make, shape = LAYERS[name]
    act = QuantScheme(bits=8, symmetric=signed, signed=signed, granularity="per_tensor")
    weights = QuantScheme(bits=8, symmetric=True, granularity="per_channel", axis=0)
    cell = make()
    native = build(cell, act, weights)
    with kernels.forced(kernels.PORTABLE):
        portable = build(cell, act, weights)
    assert native.native is not None and portable.native is None
    x = Tensor(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    got, expected = native(x).asnumpy(), portable(x).asnumpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(bits=st.sampled_from([1, 2, 4]), rows=st.integers(1, 9), shape=st.sampled_from([(1,), (7,), (16,), (3, 3, 3), (2, 5, 1)]), seed=st.integers(0, 2**31 - 1))
def test_unpacking_slb_levels_gives_their_odd_integers(level, bits, rows, shape, seed):
    """``gsk_unpack_levels`` against numpy: ``rint(levels[code] * (2**bits - 1))`` for every code,
    rows whose length is not a whole number of bytes included."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << bits, size=(rows, *shape))
    levels = np.linspace(-1.0, 1.0, 1 << bits, dtype=np.float32)
    packed = pack_bits(codes.reshape(rows, -1), bits)
    got = unpack_levels_primitive((rows, *shape), level)(Tensor(packed), Tensor(levels)).asnumpy()
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, (2 * codes - ((1 << bits) - 1)).astype(np.int8))


@pytest.mark.parametrize("level", LEVELS)
def test_unpacking_refuses_levels_beyond_int8_and_mismatched_rows(level):
    packed = pack_bits(np.zeros((2, 8), np.int64), 2)
    out = np.empty((2, 8), np.int8)
    Call("unpack_levels", level, [packed, np.linspace(-1, 1, 4, dtype=np.float32)], [out]).run()
    with pytest.raises(kernels.KernelError, match="rejected its arguments"):
        Call("unpack_levels", level, [packed, np.array([-50, -1, 1, 50], np.float32)], [out]).run()  # 50 * 3 > 127
    with pytest.raises(kernels.KernelError, match="rejected its arguments"):
        Call("unpack_levels", level, [packed, np.linspace(-1, 1, 4, dtype=np.float32)], [np.empty((2, 9), np.int8)]).run()  # 9 codes need 3 bytes


def packed_layer(cell: nn.Cell, bits: int, levels: np.ndarray, codes: np.ndarray, scale: np.ndarray) -> QuantLayer:
    act = QuantScheme(bits=8, symmetric=False, signed=False, granularity="per_tensor")
    return QuantLayer(LayerOp(cell), PackedWeight(codes, levels, scale, bits), cell.bias if cell.has_bias else None, ActivationQuantizer.from_range(-2.0, 3.0, act), None)


@pytest.mark.skipif(not kernels.enabled(), reason="native kernels are off on this machine (no compiler or GSCORE_KERNELS=portable)")
@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("name", ["conv-uneven-pads-stride-dilation", "dense-rank-3"])
def test_a_packed_slb_layer_runs_natively_and_equals_the_dequantising_layer(name, bits):
    """SLB's levels ``linspace(-1, 1, 2**bits)`` are odd integers over ``2**bits - 1``: the same
    int8 operator runs them, from the packed Parameters, whatever a later load put there."""
    make, shape = LAYERS[name]
    cell = make()
    rng = np.random.default_rng(bits)
    oc = cell.weight.shape[0]
    grid = np.linspace(-1.0, 1.0, 1 << bits, dtype=np.float32)
    codes = rng.integers(0, 1 << bits, size=cell.weight.shape)
    scale = rng.uniform(0.05, 0.5, size=oc).astype(np.float32)
    native = packed_layer(cell, bits, grid, codes, scale)
    with kernels.forced(kernels.PORTABLE):
        portable = packed_layer(cell, bits, grid, codes, scale)
    assert native.native is not None and portable.native is None
    x = Tensor(rng.normal(size=shape).astype(np.float32))
    expected = portable(x).asnumpy()
    np.testing.assert_allclose(native(x).asnumpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # new codes and scales loaded into both (as a checkpoint load does) are what both run
    other = PackedWeight(rng.integers(0, 1 << bits, size=cell.weight.shape), grid, scale[::-1].copy(), bits)
    for layer in (native, portable):
        layer.weight_source.packed.set_data(other.packed.data.copy())
        layer.weight_source.scale.set_data(other.scale.data.copy())
    expected = portable(x).asnumpy()
    np.testing.assert_allclose(native(x).asnumpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_packed_levels_off_the_odd_grid_stay_on_the_dequantising_path():
    cell = nn.Dense(8, 3)
    codes = np.random.default_rng(0).integers(0, 4, size=(3, 8))
    layer = packed_layer(cell, 2, np.array([-1.0, -0.5, 0.5, 1.0], np.float32), codes, np.ones(3, np.float32))
    assert layer.native is None


@pytest.mark.parametrize("level", LEVELS)
def test_a_batch_larger_than_one_im2col_chunk_is_exact(level):
    """Four-channel 440 x 440 images make 9 MB (VNNI: 48-byte rows) or 15 MB (int16 codes, AVX2
    and C++: 80-byte rows) of im2col rows each, so the kernel's 16 MB chunks hold one image: the
    chunk offsets into input and output are exercised at every level."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 440, 440)).astype(np.float32)
    q = rng.integers(-128, 128, (4, 4, 3, 3)).astype(np.int8)
    w_scale, w_zero = np.full(4, 0.01, np.float32), np.array([0, 1, -2, 3], np.float32)
    meta = (1, 0, 255, 1, 1, 1, 1, 1, 0, 0, 0, 0)
    case = (x, q, w_scale, w_zero, np.float32(0.02), np.float32(100), meta)
    expected = conv_reference(x, q, w_scale, w_zero, np.float32(0.02), np.float32(100), 0, 255, (1, 1), (1, 1), True, (0, 0, 0, 0))
    np.testing.assert_array_equal(run(level, case), expected)


@pytest.mark.parametrize("level", LEVELS)
def test_a_nan_input_takes_the_lowest_code_in_vector_and_scalar_paths(level):
    """Both the vector body (index 0) and the scalar tail (index 36 of 37) map NaN to qmin, like
    minus infinity, as the A8W8 linear kernels do: no undefined float-to-int conversion."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 37)).astype(np.float32)
    x[:, [0, 36]] = np.nan
    q = rng.integers(-128, 128, (5, 37)).astype(np.int8)
    w_scale, w_zero = np.full(5, 0.01, np.float32), np.zeros(5, np.float32)
    meta = (0, 0, 255, 1, 1, 1, 1, 0, 0, 0, 0, 0)
    as_minus_inf = np.where(np.isnan(x), -np.inf, x).astype(np.float32)
    expected = run(level, (as_minus_inf, q, w_scale, w_zero, np.float32(0.02), np.float32(100), meta))
    np.testing.assert_array_equal(run(level, (x, q, w_scale, w_zero, np.float32(0.02), np.float32(100), meta)), expected)
