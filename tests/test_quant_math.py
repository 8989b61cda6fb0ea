"""Properties and worked examples of the numpy quantization math in ``gscore.quant``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gscore.quant import (
    Granularity,
    QuantParams,
    QuantScheme,
    compute_params,
    dequantize,
    fake_quantize,
    observe_minmax,
    pack_int4,
    qrange,
    quant_params,
    quantize,
    unpack_int4,
)
from gscore.testing.strategies import finite_floats, int4_codes, int8_bytes, scheme_and_array

PROPERTY = settings(max_examples=150, deadline=None)
# Ordinary magnitudes, plus ranges so small that the scale hits its floor (subnormal data).
CASES = st.one_of(scheme_and_array(), scheme_and_array(max_magnitude=1e-36))
NORMAL_CASES = st.one_of(
    scheme_and_array(allow_subnormal=False), scheme_and_array(max_magnitude=1e-36, allow_subnormal=False)
)
FLOAT16_CASES = scheme_and_array(dtype=np.float16, allow_subnormal=False)
MATRICES = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=finite_floats(np.float32)
)


def per_element(a: np.ndarray, scheme: QuantScheme, shape: tuple[int, ...]) -> np.ndarray:
    """A keepdims parameter array broadcast to one value per element of a ``shape`` tensor (float64)."""
    if scheme.granularity is Granularity.PER_GROUP:
        grouped = (*shape[:-1], shape[-1] // scheme.group_size, scheme.group_size)
        return np.broadcast_to(a, grouped).reshape(shape).astype(np.float64)
    return np.broadcast_to(a, shape).astype(np.float64)


def half_of_reduced_axes(x: np.ndarray, scheme: QuantScheme) -> np.ndarray:
    """A non-empty sub-slice of ``x`` that params observed on still fit ``x``: the first half of
    every reduced axis (per-group reduces inside fixed-size groups, so it gets all of ``x``)."""
    ndim = x.ndim
    if scheme.granularity is Granularity.PER_TENSOR:
        reduced = set(range(ndim))
    elif scheme.granularity is Granularity.PER_CHANNEL:
        reduced = set(range(ndim)) - {scheme.axis % ndim}
    elif scheme.granularity is Granularity.PER_TOKEN:
        reduced = {ndim - 1}
    else:
        reduced = set()
    return x[tuple(slice(0, max(1, n // 2)) if a in reduced else slice(None) for a, n in enumerate(x.shape))]


# --- 1. round trip -----------------------------------------------------------------------------


@PROPERTY
@given(CASES)
def test_round_trip_error_is_at_most_half_a_step(case: tuple[dict[str, Any], np.ndarray]) -> None:
    kwargs, x = case
    scheme = QuantScheme(**kwargs)
    before = x.copy()
    params = quant_params(x, scheme)
    q = quantize(x, params)
    deq = dequantize(q, params)

    assert q.shape == x.shape and q.dtype == (np.int8 if scheme.signed else np.uint8)
    assert deq.shape == x.shape and deq.dtype == np.float32
    scale = per_element(params.scale, scheme, x.shape)
    assert np.all(np.abs(deq.astype(np.float64) - x.astype(np.float64)) <= scale * (0.5 + 1e-4))
    np.testing.assert_array_equal(x, before)  # the caller's array is never written


@PROPERTY
@given(CASES)
def test_fake_quantize_matches_quantize_then_dequantize(case: tuple[dict[str, Any], np.ndarray]) -> None:
    kwargs, x = case
    scheme = QuantScheme(**kwargs)
    params = quant_params(x, scheme)
    np.testing.assert_array_equal(fake_quantize(x, scheme), dequantize(quantize(x, params), params))


# --- 2. idempotence ----------------------------------------------------------------------------


@PROPERTY
@given(CASES)
def test_fake_quantize_is_idempotent_with_the_same_params(case: tuple[dict[str, Any], np.ndarray]) -> None:
    kwargs, x = case
    params = quant_params(x, QuantScheme(**kwargs))
    once = fake_quantize(x, params)
    np.testing.assert_array_equal(fake_quantize(once, params), once)


@PROPERTY
@given(NORMAL_CASES)
def test_params_recomputed_from_fake_quantized_values(case: tuple[dict[str, Any], np.ndarray]) -> None:
    """Symmetric: the extreme value lands exactly on +-qmax, so the scale comes back (to float
    rounding). Asymmetric: each end of the range moves by at most half a step, so the scale
    moves by at most one step's share, scale / (qmax - qmin)."""
    kwargs, x = case
    scheme = QuantScheme(**kwargs)
    params = quant_params(x, scheme)
    again = quant_params(fake_quantize(x, params), scheme)
    if scheme.symmetric:
        np.testing.assert_allclose(again.scale, params.scale, rtol=4 * 2.0**-24)
        np.testing.assert_array_equal(again.zero_point, 0)
    else:
        bound = params.scale / (scheme.qmax - scheme.qmin) * (1 + 1e-4)
        assert np.all(np.abs(again.scale - params.scale) <= bound)


