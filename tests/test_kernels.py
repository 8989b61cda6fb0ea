"""Native kernels against numpy references, at every dispatch level this CPU runs.

Tolerances (stated once, used everywhere):

* integer paths (A8W8 static and dynamic) are **exact**: activation codes, the int32
  accumulator and the zero-point terms are integers, and the output ``float32(t) * x_scale *
  w_scale`` is computed in the same order as the reference, so outputs are bit-identical;
* float paths (weight-only int8/int4, attention) are within ``FLOAT_TOL`` of a float64
  reference, relative to the magnitude of the terms summed: ``|y - y64| <= FLOAT_TOL *
  (|x| @ |W|.T)`` — the error bound of float32 dot products of a few thousand terms. Decode
  kernels with a zero point sum ``x·code`` and ``zp·Σx`` separately (one pass over the codes),
  so their terms are ``(|code| + |zp|) * scale``, not ``|code + zp| * scale``: the bound uses
  those (:func:`term_magnitude`), which matters where a group's codes nearly cancel its zp.
"""

from __future__ import annotations

import warnings

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mindspore import Tensor

from gscore import kernels
from gscore.kernels.ops import primitive
from gscore.quant import pack_int4

LEVELS = kernels.supported_levels()
FLOAT_TOL = 3e-5
PROPERTY = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module", autouse=True)
def _blocking():
    ms.runtime.launch_blocking()


def rows(draw, max_rows: int = 80) -> int:
    """M: decode shapes (1..8) as often as prefill shapes (9..max_rows)."""
    return draw(st.one_of(st.integers(1, 8), st.integers(9, max_rows)))


@st.composite
def w8_case(draw):
    m, n, k = rows(draw), draw(st.integers(1, 41)), draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((m, k)).astype(np.float32)
    q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    scale = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
    zp_neg = rng.integers(-8, 8, n).astype(np.float32) if draw(st.booleans()) else np.zeros(n, np.float32)
    return x, q, scale, zp_neg


def term_magnitude(x: np.ndarray, codes: np.ndarray, zp_neg: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``|x| @ ((|code| + |zp|) * scale).T``: the magnitude of the terms a zero-point kernel sums
    (``zp_neg``/``scale`` already expanded to ``codes``' shape)."""
    return np.abs(x.astype(np.float64)) @ ((np.abs(codes.astype(np.float64)) + np.abs(zp_neg)) * scale).T


def assert_float_close(y: np.ndarray, reference: np.ndarray, magnitude: np.ndarray) -> None:
    bound = FLOAT_TOL * magnitude + 1e-30
    excess = np.abs(y.astype(np.float64) - reference) - bound
    assert excess.max() <= 0, f"max error over bound {excess.max():.3g} (bound up to {bound.max():.3g})"


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=w8_case())
def test_w8_linear_matches_numpy(level, case):
    x, q, scale, zp_neg = case
    w = (q.astype(np.float64) + zp_neg[:, None]) * scale[:, None]
    y = primitive("w8_linear", level)(Tensor(x), Tensor(q), Tensor(scale), Tensor(zp_neg)).asnumpy()
    assert y.shape == (x.shape[0], q.shape[0]) and y.dtype == np.float32
    assert_float_close(y, x.astype(np.float64) @ w.T, term_magnitude(x, q, zp_neg[:, None].astype(np.float64), scale[:, None].astype(np.float64)))


@st.composite
def w4_case(draw):
    group = draw(st.sampled_from([2, 6, 16, 32, 64, 128]))
    k = 2 * draw(st.integers(1, 160))  # packed two per byte: even K, often not a multiple of the group
    m, n = rows(draw), draw(st.integers(1, 37))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = -(-k // group)
    x = rng.standard_normal((m, k)).astype(np.float32)
    codes = rng.integers(-8, 8, (n, k)).astype(np.int8)
    scale = (rng.random((n, groups)) * 0.1 + 1e-3).astype(np.float32)
    zp_neg = rng.integers(-7, 8, (n, groups)).astype(np.float32)
    return x, codes, scale, zp_neg, group


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=w4_case())
def test_w4_linear_matches_numpy_with_ragged_groups(level, case):
    x, codes, scale, zp_neg, group = case
    k = x.shape[1]
    per_column = np.arange(k) // group
    w = (codes.astype(np.float64) + zp_neg[:, per_column]) * scale[:, per_column]
    out = primitive("w4_linear", level)(Tensor(x), Tensor(pack_int4(codes)), Tensor(scale), Tensor(zp_neg), Tensor(np.array([group], np.int32)))
    y = out.asnumpy()
    assert_float_close(y, x.astype(np.float64) @ w.T, term_magnitude(x, codes, zp_neg[:, per_column].astype(np.float64), scale[:, per_column].astype(np.float64)))


def a8w8_reference(x, q, w_scale, w_zp_neg, x_scale=None, x_zp=None):
    """Codes as the MindSpore path computes them, integer products, one float rounding."""
    if x_scale is None:
        amax = np.abs(x).max(axis=1, keepdims=True)
        s = np.maximum(amax / np.float32(127.0), np.float32(1e-12)).astype(np.float32)
        codes = np.clip(np.rint(x / s), -127, 127)
        zp = 0
    else:
        s = np.full((x.shape[0], 1), x_scale, np.float32)
        codes = np.clip(np.rint(x / np.float32(x_scale)) + np.float32(x_zp), -128, 127)
        zp = int(x_zp)
    xi = codes.astype(np.int64) - zp
    wi = q.astype(np.int64) + w_zp_neg.astype(np.int64)[:, None]
    t = xi @ wi.T
    return (t.astype(np.float32) * s) * w_scale[None, :]


@st.composite
def a8w8_case(draw):
    m, n, k = rows(draw), draw(st.integers(1, 41)), draw(st.integers(1, 600))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal((m, k)) * draw(st.sampled_from([1e-3, 1.0, 50.0]))).astype(np.float32)
    if draw(st.booleans()):
        x[0] = 0.0  # an all-zero row: the dynamic scale floor
    q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w_scale = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
    w_zp_neg = rng.integers(-8, 8, n).astype(np.float32) if draw(st.booleans()) else np.zeros(n, np.float32)
    x_scale = np.float32(np.abs(x).max() / 100 + 1e-6)  # some values clip
    x_zp = np.float32(draw(st.integers(-20, 20)))
    return x, q, w_scale, w_zp_neg, x_scale, x_zp


