"""Hypothesis strategies for quantization property tests.

Imports only numpy and hypothesis, so plugin test suites can reuse them without pulling in
gscore internals or MindSpore. Quantization schemes are drawn as keyword dicts for
``gscore.quant.QuantScheme`` (granularity as its string value), together with an array whose
shape fits them: for ``per_group`` the last axis is a multiple of ``group_size``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

GRANULARITIES = ("per_tensor", "per_channel", "per_group", "per_token")


def finite_floats(
    dtype: npt.DTypeLike = np.float32,
    max_magnitude: float = 1e4,
    non_negative: bool = False,
    allow_subnormal: bool = True,
) -> st.SearchStrategy[float]:
    """Finite floats exactly representable in ``dtype`` (float16/32/64), in
    ``[-max_magnitude, max_magnitude]`` (``[0, max_magnitude]`` if ``non_negative``).

    ``max_magnitude`` is rounded toward zero to ``dtype`` first (hypothesis needs exact bounds).
    """
    kind = np.dtype(dtype).type
    bound = kind(max_magnitude)
    if bound > max_magnitude:
        bound = np.nextafter(bound, kind(0))
    return st.floats(
        min_value=0.0 if non_negative else -float(bound),
        max_value=float(bound),
        width=8 * np.dtype(dtype).itemsize,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=allow_subnormal,
    )


@st.composite
def scheme_and_array(
    draw: st.DrawFn,
    dtype: npt.DTypeLike = np.float32,
    bits: tuple[int, ...] = (2, 4, 8),
    granularities: tuple[str, ...] = GRANULARITIES,
    max_magnitude: float = 1e4,
    allow_subnormal: bool = True,
    max_rank: int = 3,
    max_side: int = 5,
) -> tuple[dict[str, Any], np.ndarray]:
    """``(QuantScheme keyword dict, array)`` with the array's shape fitting the scheme.

    Ranks 1..``max_rank``, sides 1..``max_side`` (per-group last axis: 1..3 groups of 1..4).
    Symmetric unsigned schemes get non-negative data, the only data they are meant for, and
    never ``narrow`` (which they do not allow).
    """
    granularity = draw(st.sampled_from(granularities))
    symmetric, signed = draw(st.booleans()), draw(st.booleans())
    kwargs: dict[str, Any] = {
        "bits": draw(st.sampled_from(bits)),
        "symmetric": symmetric,
        "signed": signed,
        "narrow": draw(st.booleans()) if signed or not symmetric else False,
        "granularity": granularity,
    }
    ndim = draw(st.integers(1, max_rank))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, max_side=max_side))
    if granularity == "per_channel":
        kwargs["axis"] = draw(st.integers(-ndim, ndim - 1))
    if granularity == "per_group":
        kwargs["group_size"] = draw(st.integers(1, 4))
        shape = (*shape[:-1], kwargs["group_size"] * draw(st.integers(1, 3)))
    elements = finite_floats(dtype, max_magnitude, symmetric and not signed, allow_subnormal)
    return kwargs, draw(hnp.arrays(dtype, shape, elements=elements))


def int4_codes(max_rank: int = 3, max_side: int = 6) -> st.SearchStrategy[np.ndarray]:
    """int8 arrays of int4 codes in [-8, 7] whose last axis has even length (packable)."""
    shapes = hnp.array_shapes(min_dims=1, max_dims=max_rank, max_side=max_side)
    return shapes.flatmap(
        lambda s: hnp.arrays(np.int8, (*s[:-1], 2 * s[-1]), elements=st.integers(-8, 7))
    )


def int8_bytes(max_rank: int = 3, max_side: int = 6) -> st.SearchStrategy[np.ndarray]:
    """Arbitrary int8 arrays, e.g. packed int4 bytes (every byte is a valid pair of codes)."""
    return hnp.arrays(np.int8, hnp.array_shapes(min_dims=1, max_dims=max_rank, max_side=max_side))
