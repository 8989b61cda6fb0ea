"""From observed ranges to scales and zero points.

The affine map is ``real = (code - zero_point) * scale``. Parameters are computed on the
small per-granularity min/max arrays (never on the full tensor), in float64, and stored in
float32, the dtype the quantizer computes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gscore.errors import NonFiniteValueError
from gscore.quant import native
from gscore.quant.blocks import row_blocks
from gscore.quant.checks import raise_nonfinite
from gscore.quant.layout import compact, layout
from gscore.quant.scheme import QuantScheme

# Smallest normal float32 (~1.18e-38). A subnormal or zero scale would make x / scale overflow
# to inf (or 0 / 0 = NaN) and lose precision; any scale at or above this floor is exact to
# float32 accuracy, and for ranges below it the floored scale is still larger than needed, so
# every observed value keeps within [qmin, qmax].
_SCALE_FLOOR = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Scale and zero point of one tensor, in the keepdims shape of its layout view.

    Attributes:
        scale: float32, > 0 and finite, real units per integer step. Its shape is the layout
            view's shape with 1 on the reduced axes (see :mod:`gscore.quant.layout`), e.g.
            ``[oc, 1]`` per channel on ``[oc, ic]``, ``[oc, ic/g, 1]`` per group.
        zero_point: float32 holding integers in ``[qmin, qmax]``, same shape as ``scale``; the
            code of real 0. All 0 for symmetric schemes.
        scheme: the scheme they were computed for.

    Both arrays are copied and made read-only, so a frozen params object cannot change under
    a tensor quantized with it. ``eq=False``: element-wise array equality has no single truth
    value; compare the arrays instead.

    Raises ValueError if the shapes differ, a scale is not finite and positive, or a zero point
    is not an integer in range (0 for symmetric schemes), e.g. for params loaded from elsewhere.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    scheme: QuantScheme

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, QuantScheme):
            raise TypeError(f"scheme must be a QuantScheme, got {type(self.scheme).__name__}")
        scale = np.array(self.scale, dtype=np.float32)
        zero = np.array(self.zero_point, dtype=np.float32)
        if scale.shape != zero.shape:
            raise ValueError(f"scale shape {scale.shape} and zero_point shape {zero.shape} must match")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("every scale must be finite and > 0")
        qmin, qmax = (0, 0) if self.scheme.symmetric else (self.scheme.qmin, self.scheme.qmax)
        if not ((np.rint(zero) == zero).all() and (zero >= qmin).all() and (zero <= qmax).all()):
            raise ValueError(f"every zero_point must be an integer in [{qmin}, {qmax}] for this scheme")
        scale.setflags(write=False)
        zero.setflags(write=False)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero)

    def flat_scale(self) -> np.ndarray:
        """Scale without the size-1 reduced axes: ``()`` per tensor, ``[C]`` per channel,
        ``x.shape[:-1]`` per token, ``[..., n/g]`` per group (``[oc, ic/g]`` for 2-D); the
        layout export formats use. A read-only view."""
        return compact(self.scale, self.scheme)

    def flat_zero_point(self) -> np.ndarray:
        """Zero point in the same compact shape as :meth:`flat_scale`. A read-only view."""
        return compact(self.zero_point, self.scheme)


def observe_minmax(x: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """Per-granularity minimum and maximum of ``x``.

    Returns ``(lo, hi)`` in the keepdims shape of the layout view (for PER_GROUP shaped
    against the grouped view ``[..., n/g, 1]``), in ``x``'s dtype promoted to at least float32,
    so they are exact. ``x`` (rank >= 1, not empty) is only read.

    Raises ValueError for empty or 0-d arrays and for NaN/±Inf (with their count), and
    ConfigError when the scheme does not fit ``x``'s shape.
    """
    x = np.asarray(x)
    view, reduced = layout(x.shape, scheme)
    if x.size == 0:
        raise ValueError(f"cannot observe the range of an empty array (shape {x.shape})")
    xv = x.reshape(view)
    dtype = np.result_type(x.dtype, np.float32)
    shape2d = native.trailing_rows(x, view, reduced)
    extremes = native.row_minmax(x.reshape(shape2d)) if shape2d else None
    if extremes is not None:  # one native pass (gscore.quant.native)
        keep = tuple(1 if a in reduced else n for a, n in enumerate(view))
        lo, hi = extremes[:, 0].reshape(keep), extremes[:, 1].reshape(keep)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise_nonfinite(x, "observed array")
        return lo, hi
    # block by block, so the max pass reads the block from cache, not memory (gscore.quant.blocks)
    lows, highs = [], []
    for rows in row_blocks(view):
        lows.append(np.min(xv[rows], axis=reduced, keepdims=True))
        highs.append(np.max(xv[rows], axis=reduced, keepdims=True))
    if 0 in reduced:  # the blocked axis is reduced too: combine the blocks' extremes
        lo, hi = np.minimum.reduce(lows), np.maximum.reduce(highs)
    else:
        lo, hi = np.concatenate(lows), np.concatenate(highs)
    lo, hi = lo.astype(dtype, copy=False), hi.astype(dtype, copy=False)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # NaN propagates through min/max
        raise_nonfinite(x, "observed array")
    return lo, hi


def compute_params(lo: np.ndarray, hi: np.ndarray, scheme: QuantScheme) -> QuantParams:
    """Scale and zero point from per-granularity ranges ``lo``/``hi`` (any matching shapes).

    Symmetric (``zero_point = 0``): ``m = max(|lo|, |hi|)``, ``scale = m / qmax``. ``+m`` thus
    maps exactly to ``qmax`` (127 for int8) and ``-m`` to ``-qmax``. This deliberately differs
    from MindSpore Golden Stick, which uses ``2m / 255``: that sends ``+m`` to 127.5, which then
    clips to 127 and loses half a step at the top. For unsigned symmetric schemes the same
    formula gives ``scale = m / (2**bits - 1)`` with code 0 at real 0: only meaningful for
    non-negative data (negative values clip to 0).

    Asymmetric: the range is first widened to include 0 (``lo = min(lo, 0)``,
    ``hi = max(hi, 0)``) so that real 0 is exactly a code (padding and ReLU zeros stay exact);
    ``scale = (hi - lo) / (qmax - qmin)`` and ``zero_point = clip(rint(qmin - lo / scale),
    qmin, qmax)``. Rounding the zero point moves the grid by at most half a step, so every
    value in ``[lo, hi]`` is still within ``scale / 2`` of a code.

    Degenerate ranges: where the range is 0 (all-zero channel, or nothing to span) the scale
    is 1.0, since any positive scale represents an all-zero channel exactly and 1.0 keeps
    later divisions harmless. Nonzero ranges so small that the scale would be subnormal are
    floored at the smallest normal float32 (see ``_SCALE_FLOOR``). Parameters are computed in
    float64 (``hi - lo`` cannot overflow) and the zero point from the float32 scale actually used.

    Raises ValueError for mismatched shapes, non-finite ``lo``/``hi``, or a range too wide for a
    float32 scale (only possible with float64 data beyond ~3.4e38).
    """
    lo64 = np.asarray(lo, dtype=np.float64)
    hi64 = np.asarray(hi, dtype=np.float64)
    if lo64.shape != hi64.shape:
        raise ValueError(f"lo shape {lo64.shape} and hi shape {hi64.shape} must match")
    if not (np.isfinite(lo64).all() and np.isfinite(hi64).all()):
        raise NonFiniteValueError("observed ranges (lo and hi) hold non-finite values (NaN or +/-Inf); quantization needs finite inputs")
    qmin, qmax = scheme.qmin, scheme.qmax
    if scheme.symmetric:
        span = np.maximum(np.abs(lo64), np.abs(hi64)) / qmax
    else:
        lo64 = np.minimum(lo64, 0.0)
        steps = qmax - qmin
        span = np.maximum(hi64, 0.0) / steps - lo64 / steps  # (hi - lo) / steps without overflow
    with np.errstate(over="ignore"):
        scale = span.astype(np.float32)
    if not np.isfinite(scale).all():
        raise ValueError("the observed range is too wide for a float32 scale (values beyond ~3.4e38)")
    scale = np.where(span == 0, np.float32(1.0), np.maximum(scale, np.float32(_SCALE_FLOOR)))
    if scheme.symmetric:
        zero = np.zeros_like(scale)
    else:
        zero = np.clip(np.rint(qmin - lo64 / scale.astype(np.float64)), qmin, qmax)
    return QuantParams(scale=scale, zero_point=zero, scheme=scheme)


def quant_params(x: np.ndarray, scheme: QuantScheme) -> QuantParams:
    """:func:`observe_minmax` then :func:`compute_params`: the parameters that fit ``x`` itself."""
    lo, hi = observe_minmax(x, scheme)
    return compute_params(lo, hi, scheme)