def smooth_of(x: np.ndarray, smoothed: bool) -> np.ndarray:
    """SmoothQuant's input scale for ``x``'s columns (or ones), float32."""
    k = x.shape[1]
    return (np.linspace(0.5, 2.0, k) if smoothed else np.ones(k)).astype(np.float32)


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=a8w8_case(), smoothed=st.booleans())
def test_a8w8_static_is_exact(level, case, smoothed):
    x, q, w_scale, w_zp_neg, x_scale, x_zp = case
    smooth = smooth_of(x, smoothed)
    op = primitive("a8w8_static_linear", level)
    y = op(Tensor(x), Tensor(q), Tensor(w_scale), Tensor(w_zp_neg), Tensor(np.array([x_scale])), Tensor(np.array([x_zp])), Tensor(smooth)).asnumpy()
    np.testing.assert_array_equal(y, a8w8_reference(x * smooth, q, w_scale, w_zp_neg, x_scale, x_zp))


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=a8w8_case(), smoothed=st.booleans())
def test_a8w8_dynamic_is_exact(level, case, smoothed):
    x, q, w_scale, w_zp_neg, _, _ = case
    smooth = smooth_of(x, smoothed)
    y = primitive("a8w8_dynamic_linear", level)(Tensor(x), Tensor(q), Tensor(w_scale), Tensor(w_zp_neg), Tensor(smooth)).asnumpy()
    np.testing.assert_array_equal(y, a8w8_reference(x * smooth, q, w_scale, w_zp_neg))



