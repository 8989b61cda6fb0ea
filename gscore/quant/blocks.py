"""Walk a tensor in blocks of leading-axis rows that fit a core's cache.

Quantizing a large weight touches each value several times (range, divide, round, clip,
convert); done on the whole tensor, every one of those passes streams it from memory. Done block
by block, the block is read from memory once and the later passes hit the cache, so the work
costs about one read of the tensor (``bench/rtn.py`` measures it against a plain copy). Results
do not change: the same element-wise operations run on the same values.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

BLOCK_BYTES = 1 << 18  # float32 bytes per block: well inside a core's L2 cache


def rows_of(shape: tuple[int, ...]) -> int:
    """Leading-axis rows per block for an array of ``shape`` (at least 1, at most ``shape[0]``)."""
    per_row = 4 * int(np.prod(shape[1:], dtype=np.int64))
    return max(1, min(shape[0], BLOCK_BYTES // max(per_row, 1)))


def row_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of the leading axis covering ``shape[0]`` rows, :func:`rows_of` at a time."""
    step = rows_of(shape)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))