# --- 3. zero is exact --------------------------------------------------------------------------


@PROPERTY
@given(CASES)
def test_zero_is_exactly_representable(case: tuple[dict[str, Any], np.ndarray]) -> None:
    kwargs, x = case
    params = quant_params(x, QuantScheme(**kwargs))
    zeros = np.zeros_like(x)
    assert np.all(dequantize(quantize(zeros, params), params) == 0.0)
    assert np.all(fake_quantize(x, params)[x == 0] == 0.0)


# --- 4. codes stay in range --------------------------------------------------------------------


@PROPERTY
@given(CASES, st.sampled_from([0.0, 1e-3, 0.5, 1.0]), st.sampled_from([1.0, 3.0, 1e3]))
def test_codes_stay_in_range_outside_the_observed_range(
    case: tuple[dict[str, Any], np.ndarray], shrink: float, grow: float
) -> None:
    kwargs, x = case
    scheme = QuantScheme(**kwargs)
    params = quant_params(half_of_reduced_axes(x, scheme) * np.float32(shrink), scheme)
    for data in (x * np.float32(grow), -x * np.float32(grow)):
        q = quantize(data, params)
        assert q.dtype == (np.int8 if scheme.signed else np.uint8)
        assert q.min() >= scheme.qmin and q.max() <= scheme.qmax


# --- 5. per-group over a whole row is per-channel / per-token -------------------------------


@PROPERTY
@given(MATRICES, st.sampled_from([2, 4, 8]), st.booleans(), st.booleans())
def test_per_group_with_whole_rows_equals_per_channel_on_axis_0(
    w: np.ndarray, bits: int, symmetric: bool, signed: bool
) -> None:
    common = {"bits": bits, "symmetric": symmetric, "signed": signed}
    if symmetric and not signed:
        w = np.abs(w)
    grouped = quant_params(w, QuantScheme(**common, granularity="per_group", group_size=w.shape[1]))
    for granularity in ("per_channel", "per_token"):
        other = QuantScheme(**common, granularity=granularity)  # per_channel keeps axis 0
        params = quant_params(w, other)
        np.testing.assert_array_equal(grouped.flat_scale()[:, 0], params.flat_scale())
        np.testing.assert_array_equal(grouped.flat_zero_point()[:, 0], params.flat_zero_point())
        np.testing.assert_array_equal(quantize(w, grouped), quantize(w, params))


# --- 6. int4 packing ---------------------------------------------------------------------------


