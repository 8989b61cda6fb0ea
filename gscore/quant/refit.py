"""Least-squares scales for fixed weight codes: the scale refit after GPTQ.

GPTQ picks every code with the scales fixed up front (from the weight, or a clipping search),
then feeds each rounding error forward into the columns after it: the codes it ends with are
no longer the ones those scales were chosen for. With the codes fixed, the layer's output error
``(ŵ - w) H (ŵ - w)ᵀ`` of one output row is a quadratic in that row's scales, since the
dequantized row is ``ŵ = Σ_g s_g d_g`` with ``d_g = (q - z)`` on group ``g``'s columns (0
elsewhere). Its minimum solves the small system ``(DᵀHD) s = DᵀHw`` (``groups x groups`` per
row; ``DᵀHD`` couples groups through ``H``'s off-diagonal blocks), computed here for all rows
at once. A row keeps its old scales unless the new ones, rounded as stored, are positive,
finite and lower its error.

Shapes: ``weight [out, n]`` float (padded to whole groups), ``codes [out, n]``, params in the
keepdims layout (``[out, 1]`` per channel, ``[out, n/g, 1]`` per group), ``hessian [n, n]``.
"""

from __future__ import annotations

import numpy as np

from gscore.quant.params import QuantParams
from gscore.quant.stored import round_scale

_RIDGE = 1e-9
"""Pull toward the old scales, relative to ``mean(diag DᵀHD)``: keeps a group whose codes are
all at the zero point (``d_g = 0``, any scale fits) at its old scale."""


def _grouped_offsets(codes: np.ndarray, params: QuantParams) -> tuple[np.ndarray, int]:
    """``(d, groups)``: ``d = codes - zero_point`` float64 ``[out, n]`` and the number of groups."""
    out, n = codes.shape
    zero = params.zero_point.reshape(out, -1).astype(np.float64)
    groups = zero.shape[1]
    width = n // groups
    d = codes.astype(np.float64).reshape(out, groups, width) - zero[:, :, None]
    return d.reshape(out, n), groups


def _errors_for_scales(s: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``sᵀAs - 2sᵀb + c`` per row: ``(ŵ - w) H (ŵ - w)ᵀ`` for ``ŵ = D s``."""
    return np.einsum("rg,rgh,rh->r", s, a, s) - 2.0 * np.einsum("rg,rg->r", s, b) + c


def refit_scales(weight: np.ndarray, codes: np.ndarray, params: QuantParams, hessian: np.ndarray, scale_dtype: np.dtype) -> tuple[QuantParams, np.ndarray]:
    """``(params, improved)``: per row, the scales minimising ``(ŵ - w) H (ŵ - w)ᵀ`` for these
    codes and zero points, where they lower it once rounded to ``scale_dtype``; ``improved`` is
    the boolean ``[out]`` mask of rows that changed. ``n`` must be a multiple of the group width."""
    w = np.asarray(weight, np.float64)
    h = np.asarray(hessian, np.float64)
    d, groups = _grouped_offsets(np.asarray(codes), params)
    out, n = d.shape
    width = n // groups
    old = params.scale.reshape(out, groups).astype(np.float64)
    a = np.empty((out, groups, groups))
    for g in range(groups):
        cols = slice(g * width, (g + 1) * width)
        partial = d[:, cols] @ h[cols, :]  # [out, n]: H d_g for every row
        a[:, g, :] = (partial * d).reshape(out, groups, width).sum(axis=2)
    hw = w @ h
    b = (hw * d).reshape(out, groups, width).sum(axis=2)
    c = np.einsum("rn,rn->r", hw, w)
    ridge = _RIDGE * np.maximum(np.einsum("rgg->r", a) / groups, np.finfo(np.float64).tiny)
    system = a + ridge[:, None, None] * np.eye(groups)
    with np.errstate(all="ignore"):
        fitted = np.linalg.solve(system, (b + ridge[:, None] * old)[:, :, None])[:, :, 0]
    usable = np.isfinite(fitted).all(axis=1) & (fitted > 0).all(axis=1)
    candidate = np.where(usable[:, None], fitted, old).astype(np.float32).reshape(params.scale.shape)
    rounded = round_scale(QuantParams(scale=candidate, zero_point=params.zero_point, scheme=params.scheme), scale_dtype)
    new = rounded.scale.reshape(out, groups).astype(np.float64)
    improved = usable & (_errors_for_scales(new, a, b, c) < _errors_for_scales(old, a, b, c))
    scale = np.where(improved[:, None], new, old).astype(np.float32).reshape(params.scale.shape)
    return QuantParams(scale=scale, zero_point=params.zero_point, scheme=params.scheme), improved
