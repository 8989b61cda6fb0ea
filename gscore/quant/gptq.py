"""GPTQ: quantize a linear layer's weight column by column, feeding each column's rounding
error back into the columns not yet quantized, so the layer's *outputs* on its calibration
inputs stay close (Frantar et al., "GPTQ", 2022; Golden Stick ``PrecisionRecovery.GPTQ``).

For one output row ``w`` of ``W [out, in]`` and inputs ``X``, the output error of a quantized
row ``ŵ`` is ``(w - ŵ) H (w - ŵ)ᵀ`` with ``H = 2 XᵀX / rows`` (see
:class:`gscore.quant.stats.HessianAccumulator`). GPTQ quantizes column ``i``, then moves the
rest of the row by the optimal compensation, which needs only row ``i`` of ``U``, the upper
Cholesky factor of ``H⁻¹`` (``H⁻¹ = UᵀU``): ``W[:, i+1:] -= err ⊗ U[i, i+1:]`` with
``err = (w_i - ŵ_i) / U[i, i]``. Columns are processed in blocks of ``block_size`` and the
columns after a block are updated once per block (lazy batch updates: the same arithmetic,
as one matrix product); inside a block the same is done again for sub-blocks of 16 columns,
which is what keeps numpy's per-column work small.

Why a diagonal ``H`` gives plain round-to-nearest: then ``U`` is diagonal (damping only adds
to the diagonal), every ``U[i, i+1:]`` is exactly 0, no column is ever moved, and each column
is rounded on its own with the same parameters as RTN.

Safeguard: the output error is a sum over output rows, and every row has its own scale and
zero point (per channel: one; per group: one per group), so after GPTQ every row is compared
with RTN on the *given* (undamped) ``H`` and the better of the two is kept, parameters
included. The returned weight is therefore never worse than RTN on its calibration Hessian,
by construction; ``diagnostics.fallback_rows`` says how often RTN won.

Scale refit (``refit_scales=True``): before that comparison, every row's scales are re-solved by
least squares for the codes GPTQ chose (:func:`gscore.quant.refit.refit_scales`), kept only
where they lower the row's error.

Arithmetic: ``H``, its factorization and the error feedback are float64 (stability); codes
and dequantized values are computed in float32 from scales already rounded to
``scale_dtype``, exactly as :func:`gscore.quant.quantize` does, so the stored integers are
``quantize(result.weight, result.params)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import numpy.typing as npt

from gscore.errors import ConfigError
from gscore.quant import native
from gscore.quant.checks import require_finite
from gscore.quant.core import dequantize, quantize
from gscore.quant.layout import fit
from gscore.quant.params import QuantParams, quant_params
from gscore.quant.refit import refit_scales as refit_for_codes
from gscore.quant.scheme import Granularity, QuantScheme
from gscore.quant.stored import round_scale, store_dtype
from gscore.quant.weights import checked_weight, pad_to_groups, weight_group_size

MAX_DAMP_RETRIES = 10
"""How many times the damping is multiplied by 10 when ``H`` + damping is not positive definite."""

_FIRST_RETRY_DAMP = 1e-6  # retry damping (fraction of mean diag) when damp_percent is 0
_SUB_BLOCK = 16  # columns per inner lazy block: small rank-1 updates, the rest as matrix products
_DENSE_INVERSE = 128  # triangular blocks up to this size are inverted directly
_ASYMMETRY_TOLERANCE = 1e-6  # |H - Hᵀ| allowed, relative to max |diag H| (float rounding of XᵀX)


@dataclass(frozen=True)
class GPTQDiagnostics:
    """How GPTQ went on one layer. Errors are ``Σ_rows (w - ŵ) H (w - ŵ)ᵀ`` on the given ``H``
    (for ``H = 2XᵀX/rows``: twice the mean over input rows of the squared output error, summed
    over output channels).

    Attributes:
        error: of the returned weight (after the per-row fallback).
        error_gptq: of pure GPTQ, before the fallback.
        error_rtn: of round-to-nearest with the baseline params (those of ``quant_params`` on
            the weight, or the ``params`` given).
        fallback_rows: output rows where RTN had the smaller error and was kept.
        rows: output rows in total.
        damp_percent: damping actually used, as a fraction of ``mean(diag H)``.
        damp_retries: how many times damping had to be raised (x10 each) for a Cholesky to succeed.
        dead_inputs: input columns with ``H_ii == 0`` (never active on the calibration data),
            whose weights GPTQ sets to 0.
        refit_rows: rows whose scales the refit changed (0 without ``refit_scales``).
    """

    error: float
    error_gptq: float
    error_rtn: float
    fallback_rows: int
    rows: int
    damp_percent: float
    damp_retries: int
    dead_inputs: int
    refit_rows: int = 0


@dataclass(frozen=True, eq=False)
class GPTQResult:
    """The quantized layer weight.

    Attributes:
        weight: float32 ``[out, in]``, the dequantized (fake-quantized) weight, read-only.
        codes: ``[out, in]`` int8 (signed schemes) or uint8 (unsigned) integer codes, read-only;
            ``quantize(weight, params)`` gives them exactly (per group with ``in`` not a
            multiple of ``g``: on both padded with zero columns, see :func:`gptq_quantize`).
        params: in the keepdims layout ``quant_params`` gives on the (padded) weight: per
            channel ``[out, 1]``, per group ``[out, ceil(in/g), 1]``; scales are float32
            values of ``scale_dtype``.
        diagnostics: see :class:`GPTQDiagnostics`.
    """

    weight: np.ndarray
    codes: np.ndarray
    params: QuantParams
    diagnostics: GPTQDiagnostics


def _check_weight_and_hessian(weight: npt.ArrayLike, hessian: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    weight = checked_weight(weight, "GPTQ weight")
    hessian = np.asarray(hessian, dtype=np.float64)
    n = weight.shape[1]
    if hessian.shape != (n, n):
        raise ValueError(f"hessian must be [in, in] = [{n}, {n}] for a weight of shape {weight.shape}, got {hessian.shape}")
    require_finite(hessian, "GPTQ hessian")
    diag = np.diag(hessian)
    if diag.min() < 0:
        raise ValueError(f"hessian has negative diagonal entries (min {diag.min():.3g}); it must be 2XᵀX/rows, positive semi-definite")
    asymmetry = float(np.abs(hessian - hessian.T).max())
    if asymmetry > _ASYMMETRY_TOLERANCE * max(float(diag.max()), np.finfo(np.float64).tiny):
        raise ValueError(f"hessian is not symmetric (max |H - Hᵀ| = {asymmetry:.3g}); it must be 2XᵀX/rows")
    return weight, hessian


def _check_options(block_size: int, damp_percent: float, act_order: bool, static_groups: bool, group: int, params: QuantParams | None) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size must be an int >= 1 (columns per lazy update block), got {block_size!r}")
    if isinstance(damp_percent, bool) or not isinstance(damp_percent, (int, float)) or not 0.0 <= damp_percent <= 1.0:
        raise ConfigError(f"damp_percent must be a float in [0, 1] (fraction of mean(diag H)), got {damp_percent!r}")
    if act_order and group and not (static_groups or params is not None):
        raise ConfigError(
            "act_order (desc_act) with per-group weights needs static_groups=True (or fixed params): gscore stores "
            "each group's scale for contiguous input columns, so groups must be fixed in the original column "
            "order before the columns are reordered"
        )


def _lower_triangular_inverse(lower: np.ndarray) -> np.ndarray:
    """Inverse of a lower triangular matrix by 2x2 block recursion,
    ``[[A, 0], [C, D]]⁻¹ = [[A⁻¹, 0], [-D⁻¹ C A⁻¹, D⁻¹]]``: about n³/3 flops in matrix products,
    where ``np.linalg.inv`` (LU, unaware of the structure) costs several times more. The blocks
    are written into one zeroed result (no array per recursion level)."""
    inverse = np.zeros_like(lower)
    _invert_lower_into(lower, inverse)
    return inverse


def _invert_lower_into(lower: np.ndarray, inverse: np.ndarray) -> None:
    n = lower.shape[0]
    if n <= _DENSE_INVERSE:
        inverse[...] = np.linalg.inv(lower)
        return
    half = n // 2
    _invert_lower_into(lower[:half, :half], inverse[:half, :half])
    _invert_lower_into(lower[half:, half:], inverse[half:, half:])
    inverse[half:, :half] = -(inverse[half:, half:] @ (lower[half:, :half] @ inverse[:half, :half]))


def _upper_cholesky_of_inverse(hessian: np.ndarray, damp_percent: float) -> tuple[np.ndarray, float, int, float]:
    """``(U, damp used, retries, λ)`` with ``UᵀU = (H + λI)⁻¹``, ``λ = damp·mean(diag H)``, U upper
    triangular.

    Computed from one Cholesky factorization: with ``J`` the reversal permutation and
    ``JHJ = LLᵀ``, ``H = RRᵀ`` for the upper triangular ``R = JLJ``, so ``H⁻¹ = R⁻ᵀR⁻¹`` and
    ``U = R⁻¹ = J L⁻¹ J``. Only the upper triangle of ``H`` is read. If the damped ``H`` is
    not positive definite (to float64 precision), the damping is multiplied by 10, up to
    :data:`MAX_DAMP_RETRIES` times.
    """
    mean_diag = float(np.mean(np.diag(hessian)))
    damp = float(damp_percent)
    for retry in range(MAX_DAMP_RETRIES + 1):
        damped = hessian[::-1, ::-1].copy()
        damped[np.diag_indices_from(damped)] += damp * mean_diag
        try:
            upper = _lower_triangular_inverse(np.linalg.cholesky(damped))[::-1, ::-1]
        except np.linalg.LinAlgError:
            upper = None
        if upper is not None and np.isfinite(upper).all():
            return np.ascontiguousarray(upper), damp, retry, damp * mean_diag
        damp = (damp if damp > 0 else _FIRST_RETRY_DAMP) * 10.0
    raise ValueError(
        f"the damped Hessian is not positive definite even with damping {damp / 10:.3g} x mean(diag H) after "
        f"{MAX_DAMP_RETRIES} retries; check the calibration inputs (finite, not all identical)"
    )


def _column_scheme(scheme: QuantScheme) -> QuantScheme:
    """The scheme of one weight column ``[out, 1]``: one scale per output row."""
    return dataclasses.replace(scheme, granularity=Granularity.PER_CHANNEL, axis=0, group_size=0)


Grid = tuple[np.ndarray, np.ndarray]
"""One parameter group's ``(scale, zero_point)``, float32 ``[out]`` each."""