@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dynamic", [False, True])
def test_a8w8_prefill_over_several_row_blocks_is_exact(level, dynamic):
    """200 rows: two full 96-row blocks and a ragged one (the AMX level tiles 32 rows at a time
    and leaves the rest to VNNI), K not a multiple of 64, a partial last panel of channels."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((200, 130)) * 3).astype(np.float32)
    q = rng.integers(-128, 128, (70, 130)).astype(np.int8)
    w_scale = (rng.random(70) * 0.02 + 1e-3).astype(np.float32)
    w_zp_neg = rng.integers(-8, 8, 70).astype(np.float32)
    x_scale, x_zp = np.float32(np.abs(x).max() / 100), np.float32(-5.0)
    smooth = smooth_of(x, True)
    if dynamic:
        y = primitive("a8w8_dynamic_linear", level)(Tensor(x), Tensor(q), Tensor(w_scale), Tensor(w_zp_neg), Tensor(smooth)).asnumpy()
        expected = a8w8_reference(x * smooth, q, w_scale, w_zp_neg)
    else:
        y = primitive("a8w8_static_linear", level)(Tensor(x), Tensor(q), Tensor(w_scale), Tensor(w_zp_neg), Tensor(np.array([x_scale])), Tensor(np.array([x_zp])), Tensor(smooth)).asnumpy()
        expected = a8w8_reference(x * smooth, q, w_scale, w_zp_neg, x_scale, x_zp)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=w8_case(), half=st.booleans())
def test_f32_linear_matches_numpy(level, case, half):
    """A float weight (a quantized network's float output head): decode (1..8 rows, vector
    blocks of 4, 2 or 1 weight rows and their remainder) and prefill (the 8 x 8 transposing
    pack, its scalar rest past whole 8-row and 8-column blocks); float16 inputs give float16."""
    x, q, _, _ = case
    w = np.random.default_rng(x.shape[1]).standard_normal(q.shape).astype(np.float32)
    x_in = x.astype(np.float16) if half else x
    y = primitive("f32_linear", level)(Tensor(x_in), Tensor(w)).asnumpy()
    assert y.shape == (x.shape[0], w.shape[0]) and y.dtype == x_in.dtype
    reference = x_in.astype(np.float64) @ w.astype(np.float64).T
    magnitude = np.abs(x_in.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
    if half:  # float32 sums rounded once to float16: half a float16 step more (2^-11 relative, 2^-25 near 0)
        excess = np.abs(y.astype(np.float64) - reference) - (FLOAT_TOL * magnitude + np.abs(reference) * 2.0**-11 + 2.0**-25)
        assert excess.max() <= 0, f"max error over bound {excess.max():.3g}"
    else:
        assert_float_close(y, reference, magnitude)


def test_f32_linear_streams_a_wide_weight():
    """A weight that packs to over 8 MiB at every level, rows over several micro-tiles."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((70, 1000)).astype(np.float32)
    w = rng.standard_normal((2150, 1000)).astype(np.float32)
    for level in LEVELS:
        y = primitive("f32_linear", level)(Tensor(x), Tensor(w)).asnumpy()
        assert_float_close(y, x.astype(np.float64) @ w.astype(np.float64).T, np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T)


def check_float_prefill(level, rows, width):
    """w8 and w4 prefill of ``rows`` x 1000 inputs against ``width`` output channels: K over two
    K blocks (at most 768 each) and past whole 16-value pack blocks and groups, a partial last
    panel."""
    k, groups = 1000, 16
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    q = rng.integers(-128, 128, (width, k)).astype(np.int8)
    scale, zp_neg = (rng.random(width) * 0.02 + 1e-3).astype(np.float32), rng.integers(-8, 8, width).astype(np.float32)
    y = primitive("w8_linear", level)(Tensor(x), Tensor(q), Tensor(scale), Tensor(zp_neg)).asnumpy()
    w = (q.astype(np.float64) + zp_neg[:, None]) * scale[:, None]
    assert_float_close(y, x.astype(np.float64) @ w.T, term_magnitude(x, q, zp_neg[:, None].astype(np.float64), scale[:, None].astype(np.float64)))
    codes, group = rng.integers(-8, 8, (width, k)).astype(np.int8), 64
    g_scale, g_zp_neg = (rng.random((width, groups)) * 0.1 + 1e-3).astype(np.float32), rng.integers(-7, 8, (width, groups)).astype(np.float32)
    per_column = np.arange(k) // group
    y = primitive("w4_linear", level)(Tensor(x), Tensor(pack_int4(codes)), Tensor(g_scale), Tensor(g_zp_neg), Tensor(np.array([group], np.int32))).asnumpy()
    w = (codes.astype(np.float64) + g_zp_neg[:, per_column]) * g_scale[:, per_column]
    assert_float_close(y, x.astype(np.float64) @ w.T, term_magnitude(x, codes, g_zp_neg[:, per_column].astype(np.float64), g_scale[:, per_column].astype(np.float64)))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("rows", [97, 200, 512])
