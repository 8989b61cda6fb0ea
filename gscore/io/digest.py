"""SHA-256 digests of parameters, by content: what data-parallel workers compare, and what a
streamed checkpoint records for every block it has finished."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def _as_array(value: Any) -> np.ndarray:
    return np.ascontiguousarray(value if isinstance(value, np.ndarray) else value.asnumpy())


def parameters_digest(parameters: Any) -> str:
    """Hex SHA-256 over every parameter's name, dtype, shape and bytes, in name order.

    ``parameters``: a MindSpore cell (its parameters under their full names), a mapping
    name -> Parameter / Tensor / numpy array (a loaded checkpoint), or ``(name, value)`` pairs.
    Two sets of parameters have the same digest exactly when they are bitwise equal.
    """
    if hasattr(parameters, "get_parameters"):
        pairs: Iterable[tuple[str, Any]] = ((p.name, p) for p in parameters.get_parameters())
    elif isinstance(parameters, Mapping):
        pairs = parameters.items()
    else:
        pairs = parameters
    digest = hashlib.sha256()
    for name, value in sorted(pairs, key=lambda pair: pair[0]):
        array = _as_array(value)
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """Hex SHA-256 of one array's dtype, shape and bytes."""
    return parameters_digest([("", array)])
