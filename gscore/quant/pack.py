"""Two signed 4-bit codes per byte, in the MindSpore Golden Stick layout.

Along the last axis, code ``2k`` goes to the low nibble (bits 0-3) and code ``2k+1`` to the
high nibble (bits 4-7) of byte ``k``, each as 4-bit two's complement. Example: ``[1, -2]``
packs to ``0xE1`` (int8 -31). Halving the last axis is what int4 weight kernels expect for
``[oc, ic]`` weights packed along ``ic``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def pack_int4(q: npt.ArrayLike) -> np.ndarray:
    """Pack int4 codes ``q`` (any integer dtype, values in [-8, 7], rank >= 1, even last axis)
    into an int8 array whose last axis is half as long.

    Raises TypeError for non-integer input, ValueError for a 0-d array, an odd last axis or
    values outside [-8, 7] (a silent wrap would corrupt weights).
    """
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"pack_int4 needs integer codes, got dtype {q.dtype}")
    if q.ndim == 0 or q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs a last axis of even length, got shape {q.shape}")
    if q.size and (q.min() < -8 or q.max() > 7):
        raise ValueError(f"int4 codes must be in [-8, 7], got values in [{q.min()}, {q.max()}]")
    q8 = q.astype(np.int8, copy=False)  # exact after the range check; a view when already int8
    packed = np.left_shift(q8[..., 1::2], 4)  # new array; -8 << 4 = -128 still fits int8
    np.bitwise_or(packed, np.bitwise_and(q8[..., 0::2], 0x0F), out=packed)
    return packed


def unpack_int4(p: npt.ArrayLike) -> np.ndarray:
    """Inverse of :func:`pack_int4`: int8 (or uint8, same bytes) ``[..., n]`` to sign-extended
    int8 codes ``[..., 2n]`` in [-8, 7].

    Sign extension uses arithmetic right shifts on int8: ``(b << 4) >> 4`` for the low nibble,
    ``b >> 4`` for the high one. Raises TypeError for other dtypes, ValueError for 0-d input.
    """
    p = np.asarray(p)
    if p.dtype == np.uint8:
        p = p.view(np.int8)
    if p.dtype != np.int8:
        raise TypeError(f"unpack_int4 needs int8 or uint8 bytes, got dtype {p.dtype}")
    if p.ndim == 0:
        raise ValueError("unpack_int4 needs an array of rank >= 1, got a 0-d array")
    codes = np.empty((*p.shape[:-1], 2 * p.shape[-1]), dtype=np.int8)
    np.right_shift(np.left_shift(p, 4), 4, out=codes[..., 0::2])
    np.right_shift(p, 4, out=codes[..., 1::2])
    return codes