def _grids(params: QuantParams) -> list[Grid]:
    """``(scale, zero_point)`` of every parameter group (one for per-channel params)."""
    scale, zero = params.scale.reshape(params.scale.shape[0], -1), params.zero_point.reshape(params.scale.shape[0], -1)
    return [(np.ascontiguousarray(scale[:, k]), np.ascontiguousarray(zero[:, k])) for k in range(scale.shape[1])]


def _round_to_grid(values: np.ndarray, grid: Grid, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, dequantized)`` float32 of one weight column: the arithmetic of
    :func:`gscore.quant.quantize` / :func:`gscore.quant.dequantize` operation for operation
    (float32 divide, add zero point, round half to even, clip; then ``(q - z)·s``), without
    their per-call checks, which would cost more than the rounding itself in a loop that runs
    once per input column (the tests check the results bit for bit against them)."""
    scale, zero = grid
    codes = np.divide(values, scale, dtype=np.float32)
    if not scheme.symmetric:
        codes += zero
    np.rint(codes, out=codes)
    np.clip(codes, scheme.qmin, scheme.qmax, out=codes)
    real = codes - zero if not scheme.symmetric else codes.copy()
    real *= scale
    return codes, real


def _row_errors(weight: np.ndarray, approx: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """``(w_r - ŵ_r) H (w_r - ŵ_r)ᵀ`` for every output row ``r``, float64 ``[out]``."""
    diff = weight - approx
    return np.einsum("ij,ij->i", diff @ hessian, diff)


def _numpy_columns(
    work: np.ndarray, upper: np.ndarray, scale: np.ndarray, zero: np.ndarray, column_group: np.ndarray, scheme: QuantScheme,
    codes: np.ndarray, dequant: np.ndarray, errors: np.ndarray,
) -> Callable[[int, int], None]:
    """``run(first, last)``: the column loop of one sub-block in numpy (the arguments of
    :func:`gscore.quant.native.gptq_columns`, whose kernel does the same operations)."""

    def run(first: int, last: int) -> None:
        for j in range(first, last):
            g = column_group[j]
            codes[j], dequant[j] = _round_to_grid(work[j], (scale[g], zero[g]), scheme)
            err = np.subtract(work[j], dequant[j], out=errors[j])
            err /= upper[j, j]
            work[j + 1 : last] -= upper[j, j + 1 : last, None] * err

    return run


def _quantize_columns(
    work: np.ndarray, upper: np.ndarray, fixed: list[Grid] | None, column_group: np.ndarray,
    group: int, scheme: QuantScheme, block: int, scale_dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray, list[Grid], np.ndarray]:
    """The GPTQ column loop on ``work = Wᵀ [n, out]`` (float64, permuted; modified in place).

    Transposed so that a weight column is a contiguous row of memory. Updates are lazy at two
    levels: within a sub-block of :data:`_SUB_BLOCK` columns by rank-1 updates (a native kernel
    when :mod:`gscore.kernels` has one, else numpy, with identical results), then for the rest
    of the ``block`` and, at its end, for all later columns, by matrix products (the same
    arithmetic as column-by-column updates, in fewer passes over memory).

    ``fixed``: the grid of every group, or None to compute each group's grid from its columns
    when the loop reaches the group's first column (``block`` is then a multiple of ``group``
    and sub-blocks start at group starts, so all earlier feedback has reached the group).
    ``column_group[j]``: the group of (permuted) column ``j``. Returns float32 codes and
    dequantized values ``[n, out]`` in ``work``'s order, the grid of every group, and
    ``Σ_j err_j²`` per output row (float64 ``[out]``; see :func:`_row_errors_from_feedback`).
    """
    n, out = work.shape
    codes = np.empty((n, out), np.float32)
    dequant = np.empty((n, out), np.float32)
    errors = np.empty((n, out), np.float64)
    groups = int(column_group.max()) + 1
    scale, zero = np.zeros((groups, out), np.float32), np.zeros((groups, out), np.float32)
    for g, (grid_scale, grid_zero) in enumerate(fixed or ()):
        scale[g], zero[g] = grid_scale, grid_zero
    sub = group if fixed is None and group % _SUB_BLOCK else _SUB_BLOCK
    column_scheme = _column_scheme(scheme)
    arrays = (work, upper, scale, zero, column_group, scheme, codes, dequant, errors)
    columns = native.gptq_columns(*arrays) or _numpy_columns(*arrays)
    with np.errstate(over="ignore"):  # huge finite values overflow w / scale; the clip maps them right
        for start in range(0, n, block):
            stop = min(start + block, n)
            for first in range(start, stop, sub):
                last = min(first + sub, stop)
                if fixed is None and first % group == 0:
                    params = round_scale(quant_params(work[first : first + group].T, column_scheme), scale_dtype)
                    scale[column_group[first]], zero[column_group[first]] = params.scale[:, 0], params.zero_point[:, 0]
                columns(first, last)
                work[last:stop] -= upper[first:last, last:stop].T @ errors[first:last]
            work[stop:] -= upper[start:stop, stop:].T @ errors[start:stop]
    feedback = np.einsum("ij,ij->j", errors, errors)
    return codes, dequant, [(scale[g].copy(), zero[g].copy()) for g in range(groups)], feedback


Quantized = tuple[np.ndarray, np.ndarray, QuantParams]
"""A quantized ``[out, n]`` weight: codes (int8/uint8), dequantized float32 values, params."""


def _round_to_nearest(padded: np.ndarray, scheme: QuantScheme, params: QuantParams | None, scale_dtype: np.dtype) -> Quantized:
    """RTN of the float32 (padded) weight with the given params, or its own, scales rounded to
    ``scale_dtype``: the baseline, and GPTQ's params when they are static."""
    if params is None:
        params = quant_params(padded, scheme)
    else:
        if params.scheme != scheme:
            raise ValueError(f"params were computed for {params.scheme}, not for {scheme}")
        fit(padded.shape, params.scale.shape, scheme)
    params = round_scale(params, scale_dtype)
    codes = quantize(padded, params)
    return codes, dequantize(codes, params), params


