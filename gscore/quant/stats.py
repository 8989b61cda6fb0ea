"""Calibration statistics of one layer's inputs, accumulated over rows (tokens).

Each accumulator keeps a raw float64 *sum* over rows and the (weighted) row count
separately, never a running mean, so that accumulators built on different batches, or in
different processes, combine exactly by adding both (``merge``, or an AllReduce SUM of
``total`` and ``count`` followed by ``from_sums``).

Sums of several partial sums are compensated: ``total`` is the float64 running sum and
``residual`` the rounding error each addition made (Knuth's TwoSum, exact), so
``total + residual`` carries about twice float64's precision. That makes the result
independent of the order the partial sums arrive in (up to a final rounding that differs only
when the exact sum lies within ~1e-32 relative of a rounding boundary): one process adding
windows one by one and data-parallel workers each adding their share, then merging, compute
the same Hessian bits. A single partial sum (every row in one ``add``) has residual 0, the
plain float64 sum.

Row weights in [0, 1] let the caller down-weight or drop rows: weight ``w`` adds ``w`` times
the row's contribution and ``w`` to the count, and weight 0 is the same as leaving the row
out. The attention-sink token at position 0 of every window, whose activations can be a
thousand times the typical ones, is the row a caller drops or down-weights.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import numpy.typing as npt

from gscore.errors import CalibrationDataError
from gscore.quant.checks import require_finite


def _weighted_rows(x: npt.ArrayLike, row_weights: npt.ArrayLike | None, features: int) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``(rows [r, features], weights [r] float64 or None for all ones, weighted count)``.

    ``x`` is ``[..., features]``; ``row_weights`` has ``x.shape[:-1]``. Rows of weight 0 are
    dropped here, so they cost nothing and contribute exactly nothing.
    """
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] != features:
        raise ValueError(f"inputs must be shaped [..., {features}] (last axis = in_features), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"inputs must be floating point, got dtype {x.dtype}")
    rows = x.reshape(-1, features)
    require_finite(rows, "calibration input")
    if row_weights is None:
        return rows, None, float(rows.shape[0])
    weights = np.asarray(row_weights, dtype=np.float64)
    if weights.shape != x.shape[:-1]:
        raise ValueError(f"row_weights must have the inputs' leading shape {x.shape[:-1]}, got {weights.shape}")
    weights = weights.reshape(-1)
    if weights.size and not (np.isfinite(weights).all() and weights.min() >= 0.0 and weights.max() <= 1.0):
        raise ValueError("row_weights must be finite and in [0, 1] (0 drops a row, 1 keeps it fully)")
    kept = weights > 0.0
    rows, weights = rows[kept], weights[kept]
    count = float(weights.sum())
    return rows, (None if (weights == 1.0).all() else weights), count


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a + b rounded, its rounding error)``, elementwise and exact: ``s + e == a + b`` (TwoSum)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


