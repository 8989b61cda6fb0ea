"""Scales as they are stored: rounded to the storage dtype before any code is computed.

A deployed layer keeps its weight scales in its compute dtype (float16 for mindformers
``Linear``), so integer codes computed with the float32 scale could disagree with what the
deployed layer does. Algorithms that choose codes themselves (GPTQ, the clipping search)
therefore round the scale first, exactly like ``gscore.nn.passes.stored_params``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gscore.errors import ConfigError
from gscore.quant.params import QuantParams

_STORE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def store_dtype(dtype: npt.DTypeLike) -> np.dtype:
    """``dtype`` as a numpy dtype, if scales can be stored in it (float16 or float32).

    Raises ConfigError naming the allowed dtypes otherwise.
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in _STORE_DTYPES:
        raise ConfigError(f"scale_dtype must be float16 or float32 (the dtypes scales are stored in), got {dtype!r}")
    return resolved


def round_scale(params: QuantParams, dtype: npt.DTypeLike) -> QuantParams:
    """``params`` with the scale rounded to ``dtype`` and back to float32; zero points kept.

    Scales that would round below ``dtype``'s smallest normal number are raised to it, so a
    code never comes from a subnormal or zero scale. Rounding to float32 is the identity.

    Raises ConfigError for a dtype other than float16/float32, and ValueError (from
    :class:`QuantParams`) if a scale overflows ``dtype`` (above 65504 for float16).
    """
    dtype = store_dtype(dtype)
    with np.errstate(over="ignore"):
        scale = np.maximum(params.scale.astype(dtype), np.finfo(dtype).tiny).astype(np.float32)
    return QuantParams(scale=scale, zero_point=params.zero_point, scheme=params.scheme)