@PROPERTY
@given(int4_codes())
def test_unpack_inverts_pack(codes: np.ndarray) -> None:
    packed = pack_int4(codes)
    assert packed.dtype == np.int8 and packed.shape == (*codes.shape[:-1], codes.shape[-1] // 2)
    np.testing.assert_array_equal(unpack_int4(packed), codes)


@PROPERTY
@given(int8_bytes())
def test_pack_inverts_unpack(packed: np.ndarray) -> None:
    codes = unpack_int4(packed)
    assert codes.min() >= -8 and codes.max() <= 7
    np.testing.assert_array_equal(pack_int4(codes), packed)
    np.testing.assert_array_equal(unpack_int4(packed.view(np.uint8)), codes)


def test_int4_nibble_layout_by_hand() -> None:
    # [1, -2]: low nibble 0x1, high nibble -2 = 0xE -> byte 0xE1 = -31 as int8.
    # [-8, 7]: 0x8 low, 0x7 high -> 0x78 = 120.  [7, -8]: 0x7 low, 0x8 high -> 0x87 = -121.
    codes = np.array([[1, -2, -8, 7, 7, -8]], dtype=np.int8)
    np.testing.assert_array_equal(pack_int4(codes), np.array([[-31, 120, -121]], dtype=np.int8))
    np.testing.assert_array_equal(unpack_int4(np.array([0xE1], dtype=np.uint8)), [1, -2])


@pytest.mark.parametrize(
    ("codes", "error", "match"),
    [
        (np.zeros(3, np.int8), ValueError, "even length"),
        (np.array([0, 8], np.int16), ValueError, r"\[-8, 7\]"),
        (np.array([-9, 0], np.int32), ValueError, r"\[-8, 7\]"),
        (np.zeros(2, np.float32), TypeError, "integer"),
    ],
)
def test_pack_int4_rejects_bad_input(codes: np.ndarray, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        pack_int4(codes)


# --- 7. float16 --------------------------------------------------------------------------------


@PROPERTY
@given(FLOAT16_CASES)
def test_float16_round_trip_idempotence_and_zero(case: tuple[dict[str, Any], np.ndarray]) -> None:
    kwargs, x = case
    scheme = QuantScheme(**kwargs)
    params = quant_params(x, scheme)
    once = fake_quantize(x, scheme)
    assert once.dtype == np.float16 and once.shape == x.shape

    x64, once64 = x.astype(np.float64), once.astype(np.float64)
    scale = per_element(params.scale, scheme, x.shape)
    # half a step, plus float16's own rounding of the result (half an ulp, 2**-11 relative)
    assert np.all(np.abs(once64 - x64) <= scale * (0.5 + 1e-3) + (np.abs(x64) + scale) * 2.0**-11 + 2.0**-24)
    np.testing.assert_array_equal(fake_quantize(once, params), once)
    assert np.all(once[x == 0] == 0)
    if scheme.symmetric:
        np.testing.assert_allclose(quant_params(once, scheme).scale, params.scale, rtol=2.0**-10)


# --- 8. degenerate ranges, non-finite input, invalid schemes ---------------------------------

SCHEMES = [
    QuantScheme(),
    QuantScheme(bits=4, narrow=True, granularity="per_tensor"),
    QuantScheme(symmetric=False, granularity="per_channel", axis=-1),
    QuantScheme(bits=2, symmetric=False, signed=False, granularity="per_token"),
    QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=2),
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: f"{s.granularity.value}-sym{s.symmetric}-b{s.bits}")
def test_zero_and_constant_channels(scheme: QuantScheme) -> None:
    # rows: all zero, constant, subnormal (scale would be subnormal), smallest subnormal
    # (scale would underflow to 0)
    x = np.array(
        [[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0], [1e-42, 0.0, 1e-42, 0.0], [1e-45, 0.0, 0.0, 1e-45]],
        np.float32,
    )
    params = quant_params(x, scheme)
    assert np.all(np.isfinite(params.scale)) and np.all(params.scale >= np.finfo(np.float32).tiny)
    fq = fake_quantize(x, params)
    np.testing.assert_array_equal(fq[0], 0.0)
    scale = per_element(params.scale, scheme, x.shape)
    assert np.all(np.abs(fq.astype(np.float64) - x) <= scale * (0.5 + 1e-4))
    if scheme.granularity is not Granularity.PER_TENSOR:  # the 3.0 row then has a scale of its own
        np.testing.assert_allclose(fq[1], 3.0, rtol=1e-6)


def test_all_zero_tensor_gets_unit_scale() -> None:
    for scheme in SCHEMES:
        params = quant_params(np.zeros((2, 4), np.float32), scheme)
        np.testing.assert_array_equal(params.scale, 1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: observe_minmax(x, QuantScheme()),
        lambda x: quant_params(x, QuantScheme(granularity="per_group", group_size=2)),
        lambda x: quantize(x, quant_params(np.ones((2, 4)), QuantScheme())),
        lambda x: fake_quantize(x, QuantScheme(granularity="per_tensor")),
        lambda x: fake_quantize(x, quant_params(np.ones((2, 4)), QuantScheme())),
    ],
)
def test_non_finite_input_is_rejected_with_a_count(call: Any) -> None:
    x = np.ones((2, 4), np.float32)
    x[0, 1], x[1, 2], x[1, 3] = np.nan, np.inf, -np.inf
    with pytest.raises(ValueError, match="3 non-finite value.*finite inputs"):
        call(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 1}, "allowed: 2, 3, 4, 5, 6, 7, 8"),
        ({"bits": 9}, "allowed: 2, 3, 4, 5, 6, 7, 8"),
        ({"bits": 8.0}, "allowed: 2, 3, 4, 5, 6, 7, 8"),
        ({"granularity": "per_group"}, "group_size > 0"),
        ({"granularity": "per_group", "group_size": -4}, "group_size > 0"),
        ({"group_size": 64}, "only allowed with granularity 'per_group'"),
        ({"granularity": "per_row"}, "'per_tensor', 'per_channel', 'per_group', 'per_token'"),
        ({"signed": False, "narrow": True}, "narrow=False"),
    ],
)
def test_invalid_schemes_name_the_allowed_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QuantScheme(**kwargs)


