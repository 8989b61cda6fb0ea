"""The few collectives calibration and training need, on numpy arrays, over MindSpore's own ops.

Every function must be called by every worker, in the same order, with arrays of the same
dtype (and, except for :func:`gather_rows`, the same shape); outside ``msrun`` each returns
what a single process holding all the data would compute, without importing MindSpore's
communication stack.

What MindSpore's CPU collectives do here decided how each is built (checked with two ``msrun``
workers, mindspore 2.9.0): ``AllReduce`` only sums, and only float32 of the dtypes tried (its MAX fails at
kernel selection; float64 is refused, int32/int64 fail at kernel selection). ``AllGather`` accepts float64 and int64
but silently sends them as float32 and int32 (``1 + 1e-12`` arrives as ``1.0``, ``2**40 + 3``
as ``3``), and refuses int8. It is exact on int32. So every array travels as its raw bytes
viewed as int32 words (bit-exact for any dtype) through ``AllGather``, and every reduction is
a local one over the gathered arrays in rank order: float64 statistics (Hessians, |x| sums)
keep every bit, and every worker computes bitwise the same result. Gradients, which are float32
and large, go through ``AllReduce`` inside :class:`mindspore.nn.DistributedGradReducer`
(:mod:`gscore.dist.training`).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from gscore.dist.runtime import active, rank, size
from gscore.errors import DistributedMismatchError


@functools.cache
def _all_gather_op():  # noqa: ANN202 - a MindSpore primitive, created once
    from mindspore import ops

    return ops.AllGather()


def _as_words(x: np.ndarray) -> np.ndarray:
    """``x``'s bytes as a 1-D int32 array (1- and 2-byte dtypes widened element by element)."""
    if x.dtype.itemsize % 4 == 0:
        return x.reshape(-1).view(np.int32)
    return x.reshape(-1).view(f"u{x.dtype.itemsize}").astype(np.int32)


def _from_words(words: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_as_words` for rows of words, shaped ``[len(words), *like.shape]``."""
    if like.dtype.itemsize % 4 == 0:
        flat = np.ascontiguousarray(words).view(like.dtype)
    else:
        flat = words.astype(f"u{like.dtype.itemsize}").view(like.dtype)
    return flat.reshape((len(words), *like.shape))


def _gather(x: np.ndarray) -> np.ndarray:
    """``[size, *x.shape]``: every worker's ``x`` in rank order, bit for bit (``x`` the same shape and dtype everywhere)."""
    from mindspore import Tensor

    x = np.ascontiguousarray(x)
    if x.size == 0:
        return np.zeros((size(), *x.shape), x.dtype)
    words = _all_gather_op()(Tensor(_as_words(x)[None])).asnumpy()
    return _from_words(words, x)


def gather(x: npt.ArrayLike) -> np.ndarray:
    """``[size, *x.shape]``: every worker's ``x`` (same shape and dtype everywhere) in rank order."""
    x = np.asarray(x)
    return _gather(x) if active() else x[None]


def all_sum(x: npt.ArrayLike) -> np.ndarray:
    """The elementwise sum over workers, as float64, added in rank order (the same bits everywhere)."""
    x = np.asarray(x, dtype=np.float64)
    if not active():
        return x
    return functools.reduce(np.add, _gather(x))


def all_min(x: npt.ArrayLike) -> np.ndarray:
    """The elementwise minimum over workers (dtype of ``x``; float32 and float64 are exact)."""
    x = np.asarray(x)
    return _gather(x).min(axis=0) if active() else x


def all_max(x: npt.ArrayLike) -> np.ndarray:
    """The elementwise maximum over workers."""
    x = np.asarray(x)
    return _gather(x).max(axis=0) if active() else x


def gather_rows(x: npt.ArrayLike) -> np.ndarray:
    """Every worker's rows ``[r_w, ...]`` concatenated in rank order; ``r_w`` may differ (even be 0)."""
    x = np.asarray(x)
    if not active():
        return x
    counts = _gather(np.array([x.shape[0]], np.int64))[:, 0]
    padded = np.zeros((int(counts.max()), *x.shape[1:]), x.dtype)
    padded[: x.shape[0]] = x
    gathered = _gather(padded)
    return np.concatenate([gathered[w, : counts[w]] for w in range(size())])


def barrier() -> None:
    """Return only when every worker got here (e.g. rank 0 has finished writing a file)."""
    if active():
        _gather(np.zeros(1, np.int32))


def agree(what: str, digest: str) -> None:
    """Raise :class:`~gscore.errors.DistributedMismatchError` on every worker unless all hold the
    same ``digest`` (hex SHA-256) of ``what``: the check that workers computed the same result."""
    if not active():
        return
    words = np.frombuffer(bytes.fromhex(digest), dtype=np.int64)
    gathered = _gather(words)
    if not (gathered == gathered[0]).all():
        held = ", ".join(f"rank {w}: {gathered[w].tobytes().hex()[:16]}" for w in range(size()))
        raise DistributedMismatchError(
            f"workers disagree on {what} (digests {held}); data-parallel workers must compute identical results, "
            f"so some statistic was not combined across workers (this is rank {rank()})"
        )