def _row_errors_from_feedback(start: np.ndarray, approx: np.ndarray, feedback: np.ndarray, damping: float) -> np.ndarray:
    """GPTQ's row errors on the given ``H`` without another ``[out, n] x [n, n]`` product.

    The sweep quantizes column ``j`` of the working weight with error ``U_jj err_j``, and
    every earlier ``err_i`` moved it by ``-U_ij err_i``, so ``start - approx = E U`` (``E`` the
    fed-back errors, ``[out, n]``). With ``UᵀU = H_d⁻¹``, ``U H_d Uᵀ = I`` and the row's error
    on ``H_d`` is ``Σ_j err_j²`` (``feedback``). ``H_d`` is the given ``H`` plus ``damping`` on
    the diagonal, and 1 at dead inputs; those columns start at 0, get no feedback (``U`` is 0
    off their diagonal) and round to exactly 0 (zero points are integers in range), so they
    add nothing and subtracting ``damping · |start - approx|²`` gives the error on ``H``.
    ``start``: the float64 weight GPTQ began from (dead columns zeroed), whose error on ``H``
    is that of the original weight.

    Precision: the tests hold it to 1e-9 of ``(w - ŵ) H (w - ŵ)ᵀ`` computed directly, also for
    ``H`` of rank 1 with damping 1.0, where the subtraction removes most of ``feedback``.
    """
    diff = start - approx
    return feedback - damping * np.einsum("ij,ij->i", diff, diff)


