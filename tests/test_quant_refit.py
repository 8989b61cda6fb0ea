"""Properties of the least-squares scale refit (``gscore.quant.refit``, GPTQ's ``refit_scales``):
codes never change, no row's error rises, the scales solve the weighted least-squares problem
an independent solver gives, and a refit GPTQ result re-quantizes exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_quant_gptq import check_result, correlated_inputs, hessian_of, output_error, padded, schemes

from gscore.quant import QuantScheme, gptq_quantize, quant_params, quantize, round_scale
from gscore.quant.refit import refit_scales

PROPERTY = settings(max_examples=30, deadline=None)


def row_errors(weight: np.ndarray, approx: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    diff = weight.astype(np.float64) - approx.astype(np.float64)
    return np.einsum("ij,jk,ik->i", diff, hessian, diff)


def dequantized(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """``(q - z) s`` with per-(row, group) ``scale``/``zero`` ``[out, groups]``, float64."""
    out, n = codes.shape
    groups = scale.shape[1]
    d = codes.astype(np.float64).reshape(out, groups, n // groups) - zero[:, :, None]
    return (d * scale[:, :, None]).reshape(out, n)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), out=st.integers(1, 8), n=st.integers(2, 40), rows=st.integers(1, 60), scheme=schemes(), fp16=st.booleans())
def test_refit_never_raises_a_rows_error_and_keeps_valid_params(seed: int, out: int, n: int, rows: int, scheme: QuantScheme, fp16: bool) -> None:
    rng = np.random.default_rng(seed)
    weight = padded(rng.standard_normal((out, n)).astype(np.float32), scheme)
    hessian = hessian_of(correlated_inputs(rng, rows, weight.shape[1], "mixed"))
    dtype = np.float16 if fp16 else np.float32
    params = round_scale(quant_params(weight, scheme), dtype)
    codes = quantize(weight, params)
    refit, improved = refit_scales(weight, codes, params, hessian, dtype)
    before = row_errors(weight, dequantized(codes, params.scale.reshape(out, -1), params.zero_point.reshape(out, -1)), hessian)
    after = row_errors(weight, dequantized(codes, refit.scale.reshape(out, -1), refit.zero_point.reshape(out, -1)), hessian)
    assert (after <= before * (1 + 1e-9) + 1e-12).all()
    assert (after[improved] < before[improved]).all()
    np.testing.assert_array_equal(refit.scale[~improved], params.scale[~improved])
    np.testing.assert_array_equal(refit.zero_point, params.zero_point)
    assert refit.scale.shape == params.scale.shape and (refit.scale > 0).all()
    np.testing.assert_array_equal(refit.scale, refit.scale.astype(dtype).astype(np.float32))


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), out=st.integers(1, 6), groups=st.integers(1, 4), width=st.sampled_from([4, 8]), symmetric=st.booleans())
def test_scales_solve_the_weighted_least_squares_problem(seed: int, out: int, groups: int, width: int, symmetric: bool) -> None:
    """Each row's scales equal ``lstsq(L D, L w)`` with ``H = LᵀL`` (full rank inputs), where the
    refit took them."""
    rng = np.random.default_rng(seed)
    n = groups * width
    scheme = QuantScheme(bits=4, symmetric=symmetric, signed=True, granularity="per_group", group_size=width) if groups > 1 else QuantScheme(bits=4, symmetric=symmetric, signed=True)
    weight = rng.standard_normal((out, n)).astype(np.float32)
    hessian = hessian_of(correlated_inputs(rng, 4 * n, n, "mixed"))
    params = quant_params(weight, scheme)
    codes = quantize(weight, params)
    refit, improved = refit_scales(weight, codes, params, hessian, np.float32)
    root = np.linalg.cholesky(hessian + 1e-12 * np.eye(n)).T
    zero = params.zero_point.reshape(out, groups)
    for r in np.flatnonzero(improved):
        d = codes[r].astype(np.float64).reshape(groups, width) - zero[r][:, None]
        design = np.zeros((n, groups))
        for g in range(groups):
            design[g * width : (g + 1) * width, g] = d[g]
        expected, *_ = np.linalg.lstsq(root @ design, root @ weight[r].astype(np.float64), rcond=None)
        np.testing.assert_allclose(refit.scale.reshape(out, groups)[r], expected, rtol=2e-4)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), out=st.integers(1, 10), n=st.integers(2, 40), scheme=schemes(), act_order=st.booleans())
def test_gptq_with_refit_keeps_its_codes_and_lowers_its_error(seed: int, out: int, n: int, scheme: QuantScheme, act_order: bool) -> None:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out, n)).astype(np.float32)
    hessian = hessian_of(correlated_inputs(rng, 3 * n, n, "lowrank"))
    static = act_order and scheme.group_size > 0
    plain = gptq_quantize(weight, hessian, scheme, act_order=act_order, static_groups=static)
    refit = gptq_quantize(weight, hessian, scheme, act_order=act_order, static_groups=static, refit_scales=True)
    assert refit.diagnostics.error_gptq <= plain.diagnostics.error_gptq * (1 + 1e-9) + 1e-12
    assert refit.diagnostics.error == pytest.approx(output_error(weight, refit.weight, hessian), rel=1e-7, abs=1e-9)
    assert 0 <= refit.diagnostics.refit_rows <= out and plain.diagnostics.refit_rows == 0
    check_result(refit, weight, scheme)


def test_refit_lowers_the_error_of_gptq_on_correlated_inputs() -> None:
    """Not a no-op: on correlated inputs most rows get new scales and the total error drops."""
    rng = np.random.default_rng(7)
    n, out = 64, 32
    scheme = QuantScheme(bits=4, symmetric=False, signed=True, granularity="per_group", group_size=16)
    weight = rng.standard_normal((out, n)).astype(np.float32)
    hessian = hessian_of(correlated_inputs(rng, 512, n, "mixed"))
    plain = gptq_quantize(weight, hessian, scheme, act_order=True, static_groups=True)
    refit = gptq_quantize(weight, hessian, scheme, act_order=True, static_groups=True, refit_scales=True)
    assert refit.diagnostics.refit_rows > out // 2
    assert refit.diagnostics.error_gptq < 0.99 * plain.diagnostics.error_gptq
