"""GPTQ's error-propagation target (``gscore.quant.propagation``) and the drift sums it is
built from (``ShiftAccumulator``): the target is the least-squares fit of the float output."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gscore.errors import CalibrationDataError
from gscore.quant import HessianAccumulator
from gscore.quant.propagation import propagated_target
from gscore.quant.stats import ShiftAccumulator

PROPERTY = settings(max_examples=40, deadline=None)


def drifted_inputs(seed: int, rows: int, n: int, drift: float) -> tuple[np.ndarray, np.ndarray]:
    """Float inputs ``x_ref`` and the same tokens' inputs ``x`` after upstream quantization error."""
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((rows, n)).astype(np.float32)
    return reference, (reference + drift * rng.standard_normal((rows, n))).astype(np.float32)


def sums(reference: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hessian, shift = HessianAccumulator(x.shape[1]), ShiftAccumulator(x.shape[1])
    hessian.add(x)
    shift.add_pair(reference, x)
    return hessian.hessian(), shift.shift()


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), out=st.integers(1, 6), drift=st.floats(0.01, 1.0))
def test_full_propagation_is_the_least_squares_fit_of_the_float_output(seed: int, n: int, out: int, drift: float) -> None:
    """alpha 1, no damping: ``W*`` minimizes ``Σ ‖W x_ref − W* x‖²`` over the calibration rows."""
    reference, x = drifted_inputs(seed, 4 * n + 8, n, drift)
    weight = np.random.default_rng(seed + 1).standard_normal((out, n)).astype(np.float32)
    target = propagated_target(weight, *sums(reference, x), alpha=1.0, damp_percent=0.0)
    fitted = np.linalg.lstsq(x.astype(np.float64), reference.astype(np.float64) @ weight.T.astype(np.float64), rcond=None)[0].T
    np.testing.assert_allclose(target, fitted, rtol=1e-3, atol=1e-3)
    error = lambda w: float(np.sum((reference @ weight.T.astype(np.float64) - x @ w.T.astype(np.float64)) ** 2))  # noqa: E731
    assert error(target) <= error(weight) * (1 + 1e-6) + 1e-9


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), alpha=st.floats(0.0, 1.0), damp=st.floats(0.0, 0.5))
def test_undrifted_inputs_or_alpha_zero_leave_the_weight(seed: int, n: int, alpha: float, damp: float) -> None:
    reference, x = drifted_inputs(seed, 2 * n + 4, n, 0.3)
    weight = np.random.default_rng(seed).standard_normal((3, n)).astype(np.float32)
    np.testing.assert_array_equal(propagated_target(weight, *sums(reference, x), alpha=0.0), weight)
    np.testing.assert_allclose(propagated_target(weight, *sums(x, x), alpha=alpha, damp_percent=damp), weight, rtol=0, atol=0)


def test_alpha_takes_that_share_of_the_correction() -> None:
    reference, x = drifted_inputs(7, 64, 8, 0.5)
    weight = np.random.default_rng(7).standard_normal((4, 8)).astype(np.float32)
    h, d = sums(reference, x)
    full = propagated_target(weight, h, d, alpha=1.0).astype(np.float64) - weight
    np.testing.assert_allclose(propagated_target(weight, h, d, alpha=0.25) - weight, 0.25 * full, rtol=1e-4, atol=1e-6)


def test_inputs_never_active_get_no_correction() -> None:
    reference, x = drifted_inputs(3, 40, 6, 0.5)
    x[:, 2] = 0.0
    weight = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    target = propagated_target(weight, *sums(reference, x), alpha=1.0, damp_percent=0.0)
    np.testing.assert_array_equal(target[:, 2], weight[:, 2])
    assert np.isfinite(target).all()


def test_shift_sums_merge_like_the_hessian_and_name_bad_pairs() -> None:
    reference, x = drifted_inputs(5, 30, 4, 0.5)
    whole, parts = ShiftAccumulator(4), ShiftAccumulator(4)
    whole.add_pair(reference, x)
    for lo, hi in ((0, 11), (11, 30)):
        share = ShiftAccumulator(4)
        share.add_pair(reference[lo:hi], x[lo:hi])
        parts.merge(share)
    np.testing.assert_allclose(parts.shift(), whole.shift(), rtol=1e-12)
    np.testing.assert_allclose(whole.shift(), 2 * (reference - x).astype(np.float64).T @ x / 30, rtol=1e-6)
    with pytest.raises(ValueError, match="pair up"):
        whole.add_pair(reference[:3], x[:4])
    with pytest.raises(CalibrationDataError):
        ShiftAccumulator(4).shift()
    with pytest.raises(ValueError, match="alpha"):
        propagated_target(np.ones((1, 4)), whole.shift(), whole.shift(), alpha=1.5)