def _gptq(
    original: np.ndarray, hessian: np.ndarray, base: QuantParams, group: int, dynamic: bool, block: int,
    act_order: bool, damp_percent: float, scale_dtype: np.dtype,
) -> tuple[Quantized, np.ndarray, float, int, np.ndarray]:
    """GPTQ proper on the padded float64 weight ``[out, n]``: ``(result, row errors on the
    given H, damp, retries, dead)``.

    ``base``: the static params (used unless ``dynamic``); ``dead``: the boolean ``[n]`` mask
    of inputs with ``H_ii == 0``.
    """
    scheme = base.scheme
    n = original.shape[1]
    dead = np.diag(hessian) == 0
    work = original.copy()
    if dead.any():
        hessian = hessian.copy()
        hessian[dead, dead] = 1.0
        work[:, dead] = 0.0
    column_group = np.arange(n) // group if group else np.zeros(n, np.intp)
    perm = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(n)
    upper, damp, retries, damping = _upper_cholesky_of_inverse(hessian[np.ix_(perm, perm)] if act_order else hessian, damp_percent)
    fixed = None if dynamic else _grids(base)
    codes, dequant, grids, feedback = _quantize_columns(work.T[perm], upper, fixed, column_group[perm], group, scheme, block, scale_dtype)
    inverse = np.argsort(perm)
    if dynamic:
        scale = np.stack([s for s, _ in grids], axis=1)[:, :, None]
        zero = np.stack([z for _, z in grids], axis=1)[:, :, None]
        params = QuantParams(scale=scale, zero_point=zero, scheme=scheme)
    else:
        params = base
    int_codes = codes[inverse].T.astype(np.int8 if scheme.signed else np.uint8)
    approx = dequant[inverse].T
    errors = _row_errors_from_feedback(work, approx, feedback, damping)
    return (int_codes, approx, params), errors, damp, retries, dead


