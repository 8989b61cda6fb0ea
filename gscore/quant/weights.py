"""How the weight algorithms (GPTQ, AWQ) see an ``[out, in]`` linear weight's parameter groups.

They support the two layouts gscore stores weights in: one scale per output channel
(``per_channel`` on axis 0) or per group of ``g`` consecutive input columns (``per_group``).
A per-group weight whose ``in`` is not a multiple of ``g`` is stored zero-padded to whole
groups (like ``gscore.nn.passes.padded_to_groups``); zero columns never change a group's
range (the range always includes 0) nor any dot product.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gscore.errors import ConfigError
from gscore.quant.checks import require_finite
from gscore.quant.scheme import Granularity, QuantScheme


def weight_group_size(scheme: QuantScheme, algorithm: str) -> int:
    """``group_size`` for per-group schemes, 0 for per-output-channel ones.

    Raises ConfigError naming ``algorithm`` and the supported layouts for any other scheme.
    """
    if scheme.granularity is Granularity.PER_GROUP:
        return scheme.group_size
    if scheme.granularity is Granularity.PER_CHANNEL and scheme.axis in (0, -2):
        return 0
    raise ConfigError(
        f"{algorithm} quantizes an [out, in] weight per output channel (granularity 'per_channel', axis 0) or "
        f"per group of input columns ('per_group'); got granularity {scheme.granularity.value!r}, axis {scheme.axis}"
    )


def pad_to_groups(a: np.ndarray, group: int) -> np.ndarray:
    """``a [rows, in]`` with zero columns appended up to a multiple of ``group`` (``a`` itself
    when ``group`` is 0 or already divides ``in``)."""
    if not group or a.shape[1] % group == 0:
        return a
    return np.pad(a, ((0, 0), (0, -a.shape[1] % group)))


def checked_weight(weight: npt.ArrayLike, what: str) -> np.ndarray:
    """``weight`` as an array, after checking it is a non-empty, finite, floating ``[out, in]``
    matrix (ValueError naming ``what`` otherwise)."""
    weight = np.asarray(weight)
    if weight.ndim != 2 or 0 in weight.shape or not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"{what} must be a non-empty floating [out, in] array, got {weight.dtype} {weight.shape}")
    require_finite(weight, what)
    return weight