class _RowSums:
    """A float64 sum over weighted rows plus their weighted count; subclasses say what is summed.

    ``total`` is the running float64 sum, ``residual`` the accumulated rounding errors of the
    additions (module docstring); the sum itself is :attr:`value`.
    """

    def __init__(self, total: np.ndarray, count: float = 0.0) -> None:
        self.total = total
        self.residual = np.zeros_like(total)
        self.count = float(count)

    @property
    def value(self) -> np.ndarray:
        """The compensated sum ``total + residual`` (float64, the shape of ``total``)."""
        return self.total + self.residual

    def _accumulate(self, partial: np.ndarray, residual: np.ndarray | None = None) -> None:
        if self.count == 0 and not (self.total.any() or self.residual.any()):
            # 0 + partial is exact (TwoSum's error is 0), and a calibration run adds each layer's
            # rows in one partial: skip four passes over an [in, in] float64 array. The count
            # test spares later additions the zero check (add and merge count after this);
            # adding +0.0 keeps the bits TwoSum gives (-0.0 becomes +0.0).
            self.total = np.add(partial, 0.0)
            if residual is not None:
                self.residual = residual + 0.0
            return
        self.total, error = _two_sum(self.total, partial)
        self.residual += error if residual is None else error + residual

    @property
    def in_features(self) -> int:
        """Width of the input rows (the layer's ``in`` axis)."""
        return self.total.shape[0]

    def _row_sum(self, rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def add(self, x: npt.ArrayLike, row_weights: npt.ArrayLike | None = None) -> None:
        """Accumulate inputs ``x [..., in]`` (float16/32/64), each row weighted by ``row_weights``
        (shape ``x.shape[:-1]``, values in [0, 1]; None = all 1).

        Raises ValueError for a wrong shape or dtype, non-finite inputs, or weights outside [0, 1].
        """
        rows, weights, count = _weighted_rows(x, row_weights, self.in_features)
        if rows.shape[0]:
            self._accumulate(self._row_sum(rows, weights))
        self.count += count

    def merge(self, other: Self) -> None:
        """Add ``other``'s sums into this one: the result is the accumulator of both row sets."""
        if type(other) is not type(self) or other.total.shape != self.total.shape:
            raise ValueError(f"can only merge a {type(self).__name__} of the same in_features ({self.in_features})")
        self._accumulate(other.total, other.residual)
        self.count += other.count

    @classmethod
    def from_sums(cls, total: npt.ArrayLike, count: float, residual: npt.ArrayLike | None = None) -> Self:
        """An accumulator holding ``total`` (and its ``residual``, default 0) and ``count``, e.g.
        after an AllReduce SUM, or one worker's share gathered by another."""
        total = np.array(total, dtype=np.float64)
        if total.ndim == 0 or total.shape[0] < 1:
            raise ValueError(f"total must be the float64 sum array of a {cls.__name__}, got shape {total.shape}")
        made = cls(total.shape[0])
        if total.shape != made.total.shape:
            raise ValueError(f"total must be shaped {made.total.shape} for {cls.__name__}, got {total.shape}")
        if not (np.isfinite(total).all() and np.isfinite(count) and count >= 0):
            raise ValueError("total must be finite and count finite and >= 0")
        made.total, made.count = total, float(count)
        if residual is not None:
            residual = np.array(residual, dtype=np.float64)
            if residual.shape != total.shape or not np.isfinite(residual).all():
                raise ValueError(f"residual must be finite and shaped like total {total.shape}, got shape {residual.shape}")
            made.residual = residual
        return made

    def _require_rows(self) -> None:
        if self.count <= 0:
            raise CalibrationDataError(
                f"{type(self).__name__} has no calibration rows (weighted count {self.count}); "
                "add inputs with a nonzero row weight first"
            )


_FLOAT32_PEAK_SPREAD = 16.0
"""Float32 rows whose largest magnitude is at most this many times the median row's are
multiplied in float32 (their squares differ by at most 256x, so none swamps another at float32's
24 bits); rows above it (the attention sink: ~1e3x) are multiplied in float64."""


def _gram_of_float32_rows(rows: np.ndarray) -> np.ndarray:
    """``XᵀX`` float64 of float32 (or float16) rows ``[r, in]``: the ordinary rows' products
    summed by a float32 ``syrk`` (about twice as fast as float64, and no float64 copy of the
    rows), the few large rows' in float64.

    Relative to the ordinary rows' own ``Σ |x_i x_j|`` the float32 part is off by the float32
    rounding of a dot product (at most ``r · 2⁻²⁴``, typically ``~sqrt(r) · 2⁻²⁴``), far inside
    GPTQ's 1 % damping; a large row, whose square in float32 would swallow every ordinary row's
    contribution to an entry, is added exactly as the float64 path adds it.
    """
    rows = rows.astype(np.float32, copy=False)
    peaks = np.abs(rows).max(axis=1)
    large = peaks > _FLOAT32_PEAK_SPREAD * np.quantile(peaks, 0.5, method="lower")
    if not large.any():
        return (rows.T @ rows).astype(np.float64)  # numpy uses the symmetric rank-k update (ssyrk)
    ordinary, outliers = rows[~large], rows[large].astype(np.float64)
    return (ordinary.T @ ordinary).astype(np.float64) + outliers.T @ outliers


class HessianAccumulator(_RowSums):
    """``XᵀX`` of one linear layer's inputs, for GPTQ.

    ``total`` is the raw float64 ``[in, in]`` sum ``Σ_r w_r x_r x_rᵀ`` and ``count`` the
    weighted row count ``Σ_r w_r``. Float64 because the sink token's inputs can be ~1e3
    times the others: in float32 its square would swamp the ordinary rows' contributions.
    Unweighted float32 or float16 rows (what calibration observers record) are multiplied
    in float32 except for such outlier rows (:func:`_gram_of_float32_rows`); float64 rows and
    weighted rows entirely in float64.
    """

    def __init__(self, in_features: int) -> None:
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        super().__init__(np.zeros((in_features, in_features), np.float64))

    def _row_sum(self, rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        if weights is None and rows.dtype in (np.float32, np.float16):
            return _gram_of_float32_rows(rows)
        scaled = rows.astype(np.float64)
        if weights is not None:
            scaled *= np.sqrt(weights)[:, None]
        return scaled.T @ scaled  # numpy uses the symmetric rank-k update (syrk) for a.T @ a

    def hessian(self) -> np.ndarray:
        """``H = 2 XᵀX / count``, float64 ``[in, in]``: the Hessian of the layer's mean
        squared output error with respect to one output row of its weight.

        Raises CalibrationDataError when no rows (of nonzero weight) were added.
        """
        self._require_rows()
        return self.value * (2.0 / self.count)


class AbsMeanAccumulator(_RowSums):
    """Mean ``|x|`` per input channel, for AWQ's activation-aware scales.

    ``total`` is the raw float64 ``[in]`` sum ``Σ_r w_r |x_r|`` and ``count`` ``Σ_r w_r``.
    """

    def __init__(self, in_features: int) -> None:
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        super().__init__(np.zeros(in_features, np.float64))

    def _row_sum(self, rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:  # |x| is exact in the input's dtype; the sum is float64 (no float64 copy of the rows)
            return np.abs(rows).sum(axis=0, dtype=np.float64)
        return weights @ np.abs(rows.astype(np.float64))

    def mean(self) -> np.ndarray:
        """Weighted mean ``|x|`` per input channel, float64 ``[in]``.

        Raises CalibrationDataError when no rows (of nonzero weight) were added.
        """
        self._require_rows()
        return self.value / self.count