def _pick_rows(use_rtn: np.ndarray, gptq: Quantized, rtn: Quantized) -> Quantized:
    """Row by row, GPTQ's codes, values and params, or RTN's where ``use_rtn``."""
    if not use_rtn.any():
        return gptq
    rows = use_rtn.reshape(-1, *(1,) * (gptq[2].scale.ndim - 1))
    params = QuantParams(
        scale=np.where(rows, rtn[2].scale, gptq[2].scale),
        zero_point=np.where(rows, rtn[2].zero_point, gptq[2].zero_point),
        scheme=gptq[2].scheme,
    )
    return np.where(use_rtn[:, None], rtn[0], gptq[0]), np.where(use_rtn[:, None], rtn[1], gptq[1]), params


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` (an array built here, not the caller's) contiguous and read-only."""
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def gptq_quantize(
    weight: npt.ArrayLike,
    hessian: npt.ArrayLike,
    scheme: QuantScheme,
    *,
    block_size: int = 128,
    damp_percent: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
    scale_dtype: npt.DTypeLike = np.float32,
    params: QuantParams | None = None,
    refit_scales: bool = False,
) -> GPTQResult:
    """GPTQ-quantize ``weight [out, in]`` for inputs whose Hessian is ``hessian [in, in]``.

    Args:
        weight: the float weight, ``[out, in]`` (output channels first).
        hessian: ``2XᵀX/rows`` of the layer's calibration inputs (float64 is kept), e.g. from
            :meth:`gscore.quant.HessianAccumulator.hessian`; symmetric positive semi-definite.
        scheme: per channel on axis 0, or per group; any bits, symmetric or asymmetric,
            signed or unsigned.
        block_size: columns per lazy update block (speed only; with per-group params computed
            during the loop it is rounded up to a multiple of ``group_size``).
        damp_percent: ``λ = damp_percent · mean(diag H)`` is added to the diagonal; raised x10
            up to :data:`MAX_DAMP_RETRIES` times if the Cholesky factorization fails.
        act_order: Golden Stick's ``desc_act``: quantize columns in order of decreasing
            ``H_ii`` (the most active inputs first, while most columns can still absorb their
            error); the result is in the original column order.
        static_groups: per group only: every group's params come from the original weight
            before any update (and groups stay contiguous in the original column order);
            otherwise each group's params come from its columns, updated by earlier feedback,
            when the loop reaches it. Needed for ``act_order`` with per-group params.
        scale_dtype: float16 or float32, the dtype the scales are stored in; scales are rounded
            to it before any code is computed.
        params: fixed params to quantize with (the keepdims layout of ``quant_params`` on the
            (padded) weight, ``scheme`` equal to ``scheme``), e.g. from a clipped weight; they
            are then static and RTN's baseline too.
        refit_scales: re-solve each row's scales for the codes GPTQ chose (least squares on
            ``H``; see the module docstring), where that lowers its error.

    Per group with ``in`` not a multiple of ``g``: the weight is padded with zero columns
    (and the Hessian with zero rows and columns: inputs that never fire) to whole groups, like
    ``gscore.nn.passes.padded_to_groups``; padded columns quantize to exactly 0 and feed no
    error back. ``weight`` and ``codes`` come back ``[out, in]``; ``params`` cover the padded
    groups, ``[out, ceil(in/g), 1]``, as ``stored_params`` gives them.

    Dead inputs (``H_ii == 0``): ``H_ii`` is set to 1 and the weight column to 0 before
    quantization, as in the reference implementations (nothing is known about them).

    Raises:
        ConfigError: a scheme other than per channel (axis 0) / per group, bad options, or
            ``act_order`` with per-group params computed during the loop.
        ValueError: bad shapes, non-finite values, ``params`` that do not fit, a Hessian that is
            not symmetric with non-negative diagonal, or that stays singular after every retry.
    """
    group = weight_group_size(scheme, "GPTQ")
    _check_options(block_size, damp_percent, act_order, static_groups, group, params)
    scale_dtype = store_dtype(scale_dtype)
    weight, hessian = _check_weight_and_hessian(weight, hessian)
    out, n_in = weight.shape
    original = pad_to_groups(weight.astype(np.float64), group)
    pad = original.shape[1] - n_in
    full_hessian = np.pad(hessian, ((0, pad), (0, pad))) if pad else hessian
    rtn = _round_to_nearest(original.astype(np.float32), scheme, params, scale_dtype)
    dynamic = bool(group) and not static_groups and params is None
    block = -(-block_size // group) * group if dynamic else block_size
    gptq, gptq_err, damp, retries, dead = _gptq(original, full_hessian, rtn[2], group, dynamic, block, act_order, damp_percent, scale_dtype)
    refit_rows = 0
    if refit_scales:
        refit, improved = refit_for_codes(original, gptq[0], gptq[2], full_hessian, scale_dtype)
        gptq, refit_rows = (gptq[0], dequantize(gptq[0], refit), refit), int(improved.sum())
        gptq_err = _row_errors(original, gptq[1].astype(np.float64), full_hessian)

    rtn_err = _row_errors(original, rtn[1].astype(np.float64), full_hessian)
    # GPTQ's row errors come from its sweep and may differ from a direct product in the last
    # bits: a row equal to RTN's takes RTN's error, so an exact tie keeps GPTQ's row, as before.
    same = (gptq[1] == rtn[1]).all(axis=1)
    gptq_err[same] = rtn_err[same]
    fallback = rtn_err < gptq_err
    codes, dequant, chosen = _pick_rows(fallback, gptq, rtn)
    diagnostics = GPTQDiagnostics(
        error=float(np.where(fallback, rtn_err, gptq_err).sum()),
        error_gptq=float(gptq_err.sum()),
        error_rtn=float(rtn_err.sum()),
        fallback_rows=int(fallback.sum()),
        rows=out,
        damp_percent=damp,
        damp_retries=retries,
        dead_inputs=int(dead[:n_in].sum()),
        refit_rows=refit_rows,
    )
    return GPTQResult(weight=_frozen(dequant[:, :n_in]), codes=_frozen(codes[:, :n_in]), params=chosen, diagnostics=diagnostics)