def test_float_prefill_over_several_row_blocks(level, rows):
    """Rows shared out over several row blocks (the rows' micro-tiles split evenly between the blocks)."""
    check_float_prefill(level, rows, 70)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("rows", [97, 200])
def test_float_prefill_streams_wide_weights(level, rows):
    """2150 output channels pack to over 8 MiB at every level (panels of 8, 16 or 32 columns),
    so the GEMM packs a few panels per chunk and runs all rows against them
    (``gemm_f32_streamed``): A packed once for all rows and K blocks, the last of its
    micro-tiles partial (97 rows), panels grouped by at most 4, the last panel partial."""
    check_float_prefill(level, rows, 2150)


def activation_codes(x, x_scale=None, x_zp=None):
    """``(codes - zp)`` float64 ``[M, K]`` and the row scales ``[M, 1]`` float32, as the MindSpore
    input quantizers compute them (dynamic per token without ``x_scale``)."""
    if x_scale is None:
        s = np.maximum(np.abs(x).max(axis=1, keepdims=True) / np.float32(127.0), np.float32(1e-12)).astype(np.float32)
        return np.clip(np.rint(x / s), -127, 127).astype(np.float64), s
    codes = np.clip(np.rint(x / np.float32(x_scale)) + np.float32(x_zp), -128, 127)
    return codes.astype(np.float64) - float(x_zp), np.full((x.shape[0], 1), x_scale, np.float32)


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=w4_case(), dynamic=st.booleans(), smoothed=st.booleans(), magnitude=st.sampled_from([1e-3, 1.0, 50.0]))
def test_a8w4_matches_numpy_with_ragged_groups(level, case, dynamic, smoothed, magnitude):
    """Activation codes identical to the input quantizers' (so the float bound covers only the
    int4 products): ``(codes @ W.T) * row scale`` within FLOAT_TOL of the terms summed."""
    x, codes, scale, zp_neg, group = case
    x = x * np.float32(magnitude)
    smooth = smooth_of(x, smoothed)
    per_column = np.arange(x.shape[1]) // group
    w = (codes.astype(np.float64) + zp_neg[:, per_column]) * scale[:, per_column]
    weight = (Tensor(pack_int4(codes)), Tensor(scale), Tensor(zp_neg), Tensor(np.array([group], np.int32)))
    if dynamic:
        xc, s = activation_codes(x * smooth)
        y = primitive("a8w4_dynamic_linear", level)(Tensor(x), *weight, Tensor(smooth)).asnumpy()
    else:
        x_scale, x_zp = np.float32(np.abs(x * smooth).max() / 100 + 1e-6), np.float32(3.0)  # some values clip
        xc, s = activation_codes(x * smooth, x_scale, x_zp)
        y = primitive("a8w4_static_linear", level)(Tensor(x), *weight, Tensor(np.array([x_scale])), Tensor(np.array([x_zp])), Tensor(smooth)).asnumpy()
    magnitude = term_magnitude(xc, codes, zp_neg[:, per_column].astype(np.float64), scale[:, per_column].astype(np.float64)) * s
    assert_float_close(y, (xc @ w.T) * s, magnitude)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", ["w8_linear", "a8w8_dynamic_linear"])
def test_float16_activations_and_scales_give_float16_within_half_precision(level, name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 77)).astype(np.float16)
    q = rng.integers(-127, 128, (19, 77)).astype(np.int8)
    scale = (rng.random(19) * 0.02 + 1e-3).astype(np.float16)
    zp_neg = np.zeros(19, np.float16)
    extra = [Tensor(np.ones(77, np.float32))] if name.startswith("a8w8") else []
    y = primitive(name, level)(Tensor(x), Tensor(q), Tensor(scale), Tensor(zp_neg), *extra).asnumpy()
    assert y.dtype == np.float16
    w = q.astype(np.float64) * scale.astype(np.float64)[:, None]
    reference = x.astype(np.float64) @ w.T
    tol = 4e-3 if name == "w8_linear" else 2e-2  # half rounding; plus activation quantization
    assert np.abs(y - reference).max() <= tol * np.abs(reference).max()


