"""The hot loops of weight quantization as native kernels, when :mod:`gscore.kernels` has them.

Quantizing a weight reads it twice: once to observe each row's range, once to turn values into
codes (divide, add the zero point, round, clip, convert). In numpy each of those steps is its
own pass with its own overhead (``np.clip`` alone costs most of a memory copy), so RTN on a
large model took about seven copies' time. Each is one pass here, split across the cores.

GPTQ's column loop (:func:`gptq_columns`) is the third: in numpy it is a dozen small array
operations per weight column, interpreter time that outweighed the arithmetic.

Only float32 tensors whose reduced axes are the trailing ones take the quantize path (one scale per
leading row: per channel on axis 0, per group, per token, per tensor); anything else, and every
call when native kernels are off, stays with numpy. The kernels perform the same float
operations in the same order as the numpy code, so codes and ranges are identical either way
(tests/test_quant_native.py). No MindSpore is involved: the kernels are called through ctypes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gscore.quant.scheme import QuantScheme


def _level() -> str | None:
    from gscore import kernels

    return kernels.level() if kernels.enabled() else None


def trailing_rows(x: np.ndarray, view: tuple[int, ...], reduced: tuple[int, ...]) -> tuple[int, int] | None:
    """``(rows, cols)`` when ``x`` (seen as ``view``) can take the native path, else None."""
    first = len(view) - len(reduced)
    if x.dtype != np.float32 or not x.flags.c_contiguous or reduced != tuple(range(first, len(view))) or x.size == 0:
        return None
    rows = int(np.prod(view[:first], dtype=np.int64))
    return rows, x.size // rows


def row_minmax(x2d: np.ndarray) -> np.ndarray | None:
    """``[rows, 2]`` minimum and maximum of each row of a float32 ``[rows, cols]`` array (NaN
    propagates), or None when native kernels are off."""
    level = _level()
    if level is None:
        return None
    from gscore.kernels.direct import call

    out = np.empty((x2d.shape[0], 2), np.float32)
    call("channel_minmax", level, [x2d], [out])
    return out


def quantize_rows(x2d: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, int] | None:
    """Codes of a float32 ``[rows, cols]`` array with one scale / zero point per row (or one in
    all) and the count of non-finite values, or None when native kernels are off."""
    level = _level()
    if level is None:
        return None
    from gscore.kernels.direct import call

    codes = np.empty(x2d.shape, np.int8 if scheme.signed else np.uint8)
    nonfinite = np.zeros(1, np.int32)
    bounds = np.array([scheme.qmin, scheme.qmax], np.float32)
    flat_scale = np.ascontiguousarray(scale, np.float32).reshape(-1)
    flat_zero = np.ascontiguousarray(zero_point, np.float32).reshape(-1)
    call("quantize", level, [x2d, flat_scale, flat_zero, bounds], [codes, nonfinite])
    return codes, int(nonfinite[0])


def gptq_columns(
    work: np.ndarray, upper: np.ndarray, scale: np.ndarray, zero: np.ndarray, column_group: np.ndarray, scheme: QuantScheme,
    codes: np.ndarray, dequant: np.ndarray, errors: np.ndarray,
) -> Callable[[int, int], None] | None:
    """``run(first, last)``: GPTQ's loop over columns ``first .. last`` of one sub-block as a
    kernel (``gscore/kernels/csrc/gptq.h``; the numpy loop of :mod:`gscore.quant.gptq`,
    operation for operation), or None when native kernels are off.

    ``work [n, out]`` float64 (updated in place), ``upper [n, n]`` float64, the grids ``scale``
    and ``zero`` ``[groups, out]`` float32 (rows may be filled in between runs), ``column_group
    [n]`` the grid row of each column; ``codes`` and ``dequant`` float32 and ``errors`` float64,
    all ``[n, out]``, receive the rows of the columns run. Every array must stay alive and in
    place while ``run`` is used.
    """
    level = _level()
    if level is None:
        return None
    from gscore.kernels.direct import Call

    span = np.zeros(2, np.int64)
    bounds = np.array([scheme.qmin, scheme.qmax, 1.0 if scheme.symmetric else 0.0], np.float32)
    inputs = [work, upper, scale, zero, np.ascontiguousarray(column_group, np.int64), bounds, span]
    call = Call("gptq_columns", level, inputs, [codes, dequant, errors])

    def run(first: int, last: int) -> None:
        span[:] = first, last
        call.run()

    return run
