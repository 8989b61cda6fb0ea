"""Turn a granularity into array shapes, so that no code loops over channels or groups.

Every granularity becomes "reduce a view of the tensor over some axes, keeping dims":

==============  ====================================  =====================
granularity     view of ``x`` (shape ``s``, rank r)    reduced axes
==============  ====================================  =====================
PER_TENSOR      ``s``                                 all
PER_CHANNEL     ``s``                                 all but ``axis``
PER_TOKEN       ``s``                                 the last
PER_GROUP       ``(*s[:-1], s[-1] // g, g)``           the new last (size g)
==============  ====================================  =====================

Scales and zero points then have the view's shape with 1 on the reduced axes, so they
broadcast against the view in plain numpy arithmetic.
"""

from __future__ import annotations

import numpy as np

from gscore.errors import ConfigError
from gscore.quant.scheme import Granularity, QuantScheme


def layout(shape: tuple[int, ...], scheme: QuantScheme) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(view_shape, reduced_axes)`` for a tensor of ``shape`` under ``scheme`` (table above).

    Raises ValueError for a 0-d shape, ConfigError (a ValueError) when ``scheme.axis`` does not
    exist for PER_CHANNEL or ``scheme.group_size`` does not divide the last axis for PER_GROUP.
    """
    ndim = len(shape)
    if ndim == 0:
        raise ValueError("quantization needs an array of rank >= 1, got a 0-d array")
    granularity = scheme.granularity
    if granularity is Granularity.PER_TENSOR:
        return shape, tuple(range(ndim))
    if granularity is Granularity.PER_CHANNEL:
        if not -ndim <= scheme.axis < ndim:
            raise ConfigError(
                f"axis {scheme.axis} does not exist in an array of shape {shape}; "
                f"allowed: {-ndim}..{ndim - 1}"
            )
        kept = scheme.axis % ndim
        return shape, tuple(a for a in range(ndim) if a != kept)
    if granularity is Granularity.PER_TOKEN:
        return shape, (ndim - 1,)
    size, group = shape[-1], scheme.group_size
    if size % group:
        divisors = [d for d in range(1, size + 1) if size % d == 0]  # error path only
        raise ConfigError(
            f"group_size {group} does not divide the last axis (size {size}) of shape {shape}; "
            f"allowed group sizes: {', '.join(map(str, divisors))}"
        )
    return (*shape[:-1], size // group, group), (ndim,)


def fit(shape: tuple[int, ...], scale_shape: tuple[int, ...], scheme: QuantScheme) -> tuple[int, ...]:
    """View shape for a tensor of ``shape``, after checking that a scale of ``scale_shape`` belongs to it.

    The scale must have exactly the keepdims shape the observation of such a tensor gives:
    the view's shape with 1 on the reduced axes. Raises ValueError otherwise (parameters from a
    tensor with another channel count, rank or grouping), which numpy broadcasting would either
    reject with an unclear message or, worse, silently accept.
    """
    view, reduced = layout(shape, scheme)
    expected = tuple(1 if a in reduced else n for a, n in enumerate(view))
    if tuple(scale_shape) != expected:
        raise ValueError(
            f"quantization params with scale shape {tuple(scale_shape)} do not fit an array of shape "
            f"{shape} under {scheme.granularity.value!r}; that array needs scale shape {expected}"
        )
    return view


def compact(a: np.ndarray, scheme: QuantScheme) -> np.ndarray:
    """Drop the size-1 reduced axes of a keepdims parameter array.

    Shapes: PER_TENSOR ``()``, PER_CHANNEL ``[C]``, PER_TOKEN ``s[:-1]``, PER_GROUP
    ``[*s[:-1], s[-1] // g]`` (``[oc, ic/g]`` for a 2-D weight). Returns a view.
    """
    granularity = scheme.granularity
    if granularity is Granularity.PER_TENSOR:
        return a.reshape(())
    if granularity is Granularity.PER_CHANNEL:
        return a.reshape(-1)
    return a[..., 0]
