"""Quantize, dequantize and fake-quantize arrays with given parameters.

All arithmetic is float32 (float16 inputs are upcast, float64 inputs computed in float32, the
precision deployed kernels use). :func:`dequantize` and :func:`fake_quantize` allocate one
full-size float32 working buffer and then work in place on it; :func:`quantize` runs as one
native pass when it can (:mod:`gscore.quant.native`), otherwise through the tensor in blocks
that fit a core's cache (:mod:`gscore.quant.blocks`); either way each value is read from memory
once and only the integer codes are written, with identical results. The caller's array is only
read.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gscore.quant import native
from gscore.quant.blocks import row_blocks, rows_of
from gscore.quant.checks import raise_nonfinite, require_finite
from gscore.quant.layout import fit, layout
from gscore.quant.params import QuantParams, quant_params
from gscore.quant.scheme import QuantScheme


def _codes(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, scheme: QuantScheme, out: np.ndarray) -> np.ndarray:
    """``out <- clip(rint(x / scale + zero_point), qmin, qmax)``, float32, for ``x`` in the layout
    view (or a block of its rows) and parameters that broadcast against it; returns ``out``.

    ``rint`` rounds half to even (numpy's and the IEEE default), which has no bias over many
    values, unlike round-half-away-from-zero.
    """
    # Finite values far outside the range may overflow x / scale to +/-inf (tiny scales, or
    # float64 data beyond float32); the clip below maps those to qmin/qmax, the right code.
    with np.errstate(over="ignore"):
        np.divide(x, scale, out=out, dtype=np.float32)
    if not scheme.symmetric:
        np.add(out, zero_point, out=out)
    np.rint(out, out=out)
    np.clip(out, scheme.qmin, scheme.qmax, out=out)
    return out


def _to_real(codes: np.ndarray, params: QuantParams) -> None:
    """In place: ``codes <- (codes - zero_point) * scale`` on a float32 array in the layout view."""
    if not params.scheme.symmetric:
        np.subtract(codes, params.zero_point, out=codes)
    np.multiply(codes, params.scale, out=codes)


def quantize(x: npt.ArrayLike, params: QuantParams) -> np.ndarray:
    """Integer codes of ``x``: ``clip(rint(x / scale + zero_point), qmin, qmax)``.

    ``x`` must fit ``params``: same rank (for PER_GROUP, same grouping) and the same size on
    every axis that keeps its own scale; reduced axes may differ in size, e.g. params observed
    on a calibration slice. Returns ``x.shape``, dtype int8 for signed schemes and uint8 for unsigned
    ones (both hold every code of up to 8 bits), each value in ``[qmin, qmax]``; values outside
    the observed range clip to the end codes.

    Raises ValueError for NaN/±Inf in ``x`` (with their count) or params that do not fit.
    """
    x = np.asarray(x)
    scheme = params.scheme
    view_shape = fit(x.shape, params.scale.shape, scheme)
    shape2d = native.trailing_rows(x, view_shape, layout(x.shape, scheme)[1])
    native_codes = native.quantize_rows(x.reshape(shape2d), params.scale, params.zero_point, scheme) if shape2d else None
    if native_codes is not None:
        codes2d, nonfinite = native_codes
        if nonfinite:
            raise_nonfinite(x, "quantize input")
        return codes2d.reshape(x.shape)
    view = x.reshape(view_shape)
    codes = np.empty(view.shape, np.int8 if scheme.signed else np.uint8)
    work = np.empty((rows_of(view.shape), *view.shape[1:]), np.float32)
    per_row = params.scale.shape[0] != 1  # parameters vary along the blocked axis
    for rows in row_blocks(view.shape):
        block = view[rows]
        if block.size and not (np.isfinite(block.min()) and np.isfinite(block.max())):  # NaN propagates
            raise_nonfinite(x, "quantize input")
        scale, zero = (params.scale[rows], params.zero_point[rows]) if per_row else (params.scale, params.zero_point)
        codes[rows] = _codes(block, scale, zero, scheme, work[: block.shape[0]])
    return codes.reshape(x.shape)


def dequantize(q: npt.ArrayLike, params: QuantParams, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """Real values ``(q - zero_point) * scale`` of codes ``q``, computed in float32, returned in
    ``q.shape`` as ``dtype``."""
    q = np.asarray(q)
    view = fit(q.shape, params.scale.shape, params.scheme)
    real = q.reshape(view).astype(np.float32)  # always a copy: the working buffer
    _to_real(real, params)
    return real.reshape(q.shape).astype(dtype, copy=False)


def fake_quantize(x: npt.ArrayLike, scheme_or_params: QuantScheme | QuantParams) -> np.ndarray:
    """``dequantize(quantize(x))`` in one pass: the values ``x`` takes after quantization.

    With a :class:`QuantScheme` the params are observed from ``x`` itself; with
    :class:`QuantParams` those are used (e.g. calibrated on other data). The result has
    ``x.shape`` and ``x``'s dtype when it is floating (float16 in, float16 out; computed in
    float32), float32 otherwise. No integer array is built.

    Raises ValueError for NaN/±Inf in ``x``, TypeError for a second argument of another type.
    """
    x = np.asarray(x)
    if isinstance(scheme_or_params, QuantScheme):
        params = quant_params(x, scheme_or_params)  # checks finiteness while observing
    elif isinstance(scheme_or_params, QuantParams):
        params = scheme_or_params
        require_finite(x, "fake_quantize input")
    else:
        raise TypeError(f"expected a QuantScheme or QuantParams, got {type(scheme_or_params).__name__}")
    view = fit(x.shape, params.scale.shape, params.scheme)
    real = _codes(x.reshape(view), params.scale, params.zero_point, params.scheme, np.empty(view, np.float32))
    _to_real(real, params)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return real.reshape(x.shape).astype(out_dtype, copy=False)
