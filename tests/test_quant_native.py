"""gscore.quant's native path (quantize, range observation and GPTQ's column loop as kernels) equals its numpy path."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gscore import kernels
from gscore.quant import QuantScheme, gptq_quantize, native, observe_minmax, quant_params, quantize
from gscore.quant.layout import layout
from gscore.quant.native import trailing_rows
from gscore.testing.strategies import scheme_and_array

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="needs native kernels (no C++ compiler here)")


def numpy_path(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced(kernels.PORTABLE):
            return fn(*args, **kwargs)


@settings(max_examples=150, deadline=None)
@given(scheme_and_array(max_magnitude=1e4), st.booleans())
def test_native_codes_and_ranges_equal_numpy(case: tuple[dict[str, Any], np.ndarray], as_float32: bool) -> None:
    kwargs, x = case
    x = x.astype(np.float32) if as_float32 else x
    scheme = QuantScheme(**kwargs)
    lo, hi = observe_minmax(x, scheme)
    lo_np, hi_np = numpy_path(observe_minmax, x, scheme)
    np.testing.assert_array_equal(lo, lo_np)
    np.testing.assert_array_equal(hi, hi_np)
    params = quant_params(x, scheme)
    codes = quantize(x, params)
    reference = numpy_path(quantize, x, params)
    assert codes.dtype == reference.dtype and codes.shape == reference.shape
    np.testing.assert_array_equal(codes, reference)


def test_large_weight_rows_take_the_native_path_and_agree():
    rng = np.random.default_rng(9)
    w = (rng.standard_normal((300, 1000)) * rng.random((300, 1))).astype(np.float32)
    for scheme in (QuantScheme(bits=8, granularity="per_channel", axis=0), QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=100)):
        assert trailing_rows(w, *layout(w.shape, scheme)) is not None
        params = quant_params(w, scheme)
        np.testing.assert_array_equal(quantize(w, params), numpy_path(quantize, w, params))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_with_their_count(bad):
    x = np.ones((4, 8), np.float32)
    x[1, 2] = x[3, 0] = bad
    params = quant_params(np.ones((4, 8), np.float32), QuantScheme(bits=8, granularity="per_channel", axis=0))
    with pytest.raises(ValueError, match="2 non-finite value"):
        quantize(x, params)
    with pytest.raises(ValueError, match="2 non-finite value"):
        observe_minmax(x, params.scheme)


@st.composite
def gptq_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A weight, the Hessian of inputs (maybe with a sink row 1000x the others, maybe fewer rows
    than columns) and GPTQ options: per channel or per group (24: not a multiple of the 16-column
    sub-blocks), static or dynamic groups, in order or by activity, any block size."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits, symmetric = draw(st.sampled_from([4, 8])), draw(st.booleans())
    signed = symmetric or draw(st.booleans())
    group = draw(st.sampled_from([0, 4, 8, 24]))
    scheme = QuantScheme(bits=bits, symmetric=symmetric, signed=signed, granularity="per_group", group_size=group) if group else QuantScheme(bits=bits, symmetric=symmetric, signed=signed)
    out, n, rows = draw(st.integers(1, 12)), draw(st.integers(2, 60)), draw(st.integers(1, 80))
    x = rng.standard_normal((rows, n)) * rng.uniform(0.1, 3.0, n)
    if draw(st.booleans()):
        x[0] *= 1000.0
    act_order = draw(st.booleans())
    static = draw(st.booleans()) or (act_order and group > 0)
    options = {"act_order": act_order, "static_groups": static, "block_size": draw(st.integers(1, 40)), "scale_dtype": draw(st.sampled_from([np.float32, np.float16]))}
    return {"weight": rng.standard_normal((out, n)).astype(np.float32), "hessian": 2.0 * x.T @ x / rows, "scheme": scheme, "options": options}


def same_gptq(case: dict[str, Any]) -> None:
    native = gptq_quantize(case["weight"], case["hessian"], case["scheme"], **case["options"])
    reference = numpy_path(gptq_quantize, case["weight"], case["hessian"], case["scheme"], **case["options"])
    for got, want in ((native.codes, reference.codes), (native.weight, reference.weight), (native.params.scale, reference.params.scale), (native.params.zero_point, reference.params.zero_point)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))  # bit for bit, signed zeros included
    assert native.diagnostics == reference.diagnostics


@settings(max_examples=80, deadline=None)
@given(gptq_cases())
def test_native_gptq_column_loop_equals_numpy(case: dict[str, Any]) -> None:
    """GPTQ's column loop as a kernel computes numpy's loop bit for bit: codes, weights, the
    grids found on the way (dynamic groups) and every diagnostic."""
    same_gptq(case)


def test_native_gptq_on_a_layer_of_realistic_size_equals_numpy():
    """Several 128-column blocks of 16-column sub-blocks, 128-wide dynamic groups, 300 columns padded to 384."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 300)) * rng.uniform(0.1, 3.0, 300)
    x[0] *= 1000.0
    for scheme, options in (
        (QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=128), {"act_order": False, "static_groups": False}),
        (QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=128), {"act_order": True, "static_groups": True}),
        (QuantScheme(bits=8, granularity="per_channel", axis=0), {"act_order": True, "static_groups": False}),
    ):
        same_gptq({"weight": rng.standard_normal((40, 300)).astype(np.float32), "hessian": 2.0 * x.T @ x / 500, "scheme": scheme, "options": options})


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), out=st.integers(1, 70), groups=st.integers(1, 3), bits=st.sampled_from([4, 8]), symmetric=st.booleans(), signed=st.booleans())
def test_native_gptq_columns_update_every_array_as_numpy_does(seed: int, n: int, out: int, groups: int, bits: int, symmetric: bool, signed: bool) -> None:
    """One sub-block run by the kernel and by numpy from the same state: the updated weight
    columns, the errors fed back, codes and dequantized values all equal bit for bit (the final
    weights alone would hide a feedback off by an ulp: it rarely flips a rounding)."""
    from gscore.quant.gptq import _numpy_columns

    rng = np.random.default_rng(seed)
    scheme = QuantScheme(bits=bits, symmetric=symmetric, signed=symmetric or signed)
    work = rng.standard_normal((n, out)) * 10.0 ** rng.uniform(-2, 2, (n, 1))
    work[rng.random((n, out)) < 0.05] *= 1e40  # overflows float32 when divided: clipped to the bounds
    upper = np.triu(rng.standard_normal((n, n))) + np.diag(rng.uniform(0.5, 2.0, n))
    scale = rng.uniform(0.01, 1.0, (groups, out)).astype(np.float32)
    zero = (np.zeros((groups, out)) if symmetric else rng.integers(scheme.qmin, scheme.qmax + 1, (groups, out))).astype(np.float32)
    column_group = rng.integers(0, groups, n)
    first = int(rng.integers(0, n))
    last = int(rng.integers(first, n + 1))
    results = []
    for make in (native.gptq_columns, _numpy_columns):
        arrays = [work.copy(), upper, scale, zero, column_group, scheme, np.zeros((n, out), np.float32), np.zeros((n, out), np.float32), np.zeros((n, out))]
        with np.errstate(over="ignore"):
            make(*arrays)(first, last)
        results.append([arrays[0], *arrays[6:]])
    for got, want in zip(*results):
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