def test_shape_dependent_errors_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="allowed group sizes: 1, 2, 3, 6"):
        quant_params(np.ones((2, 6)), QuantScheme(granularity="per_group", group_size=4))
    with pytest.raises(ValueError, match=r"allowed: -2\.\.1"):
        quant_params(np.ones((2, 6)), QuantScheme(axis=2))
    with pytest.raises(ValueError, match="needs scale shape"):
        quantize(np.ones((3, 6)), quant_params(np.ones((2, 6)), QuantScheme()))
    with pytest.raises(ValueError, match="empty"):
        quant_params(np.ones((0, 6)), QuantScheme())
    with pytest.raises(TypeError, match="QuantScheme or QuantParams"):
        fake_quantize(np.ones(3), "per_tensor")  # type: ignore[arg-type]


def test_params_validate_and_freeze_their_arrays() -> None:
    scheme = QuantScheme(symmetric=False, bits=4, signed=False, granularity="per_tensor")
    with pytest.raises(ValueError, match="finite and > 0"):
        QuantParams(np.zeros((1,)), np.zeros((1,)), scheme)
    with pytest.raises(ValueError, match=r"integer in \[0, 15\]"):
        QuantParams(np.ones((1,)), np.full((1,), 16.0), scheme)
    params = quant_params(np.arange(4.0), scheme)
    with pytest.raises(ValueError, match="read-only"):
        params.scale[...] = 2.0


# --- 9. worked examples ------------------------------------------------------------------------


def test_qrange_by_hand() -> None:
    assert qrange(8, True, False) == (-128, 127)
    assert qrange(8, True, True) == (-127, 127)
    assert qrange(4, False, False) == (0, 15)
    assert qrange(4, False, True) == (1, 15)
    assert qrange(2, True, False) == (-2, 1)
    assert (QuantScheme(bits=4).qmin, QuantScheme(bits=4).qmax) == (-8, 7)