def attention_reference(q, k, v, mask, scale, prefix=None):
    """float64 softmax attention with grouped heads; output [B, T, Hq * D]. ``prefix``: float
    keys and values [1, Hkv, P, D] before every sequence's own (the mask covers them first)."""
    if prefix is not None:
        k, v = (np.concatenate([np.broadcast_to(p, (x.shape[0], *p.shape[1:])), x], 2) for p, x in zip(prefix, (k, v)))
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k.astype(np.float64), group, axis=1)
    v = np.repeat(v.astype(np.float64), group, axis=1)
    scores = q.astype(np.float64) @ k.transpose(0, 1, 3, 2) * scale + mask
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = p @ v
    magnitude = p @ np.abs(v)
    b, h, t, d = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, t, h * d), magnitude.transpose(0, 2, 1, 3).reshape(b, t, h * d)


@st.composite
def attention_case(draw):
    b, kv_heads, group = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    t, d = draw(st.integers(1, 20)), draw(st.sampled_from([3, 8, 17, 64]))  # t >= 8: the transposed-key prefill path
    s = t + draw(st.integers(0, 40))
    p = draw(st.sampled_from([0, 0, 1, 3]))  # float prefix entries (none half the time)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.standard_normal((b, kv_heads * group, t, d)).astype(np.float32)
    start = s - t
    keys, queries = np.arange(s)[None, :], np.arange(start, s)[:, None]
    mask = np.where(keys > queries, np.float32(-1e9), np.float32(0.0))
    mask = np.concatenate([np.zeros((t, p), np.float32), mask], axis=1)
    if draw(st.booleans()):  # holes (padding): keys out before a row's last key in, which stays in
        holes = rng.random(mask.shape) < 0.3
        holes[np.arange(t), p + queries[:, 0]] = False
        mask[holes] = np.float32(-1e9)
    prefix = tuple(rng.standard_normal((1, kv_heads, p, d)).astype(np.float32) * 3 for _ in range(2)) if p else None
    return q, rng, kv_heads, s, mask, np.float32(1.0 / np.sqrt(d)), prefix


@pytest.mark.parametrize("level", LEVELS)
@PROPERTY
@given(case=attention_case(), kind=st.sampled_from(["float", "channel", "token"]))
def test_attention_over_the_cache_matches_numpy(level, case, kind):
    q, rng, kv_heads, s, mask, scale, prefix = case
    b, _, _, d = q.shape
    shape = (b, kv_heads, s, d)
    if kind == "float":
        k, v = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        inputs, (kf, vf) = (k, v), (k, v)
    else:
        kq, vq = rng.integers(-128, 128, shape).astype(np.int8), rng.integers(-128, 128, shape).astype(np.int8)
        if kind == "channel":
            ks, vs = (rng.random((kv_heads, 1, d)) * 0.05).astype(np.float32), (rng.random((kv_heads, 1, d)) * 0.05).astype(np.float32)
            kz, vz = rng.integers(-20, 20, (kv_heads, 1, d)).astype(np.float32), rng.integers(-20, 20, (kv_heads, 1, d)).astype(np.float32)
            inputs = (kq, ks, kz, vq, vs, vz)
            kf, vf = (kq - kz) * ks, (vq - vz) * vs
        else:
            ks, vs = (rng.random((b, kv_heads, s, 1)) * 0.05).astype(np.float32), (rng.random((b, kv_heads, s, 1)) * 0.05).astype(np.float32)
            inputs = (kq, ks, vq, vs)
            kf, vf = kq * ks, vq * vs
    reference, magnitude = attention_reference(q, kf, vf, mask, scale, prefix)
    if kind == "channel":
        # the kernel sums p * code and p * zero point apart (then scales once): its terms'
        # magnitude is that of (|code| + |zero point|) * scale, not of the value itself
        _, magnitude = attention_reference(q, kf, (np.abs(vq) + np.abs(vz)) * vs, mask, scale, prefix)
    out = primitive(f"attention_{kind}", level)(Tensor(q), *map(Tensor, inputs), Tensor(mask), Tensor(np.array([scale])), *map(Tensor, prefix or ()))
    y = out.asnumpy()
    assert y.shape == reference.shape
    assert_float_close(y, reference, magnitude + 1e-3 * np.abs(reference))


