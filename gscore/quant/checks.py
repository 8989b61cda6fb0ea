"""Reject NaN and ±Inf before they reach the quantizer.

A single non-finite value poisons a whole scale (NaN min/max) or silently clips to an end
code, so every entry point refuses them with a message that says how many there are.
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np

from gscore.errors import NonFiniteValueError


def raise_nonfinite(x: np.ndarray, what: str) -> NoReturn:
    """Raise :class:`~gscore.errors.NonFiniteValueError` (a ValueError) for an array known to
    hold NaN or ±Inf, counting them.

    Only called on the error path, so the full-size boolean mask it builds costs nothing in
    normal runs.
    """
    count = x.size - int(np.count_nonzero(np.isfinite(x)))
    raise NonFiniteValueError(
        f"{what} has {count} non-finite value(s) (NaN or +/-Inf) out of {x.size}; "
        "quantization needs finite inputs"
    )


def require_finite(x: np.ndarray, what: str) -> None:
    """Raise NonFiniteValueError (a ValueError) if ``x`` holds NaN or ±Inf.

    Uses one min and one max reduction (NaN propagates through both, +Inf shows in the max,
    -Inf in the min) instead of ``np.isfinite(x).all()``, which would allocate a full-size
    boolean temporary: that matters on tensors of hundreds of millions of elements.
    """
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise_nonfinite(x, what)