def test_symmetric_int8_per_channel_by_hand() -> None:
    # row 0: m = 1, scale = 1/127; 0.1 * 127 = 12.7 -> 13.
    # row 1: m = 1.984375 = 127/64, scale = 1/64 exactly; 2.5, 3.5 and -2.5 steps round half to
    # even: 2, 4, -2.
    w = np.array([[1.0, -1.0, 0.1, 0.0], [1.984375, 0.0390625, 0.0546875, -0.0390625]], np.float32)
    params = quant_params(w, QuantScheme())
    assert params.scale.shape == (2, 1)
    np.testing.assert_array_equal(params.flat_scale(), np.array([1 / 127, 1 / 64], np.float32))
    np.testing.assert_array_equal(params.flat_zero_point(), [0, 0])
    q = quantize(w, params)
    np.testing.assert_array_equal(q, np.array([[127, -127, 13, 0], [127, 2, 4, -2]], np.int8))
    np.testing.assert_array_equal(dequantize(q, params)[1], [1.984375, 0.03125, 0.0625, -0.03125])
    np.testing.assert_allclose(dequantize(q, params)[0], [1.0, -1.0, 13 / 127, 0.0], rtol=1e-7)


def test_asymmetric_uint8_per_tensor_by_hand() -> None:
    # lo = -1, hi = 2.984375: scale = 3.984375 / 255 = 1/64, zero_point = rint(0 + 64) = 64.
    # 0.0078125 = half a step -> 64.5 -> 64 (half to even); 0.0234375 = 1.5 steps -> 65.5 -> 66.
    scheme = QuantScheme(symmetric=False, signed=False, granularity="per_tensor")
    x = np.array([-1.0, 0.0, 0.5, 2.984375, 0.0078125, 0.0234375], np.float32)
    params = quant_params(x, scheme)
    assert params.scale.shape == (1,) and params.flat_scale().shape == ()
    assert params.scale[0] == 1 / 64 and params.zero_point[0] == 64
    q = quantize(x, params)
    np.testing.assert_array_equal(q, np.array([0, 64, 96, 255, 64, 66], np.uint8))
    np.testing.assert_array_equal(dequantize(q, params), [-1.0, 0.0, 0.5, 2.984375, 0.0, 0.03125])
    # all-positive data: the range is widened to include 0, so 0 is code 0 and scale = 4/255.
    positive = quant_params(np.array([2.0, 4.0], np.float32), scheme)
    assert positive.zero_point[0] == 0 and positive.scale[0] == np.float32(4 / 255)


def test_observed_shapes_per_granularity() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    expected = {
        QuantScheme(granularity="per_tensor"): ((1, 1, 1), ()),
        QuantScheme(axis=1): ((1, 3, 1), (3,)),
        QuantScheme(axis=-1): ((1, 1, 4), (4,)),
        QuantScheme(granularity=Granularity.PER_TOKEN): ((2, 3, 1), (2, 3)),
        QuantScheme(granularity="per_group", group_size=2): ((2, 3, 2, 1), (2, 3, 2)),
    }
    for scheme, (keepdims, flat) in expected.items():
        lo, hi = observe_minmax(x, scheme)
        assert lo.shape == hi.shape == keepdims
        assert quant_params(x, scheme).flat_scale().shape == flat
    lo, hi = observe_minmax(x, QuantScheme(granularity="per_group", group_size=2))
    np.testing.assert_array_equal(lo[0, 0, :, 0], [0, 2])
    np.testing.assert_array_equal(hi[1, 2, :, 0], [21, 23])


def test_compute_params_from_calibrated_ranges() -> None:
    # int4 symmetric: m = max(|-3|, |1.75|) = 3 -> scale 3/7; asymmetric widened to [0, 1.5].
    sym = compute_params(np.array([-3.0]), np.array([1.75]), QuantScheme(bits=4, granularity="per_tensor"))
    assert sym.scale[0] == np.float32(3 / 7) and sym.zero_point[0] == 0
    asym = QuantScheme(bits=4, symmetric=False, signed=False, granularity="per_tensor")
    params = compute_params(np.array([0.5]), np.array([1.5]), asym)
    assert params.scale[0] == np.float32(0.1) and params.zero_point[0] == 0