def encode_reference(x, kind, scale=None, zero=None):
    """What a cache stores for x [B, H, T, D]: codes (and per-token scales) as the cells' encode."""
    if kind == "float":
        return (x,), x
    if kind == "channel":
        codes = np.clip(np.rint(x / scale) + zero, -128, 127).astype(np.int8)
        return (codes,), (codes - zero) * scale
    amax = np.abs(x).max(-1, keepdims=True)
    s = np.maximum(amax / np.float32(127.0), np.float32(1e-8)).astype(np.float32)
    codes = np.clip(np.rint(x / s), -127, 127).astype(np.int8)
    return (codes, s), codes * s


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", ["float", "channel", "token"])
@pytest.mark.parametrize("prefix_length", [0, 2])
@pytest.mark.parametrize("token_rows", [False, True])
def test_preallocated_cache_attention_stores_in_place_then_attends(level, kind, prefix_length, token_rows):
    """Three calls (a 5-token prefill, then 1 and 2 tokens) on one buffer: after each, the new
    rows hold exactly what the cache cells' encode stores, length advanced, and the output is
    attention over every row so far (after the float prefix, when there is one). ``token_rows``:
    q, k, v passed as the projections give them, ``[batch * tokens, heads * head_dim]``."""
    rng = np.random.default_rng(1)
    batch, kv_heads, heads, d, cap = 2, 2, 6, 16, 12
    scale = np.float32(0.25)
    k_scale = (rng.random((kv_heads, 1, d)) * 0.05 + 0.01).astype(np.float32)
    k_zero = rng.integers(-9, 9, (kv_heads, 1, d)).astype(np.float32)
    v_scale = (rng.random((kv_heads, 1, d)) * 0.05 + 0.01).astype(np.float32)
    v_zero = rng.integers(-9, 9, (kv_heads, 1, d)).astype(np.float32)
    dtype = np.float32 if kind == "float" else np.int8
    k_buf, v_buf = np.zeros((cap, batch, kv_heads, d), dtype), np.zeros((cap, batch, kv_heads, d), dtype)
    k_sbuf, v_sbuf = np.zeros((cap, batch, kv_heads, 1), np.float32), np.zeros((cap, batch, kv_heads, 1), np.float32)
    length = np.zeros(1, np.int32)
    tensors = {name: ms.Parameter(Tensor(a), name=name) for name, a in (("k", k_buf), ("v", v_buf), ("ks", k_sbuf), ("vs", v_sbuf), ("len", length))}
    op = primitive(f"cache_attention_{kind}", level)
    prefix = tuple(rng.standard_normal((1, kv_heads, prefix_length, d)).astype(np.float32) for _ in range(2)) if prefix_length else None
    seen_k, seen_v = [], []
    start = 0
    for tokens in (5, 1, 2):
        q = rng.standard_normal((batch, heads, tokens, d)).astype(np.float32)
        k = rng.standard_normal((batch, kv_heads, tokens, d)).astype(np.float32)
        v = rng.standard_normal((batch, kv_heads, tokens, d)).astype(np.float32)
        keys, queries = np.arange(cap)[None, :], np.arange(start, start + tokens)[:, None]
        mask = np.where(keys > queries, np.float32(-1e9), np.float32(0.0))
        mask = np.concatenate([np.zeros((tokens, prefix_length), np.float32), mask], axis=1)
        if kind == "float":
            args = (tensors["k"], tensors["v"])
        elif kind == "channel":
            args = (tensors["k"], Tensor(k_scale), Tensor(k_zero), tensors["v"], Tensor(v_scale), Tensor(v_zero))
        else:
            args = (tensors["k"], tensors["ks"], tensors["v"], tensors["vs"])
        new = (q, k, v)
        if token_rows:
            new = tuple(x.transpose(0, 2, 1, 3).reshape(batch * tokens, -1) for x in new)
        out = op(*map(Tensor, new), *args, tensors["len"], Tensor(mask), Tensor(np.array([scale])), *map(Tensor, prefix or ())).asnumpy()
        assert out.shape == ((batch * tokens, heads * d) if token_rows else (batch, tokens, heads * d))
        k_stored, k_real = encode_reference(k, kind, k_scale, k_zero)
        v_stored, v_real = encode_reference(v, kind, v_scale, v_zero)
        rows = slice(start, start + tokens)
        np.testing.assert_array_equal(tensors["k"].asnumpy()[rows], k_stored[0].transpose(2, 0, 1, 3))
        np.testing.assert_array_equal(tensors["v"].asnumpy()[rows], v_stored[0].transpose(2, 0, 1, 3))
        if kind == "token":
            np.testing.assert_array_equal(tensors["ks"].asnumpy()[rows], k_stored[1].transpose(2, 0, 1, 3))
        start += tokens
        assert int(tensors["len"].asnumpy()[0]) == start
        seen_k.append(k_real)
        seen_v.append(v_real)
        reference, magnitude = attention_reference(q, np.concatenate(seen_k, 2), np.concatenate(seen_v, 2), mask[:, : prefix_length + start], scale, prefix)
        assert_float_close(out.reshape(reference.shape), reference, magnitude + 1e-5 * np.abs(reference))


