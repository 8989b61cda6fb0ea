"""gscore.quant's native path (quantize and range observation as kernels) equals its numpy path."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gscore import kernels
from gscore.quant import QuantScheme, observe_minmax, quant_params, quantize
from gscore.quant.layout import layout
from gscore.quant.native import trailing_rows
from gscore.testing.strategies import scheme_and_array

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="needs native kernels (no C++ compiler here)")


def numpy_path(fn: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced(kernels.PORTABLE):
            return fn(*args)


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
