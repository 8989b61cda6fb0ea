"""AWQ's pure math: activation-aware per-input-channel scales and the weight clipping search
(Lin et al., "AWQ", 2023; Golden Stick ``OutliersSuppressionType.AWQ`` with weight clip).

Scaling input channel ``j`` of every layer sharing an input by ``s_j`` (and dividing the
input by ``s_j``, folded into the preceding norm or linear) leaves the float outputs
unchanged but gives salient channels, those with large mean ``|x|``, finer quantization
steps. The search over the migration strength ``alpha``, scored on a decoder block's output,
runs a network and lives in the plugin; this module gives the scales for one ``alpha``.

The clipping search then shrinks each (output row, group)'s range where that lowers the
error of the group's partial dot products with sample inputs: rounding error on the many
ordinary weights matters more than clipping a rare outlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gscore.errors import ConfigError
from gscore.quant.checks import require_finite
from gscore.quant.core import fake_quantize
from gscore.quant.params import quant_params
from gscore.quant.scheme import QuantScheme
from gscore.quant.stored import round_scale, store_dtype
from gscore.quant.weights import checked_weight, pad_to_groups, weight_group_size

DEFAULT_CLIP_RATIOS: tuple[float, ...] = tuple(1.0 - i / 20 for i in range(10))
"""Golden Stick's default ``weight_clip_ratio``: 1.0, 0.95, ..., 0.55."""

_ROW_MAX_EPS = 1e-6  # added to a row's (group's) max |w| before normalising, as in the reference
_SCALE_EPS = 1e-4  # added to w_mean^(1-alpha), and the floor of every scale, as in the reference


def _grouped(a: np.ndarray, width: int) -> np.ndarray:
    """``a [rows, in]`` zero-padded to whole groups and viewed ``[rows, groups, width]``."""
    return pad_to_groups(a, width).reshape(a.shape[0], -1, width)


def _group_width(scheme: QuantScheme, columns: int) -> int:
    """Columns per (row, group): ``group_size`` per group, the whole row per output channel."""
    return weight_group_size(scheme, "AWQ") or columns


def awq_weight_mean(weights: Sequence[npt.ArrayLike], group_size: int = 0) -> np.ndarray:
    """Mean normalised weight magnitude per input channel, float64 ``[in]``.

    ``weights``: the ``[out_k, in]`` weights of every layer sharing the input (e.g. q, k, v),
    stacked along ``out``. Each row (or each group of ``group_size`` columns of a row, when
    the weights are quantized per group) is divided by its max ``|w|`` + 1e-6, then ``|w|`` is
    averaged over all output rows: how large a channel's weights are relative to what
    decides their quantization step.
    """
    if not weights:
        raise ValueError("awq_weight_mean needs at least one weight")
    checked = [checked_weight(w, "AWQ weight") for w in weights]
    if len({w.shape[1] for w in checked}) != 1:
        raise ValueError(f"weights sharing one input must have the same in size, got shapes {[w.shape for w in checked]}")
    stacked = np.abs(np.concatenate([w.astype(np.float64) for w in checked], axis=0))
    columns = stacked.shape[1]
    grouped = _grouped(stacked, group_size or columns)
    normalised = grouped / (grouped.max(axis=2, keepdims=True) + _ROW_MAX_EPS)
    return normalised.reshape(stacked.shape[0], -1)[:, :columns].mean(axis=0)


