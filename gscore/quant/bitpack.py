"""Unsigned 1-, 2- and 4-bit codes packed several per byte, for low-bit weight storage.

A byte holds ``8 // bits`` codes. Along the last axis, code ``j`` of a group goes to bits
``j*bits .. j*bits + bits - 1`` of its byte (the first code in the lowest bits), so for 2 bits
``[1, 2, 3, 0]`` packs to ``0b00_11_10_01`` = 57. The last axis is zero-padded up to a
multiple of ``8 // bits``; :func:`unpack_bits` takes the original length to drop the padding.

Codes are unsigned indices (``0 .. 2**bits - 1``), e.g. into a table of weight values (SLB)
or offset integers; signed int4 in the Golden Stick layout is :func:`gscore.quant.pack_int4`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PACKABLE_BITS = (1, 2, 4)


def _per_byte(bits: int) -> int:
    if isinstance(bits, bool) or bits not in PACKABLE_BITS:
        raise ValueError(f"bits must be one of {PACKABLE_BITS} (codes per byte: 8, 4, 2), got {bits!r}")
    return 8 // bits


def packed_length(length: int, bits: int) -> int:
    """Bytes needed for ``length`` codes of ``bits`` bits along one axis (rounded up)."""
    per_byte = _per_byte(bits)
    return -(-length // per_byte)


def pack_bits(codes: npt.ArrayLike, bits: int) -> np.ndarray:
    """Pack unsigned codes (any integer dtype, values in ``[0, 2**bits)``, rank >= 1) into
    uint8 ``[..., ceil(n / (8 // bits))]``.

    Raises TypeError for non-integer input and ValueError for a 0-d array, an unsupported
    ``bits`` or a code out of range (a silent wrap would corrupt weights).
    """
    per_byte = _per_byte(bits)
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"pack_bits needs integer codes, got dtype {codes.dtype}")
    if codes.ndim == 0:
        raise ValueError("pack_bits needs an array of rank >= 1, got a 0-d array")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(f"{bits}-bit codes must be in [0, {(1 << bits) - 1}], got values in [{codes.min()}, {codes.max()}]")
    n = codes.shape[-1]
    padded = np.zeros((*codes.shape[:-1], packed_length(n, bits) * per_byte), dtype=np.uint8)
    padded[..., :n] = codes
    groups = padded.reshape(*codes.shape[:-1], -1, per_byte)
    shifts = np.arange(per_byte, dtype=np.uint8) * np.uint8(bits)
    return np.bitwise_or.reduce(np.left_shift(groups, shifts), axis=-1).astype(np.uint8)


def unpack_bits(packed: npt.ArrayLike, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint8 ``[..., m]`` to uint8 codes ``[..., length]``.

    Raises TypeError unless ``packed`` is uint8, ValueError when ``length`` does not fit ``m``
    bytes (``packed_length(length, bits)`` must equal ``m``).
    """
    per_byte = _per_byte(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"unpack_bits needs uint8 bytes, got dtype {packed.dtype}")
    if packed.ndim == 0:
        raise ValueError("unpack_bits needs an array of rank >= 1, got a 0-d array")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0 or packed_length(length, bits) != packed.shape[-1]:
        raise ValueError(f"length {length!r} does not fit {packed.shape[-1]} byte(s) of {bits}-bit codes")
    shifts = np.arange(per_byte, dtype=np.uint8) * np.uint8(bits)
    codes = np.bitwise_and(np.right_shift(packed[..., None], shifts), np.uint8((1 << bits) - 1))
    return codes.reshape(*packed.shape[:-1], -1)[..., :length]
