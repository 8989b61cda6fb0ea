"""Properties of the calibration accumulators (``HessianAccumulator``, ``AbsMeanAccumulator``):
chunking, merging and row weights change nothing but what they should."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gscore.errors import CalibrationDataError
from gscore.quant import AbsMeanAccumulator, HessianAccumulator

PROPERTY = settings(max_examples=40, deadline=None)
ACCUMULATORS = st.sampled_from([HessianAccumulator, AbsMeanAccumulator])


def integer_rows(seed: int, rows: int, n: int) -> np.ndarray:
    """Small integers in float32: every product and sum is exact in float64, so sums taken in
    any order or grouping are bitwise equal and the properties can be tested exactly."""
    return np.random.default_rng(seed).integers(-20, 21, (rows, n)).astype(np.float32)


def result(acc: HessianAccumulator | AbsMeanAccumulator) -> np.ndarray:
    return acc.hessian() if isinstance(acc, HessianAccumulator) else acc.mean()


@PROPERTY
@given(kind=ACCUMULATORS, seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 60), n=st.integers(1, 12), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_adding_in_chunks_equals_adding_at_once(kind: type, seed: int, rows: int, n: int, cuts: list[int]) -> None:
    x = integer_rows(seed, rows, n)
    whole, chunked = kind(n), kind(n)
    whole.add(x)
    bounds = [0, *sorted(min(c, rows) for c in cuts), rows]
    for lo, hi in zip(bounds, bounds[1:]):
        chunked.add(x[lo:hi])
    np.testing.assert_array_equal(chunked.total, whole.total)
    assert chunked.count == whole.count == rows
    np.testing.assert_array_equal(result(chunked), result(whole))


@PROPERTY
@given(kind=ACCUMULATORS, seed=st.integers(0, 2**32 - 1), a=st.integers(0, 30), b=st.integers(1, 30), n=st.integers(1, 12))
def test_two_accumulators_summed_equal_one_over_the_union(kind: type, seed: int, a: int, b: int, n: int) -> None:
    """``merge`` and an AllReduce SUM of ``total`` and ``count`` (``from_sums``) both give the
    accumulator of the union of the rows."""
    x = integer_rows(seed, a + b, n)
    union, first, second = kind(n), kind(n), kind(n)
    union.add(x)
    first.add(x[:a])
    second.add(x[a:])
    reduced = kind.from_sums(first.total + second.total, first.count + second.count)
    first.merge(second)
    for combined in (first, reduced):
        np.testing.assert_array_equal(combined.total, union.total)
        assert combined.count == union.count
        np.testing.assert_array_equal(result(combined), result(union))


@PROPERTY
@given(kind=ACCUMULATORS, seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 40), n=st.integers(1, 10), batch=st.integers(1, 3))
def test_zero_row_weight_equals_dropping_the_row(kind: type, seed: int, rows: int, n: int, batch: int) -> None:
    """Any float data, leading dims ``[batch, rows]`` as a caller has them: bitwise equal."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, rows, n)).astype(np.float32)
    weights = (rng.random((batch, rows)) < 0.7).astype(np.float64)
    weights[0, 0] = 0.0  # e.g. the sink token at position 0
    weighted, dropped = kind(n), kind(n)
    weighted.add(x, row_weights=weights)
    kept = x[weights > 0]
    if kept.size:
        dropped.add(kept)
    np.testing.assert_array_equal(weighted.total, dropped.total)
    assert weighted.count == dropped.count == weights.sum()


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 40), n=st.integers(1, 10))
def test_fractional_row_weights_match_the_definitions(seed: int, rows: int, n: int) -> None:
    """H = 2 Σ w xxᵀ / Σ w and mean|x| = Σ w |x| / Σ w, in float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)) * 10.0 ** rng.uniform(-3, 3)
    w = rng.uniform(0.01, 1.0, rows)
    hessian, absmean = HessianAccumulator(n), AbsMeanAccumulator(n)
    hessian.add(x, row_weights=w)
    absmean.add(x, row_weights=w)
    want = 2 * (x.T * w) @ x / w.sum()
    # an off-diagonal entry can cancel to near zero, where a different summation order differs
    # relatively by far more than 1e-12: its rounding error is relative to the terms' size (the diagonal)
    np.testing.assert_allclose(hessian.hessian(), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(absmean.mean(), w @ np.abs(x) / w.sum(), rtol=1e-12)
    assert hessian.hessian().dtype == absmean.mean().dtype == np.float64


def test_hessian_of_float32_inputs_keeps_float64_sums() -> None:
    """A sink row 1e4 times the others: in float32 its square (1e8) would swallow the ordinary
    rows' contributions (~1) at float32's 7 digits; the float64 sum keeps them."""
    x = np.ones((2, 2), np.float32)
    x[0] *= 1e4
    acc = HessianAccumulator(2)
    acc.add(x)  # both rows in one product
    np.testing.assert_array_equal(acc.total, np.full((2, 2), 1e8 + 1.0))


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 80), n=st.integers(1, 12), sinks=st.integers(0, 3))
def test_float32_rows_keep_sink_rows_exact(seed: int, rows: int, n: int, sinks: int) -> None:
    """Float32 rows are multiplied in float32 except those far above the median row: with sink
    rows 1e3-1e4 times the others, ``XᵀX`` is within float32 rounding of the *ordinary* rows'
    products (``rows · 2⁻²⁴`` of their ``Σ|x_i x_j|``), as if the sinks were added exactly.
    A sink multiplied in float32 would be off by ~1e-7 of its square, far more."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    sinks = min(sinks, (rows - 1) // 2)  # a minority: the median row stays ordinary
    x[:sinks] *= np.float32(10.0 ** rng.uniform(3, 4))
    acc = HessianAccumulator(n)
    acc.add(x)
    wide = x.astype(np.float64)
    exact, ordinary, every = wide.T @ wide, np.abs(wide[sinks:]), np.abs(wide)
    float64_rounding = rows * 2.0**-52 * (every.T @ every)  # of either float64 sum
    assert acc.total.dtype == np.float64
    assert (np.abs(acc.total - exact) <= rows * 2.0**-24 * (ordinary.T @ ordinary) + float64_rounding).all()


@pytest.mark.parametrize("kind", [HessianAccumulator, AbsMeanAccumulator])
def test_bad_input_is_rejected(kind: type) -> None:
    acc = kind(3)
    with pytest.raises(CalibrationDataError, match="no calibration rows"):
        result(acc)
    acc.add(np.ones((2, 3)), row_weights=np.zeros(2))
    with pytest.raises(CalibrationDataError, match="no calibration rows"):
        result(acc)
    for x, weights, match in [
        (np.ones((2, 4)), None, r"\[\.\.\., 3\]"),
        (np.ones((2, 3), np.int32), None, "floating"),
        (np.full((2, 3), np.inf), None, "non-finite"),
        (np.ones((2, 3)), np.ones(3), "leading shape"),
        (np.ones((2, 3)), np.array([0.5, 1.5]), r"in \[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            acc.add(x, row_weights=weights)
    with pytest.raises(ValueError, match="same in_features"):
        acc.merge(kind(4))
    with pytest.raises(ValueError, match="positive int"):
        kind(0)
    with pytest.raises(ValueError, match="finite"):
        kind.from_sums(acc.total, -1.0)