def awq_scales(act_mean: npt.ArrayLike, weight_mean: npt.ArrayLike, alpha: float, *, duo_scaling: bool = True) -> np.ndarray:
    """AWQ per-input-channel scales ``s`` for one migration strength ``alpha``, float32 ``[in]``.

    ``act_mean``: mean ``|x|`` per input channel (:class:`gscore.quant.AbsMeanAccumulator`);
    ``weight_mean``: :func:`awq_weight_mean`. With ``duo_scaling`` (the reference default)
    ``s = max(x^α / (w^(1-α) + 1e-4), 1e-4)``, otherwise ``s = max(x^α, 1e-4)``.
    Then ``s /= sqrt(max(s) · min(s))`` so the scales are centred on 1 in log scale.

    Dead channels (``act_mean == 0`` or ``weight_mean == 0``) get ``s = 1``: there is nothing
    to move. Unlike the reference they are also left out of the ``max · min`` normalisation,
    where their floored 1e-4 would otherwise shift every live scale up. Every scale is
    positive and finite.

    Raises ValueError for mismatched or non-finite statistics, negative values, or ``alpha``
    outside [0, 1].
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"AWQ alpha must be a number in [0, 1], got {alpha!r}")
    x = np.asarray(act_mean, dtype=np.float64)
    w = np.asarray(weight_mean, dtype=np.float64)
    if x.ndim != 1 or x.shape != w.shape:
        raise ValueError(f"act_mean and weight_mean must both be [in], got shapes {x.shape} and {w.shape}")
    if not (np.isfinite(x).all() and np.isfinite(w).all() and x.min(initial=0) >= 0 and w.min(initial=0) >= 0):
        raise ValueError("act_mean and weight_mean must be finite and >= 0 (means of magnitudes)")
    live = (x > 0) & (w > 0)
    scales = np.ones(x.shape, np.float64)
    if live.any():
        s = x[live] ** alpha
        if duo_scaling:
            s = s / (w[live] ** (1.0 - alpha) + _SCALE_EPS)
        s = np.maximum(s, _SCALE_EPS)
        scales[live] = s / np.sqrt(s.max() * s.min())
    return scales.astype(np.float32)


def scaled_fake_quantize(weight: npt.ArrayLike, scales: npt.ArrayLike, scheme: QuantScheme, scale_dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """``fake_quantize(W · s) / s``, float32 ``[out, in]``: the weight AWQ's search scores for
    scales ``s [in]`` (the layer's float function is unchanged, only its rounding moves).

    The quantization scales come from ``W · s`` itself, rounded to ``scale_dtype`` as stored.
    Per group with ``in`` not a multiple of ``g`` the scaled weight is padded with zero columns.
    """
    weight = checked_weight(weight, "AWQ weight")
    s = np.asarray(scales, dtype=np.float32)
    if s.shape != (weight.shape[1],) or not (np.isfinite(s).all() and s.min() > 0):
        raise ValueError(f"scales must be finite, > 0 and shaped [in] = [{weight.shape[1]}], got shape {s.shape}")
    width = _group_width(scheme, weight.shape[1])
    scaled = weight.astype(np.float32) * s
    padded = _grouped(scaled, width).reshape(weight.shape[0], -1)
    params = round_scale(quant_params(padded, scheme), scale_dtype)
    return fake_quantize(padded, params)[:, : weight.shape[1]] / s


@dataclass(frozen=True, eq=False)
class ClipResult:
    """Outcome of :func:`search_weight_clip`.

    Attributes:
        weight: float32 ``[out, in]``, the float weight clipped per (row, group); not quantized.
        ratios: float32 ``[out, groups]`` (``groups = 1`` per channel), the ratio chosen for
            each (row, group).
        error: chosen partial-product error summed over (row, group): mean over sample rows
            of the squared difference between quantized and float partial dot products.
        error_unclipped: the same without clipping (ratio 1).
    """

    weight: np.ndarray
    ratios: np.ndarray
    error: float
    error_unclipped: float


def _clip_bounds(grouped: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` per (row, group) at ratio 1: ``±max|w|`` for symmetric schemes (their
    scale depends only on it), the group's own min and max for asymmetric ones."""
    if symmetric:
        hi = np.abs(grouped).max(axis=2, keepdims=True)
        return -hi, hi
    return grouped.min(axis=2, keepdims=True), grouped.max(axis=2, keepdims=True)


def _hessian_blocks(hessian: npt.ArrayLike, width: int) -> np.ndarray:
    """The diagonal blocks ``H_gg / 2`` ``[groups, width, width]`` (float32) of ``hessian = 2XᵀX/rows``
    (``[in, in]``, zero-padded to whole groups): ``d (H_gg/2) dᵀ = mean_rows((x_g · d)²)``, so a
    weight change ``d`` on group ``g`` scores exactly as over every calibration row. Only the
    diagonal blocks are needed, as the search scores each group on its own."""
    h = np.asarray(hessian, np.float64)
    padded = np.pad(h, ((0, -h.shape[0] % width), (0, -h.shape[1] % width)))
    groups = padded.shape[0] // width
    return np.stack([padded[g * width : (g + 1) * width, g * width : (g + 1) * width] for g in range(groups)]).astype(np.float32) * np.float32(0.5)


def _scores(change: np.ndarray, inputs: np.ndarray, quadratic: bool) -> np.ndarray:
    """Mean squared partial dot product ``[b, groups]`` of ``change [groups, b, width]`` with the
    group's sample rows ``inputs [groups, width, rows]`` or, ``quadratic``, as the quadratic form
    on ``inputs = H_gg / 2`` (the same value, without the rows)."""
    partial = np.matmul(change, inputs)  # [groups, b, rows or width]
    if quadratic:
        return np.einsum("gbw,gbw->bg", partial.astype(np.float64), change)
    return np.mean(np.square(partial, dtype=np.float64), axis=2).T


def search_weight_clip(
    weight: npt.ArrayLike,
    x: npt.ArrayLike | None,
    scheme: QuantScheme,
    ratios: Sequence[float] = DEFAULT_CLIP_RATIOS,
    *,
    batch_rows: int = 256,
    scale_dtype: npt.DTypeLike = np.float32,
    hessian: npt.ArrayLike | None = None,
) -> ClipResult:
    """Pick, per (output row, group), the clipping ratio that best preserves the group's partial
    dot products with sample inputs ``x [rows, in]`` once quantized.

    For ratio ``r`` a group's weights are clipped to ``r`` times its range (``±r·max|w|`` for
    symmetric schemes, ``[r·min, r·max]`` for asymmetric ones), quantized with params from the
    clipped group (scale rounded to ``scale_dtype``), and scored by
    ``mean_rows((x_g · (ŵ_g - w_g))²)``, the squared error of the partial product. Ratio 1
    (no clipping) is always a candidate and wins ties, so the chosen error is never above the
    unclipped one on these samples. The search is vectorised over rows and groups, loops
    over ratios, and handles ``batch_rows`` output rows at a time to bound memory
    (``batch_rows · groups · rows`` floats per ratio).

    Golden Stick subsamples about 512 tokens (stride ``max(1, tokens // 512)``); pass such a
    sample as ``x``, or instead (``x=None``) the layer's ``hessian = 2XᵀX/rows`` over all its
    calibration rows: the same scores, from every row, as a quadratic form on each group's
    diagonal block of ``hessian`` (``width`` columns instead of 512 sample rows). Per group with
    ``in`` not a multiple of ``g``, weight and inputs are padded with zero columns (which
    neither clip nor contribute).

    Raises ConfigError for an unsupported scheme or ratios outside (0, 1]; ValueError for bad
    shapes or non-finite values.
    """
    weight = checked_weight(weight, "clip search weight")
    if (x is None) == (hessian is None):
        raise ValueError("give the clipping search either sample inputs x or a hessian, not both or neither")
    samples = np.asarray(x if x is not None else hessian)
    expected = (samples.shape[0], weight.shape[1]) if x is not None else (weight.shape[1], weight.shape[1])
    if samples.ndim != 2 or samples.shape != expected or samples.shape[0] == 0:
        raise ValueError(f"x must be non-empty sample inputs [rows, {weight.shape[1]}] or hessian [{weight.shape[1]}, {weight.shape[1]}], got {samples.shape}")
    require_finite(samples, "clip search inputs")
    candidates = [float(r) for r in ratios]
    if not candidates or not all(0.0 < r <= 1.0 for r in candidates):
        raise ConfigError(f"clip ratios must be a non-empty list of numbers in (0, 1], got {list(ratios)!r}")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows must be an int >= 1, got {batch_rows!r}")
    scale_dtype = store_dtype(scale_dtype)
    candidates = [1.0] + [r for r in candidates if r != 1.0]
    out, columns = weight.shape
    width = _group_width(scheme, columns)
    if hessian is None:
        inputs = _grouped(samples.astype(np.float32), width).transpose(1, 2, 0)  # [groups, width, rows]
    else:
        inputs = _hessian_blocks(samples, width)  # [groups, width, width]
    groups = inputs.shape[0]

    clipped = np.empty((out, groups * width), np.float32)
    chosen = np.empty((out, groups), np.float32)
    best_total = unclipped_total = 0.0
    for start in range(0, out, batch_rows):
        block = _grouped(weight[start : start + batch_rows].astype(np.float32), width)  # [b, groups, width]
        lo, hi = _clip_bounds(block, scheme.symmetric)
        best = best_ratio = None
        for r in candidates:
            trial = np.clip(block, np.float32(r) * lo, np.float32(r) * hi)
            flat = trial.reshape(block.shape[0], -1)
            quantized = fake_quantize(flat, round_scale(quant_params(flat, scheme), scale_dtype)).reshape(block.shape)
            error = _scores((quantized - block).transpose(1, 0, 2), inputs, hessian is not None)  # [b, groups]
            if best is None:
                best, best_ratio = error, np.ones_like(error, dtype=np.float32)
                unclipped_total += float(error.sum())
            else:
                better = error < best
                best = np.where(better, error, best)
                best_ratio = np.where(better, np.float32(r), best_ratio)
        factor = best_ratio[:, :, None]
        clipped[start : start + block.shape[0]] = np.clip(block, factor * lo, factor * hi).reshape(block.shape[0], -1)
        chosen[start : start + block.shape[0]] = best_ratio
        best_total += float(best.sum())
    result = clipped[:, :columns].copy()
    result.setflags(write=False)
    chosen.setflags(write=False)
    return ClipResult(weight=result, ratios=chosen, error=best_total, error_unclipped=unclipped_total)