@pytest.mark.parametrize("level", LEVELS)
def test_fused_elementwise_kernels_compute_the_mindspore_formulas(level):
    """rotary: bit-identical (same float operations in the same order); rms_norm and the SiLU
    gate within a few float32 ulp (2e-6 and 1e-5 relative: mean and exp are computed differently)."""
    from mindspore import ops

    from gscore.nn.fused import rotate_half

    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 3, 5, 16)).astype(np.float32))
    cos, sin = Tensor(rng.standard_normal((5, 16)).astype(np.float32)), Tensor(rng.standard_normal((5, 16)).astype(np.float32))
    np.testing.assert_array_equal(primitive("rotary", level)(x, cos, sin).asnumpy(), (x * cos + rotate_half(x) * sin).asnumpy())

    h = Tensor((rng.standard_normal((7, 37)) * 3).astype(np.float32))
    w = Tensor(rng.standard_normal(37).astype(np.float32))
    expected = (h * ops.rsqrt(ops.mean(ops.square(h), axis=-1, keep_dims=True) + 1e-5) * w).asnumpy()
    np.testing.assert_allclose(primitive("rms_norm", level)(h, w, Tensor([1e-5], ms.float32)).asnumpy(), expected, rtol=2e-6, atol=1e-6)

    gate = Tensor((rng.standard_normal((3, 1029)) * 6).astype(np.float32))
    up = Tensor(rng.standard_normal((3, 1029)).astype(np.float32))
    np.testing.assert_allclose(primitive("silu_mul", level)(gate, up).asnumpy(), (ops.silu(gate) * up).asnumpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("size", [1536, 576, 64, 12])
def test_online_hadamard_kernel_equals_the_orthonormal_matrix(level, size):
    """``gsk_hadamard`` (OnlineHadamard's factored product) against ``x @ hadamard(n)`` in float64,
    within FLOAT_TOL of the terms summed (entries are ±1/sqrt(n), so ``sum |x| / sqrt(n)`` per
    row), for decode and prefill row counts; the MindSpore-ops cell agrees within the same bound."""
    from gscore.nn.rotation import OnlineHadamard
    from gscore.quant.rotation import hadamard

    cell = OnlineHadamard(size)
    with kernels.forced(kernels.PORTABLE), warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        portable = OnlineHadamard(size)
    assert portable.native is None
    rng = np.random.default_rng(size)
    for rows in (1, 3, 70):
        x = (rng.standard_normal((rows, size)) * rng.choice([1e-2, 1.0, 30.0], size)).astype(np.float32)
        reference = x.astype(np.float64) @ hadamard(size)
        magnitude = np.abs(x).sum(axis=1, keepdims=True) / np.sqrt(size) * np.ones_like(reference)
        assert_float_close(primitive("hadamard", level)(Tensor(x), cell.left, cell.right).asnumpy(), reference, magnitude)
        assert_float_close(portable(Tensor(x)).asnumpy(), reference, magnitude)


@pytest.mark.parametrize("level", LEVELS)
def test_a_kernel_called_on_numpy_arrays_equals_the_operator(level):
    from gscore.kernels.direct import Call

    rng = np.random.default_rng(6)
    x, q = rng.standard_normal((3, 50)).astype(np.float32), rng.integers(-128, 128, (9, 50)).astype(np.int8)
    scale, zp_neg = np.full(9, 0.01, np.float32), np.zeros(9, np.float32)
    y = np.empty((3, 9), np.float32)
    Call("w8_linear", level, [x, q, scale, zp_neg], [y]).run()
    np.testing.assert_array_equal(y, primitive("w8_linear", level)(*map(Tensor, (x, q, scale, zp_neg))).asnumpy())
    with pytest.raises(kernels.KernelError, match="rejected its arguments"):
        Call("w8_linear", level, [x[:, :49].copy(), q, scale, zp_neg], [y]).run()
