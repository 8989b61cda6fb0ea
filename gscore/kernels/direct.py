"""Call a kernel's entry point on numpy arrays through ctypes, without MindSpore.

The same C functions MindSpore calls as AOT operators take (pointers, ranks, shapes, dtype
names) of inputs then outputs; here numpy provides them. ``bench/kernels.py`` times kernels
this way, so MindSpore's per-operator cost can be told apart from the kernel's own time; it
also serves any numpy caller that wants a kernel without building tensors.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from gscore.kernels.build import KernelError, library

_DTYPE_NAMES = {
    np.dtype(np.float32): b"float32", np.dtype(np.float16): b"float16", np.dtype(np.float64): b"float64",
    np.dtype(np.int8): b"int8", np.dtype(np.int32): b"int32", np.dtype(np.int64): b"int64", np.dtype(np.uint8): b"uint8",
}
_ENTRY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)), ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p, ctypes.c_void_p)


@lru_cache(maxsize=None)
def _library(path: Path) -> ctypes.CDLL:
    return ctypes.CDLL(str(path))


@lru_cache(maxsize=None)
def _level_library(level: str) -> ctypes.CDLL:
    """This package's library for ``level``, found once per process, as the level itself is.

    Finding it hashes every kernel source, looks up the compiler on PATH and MindSpore's version
    in the package metadata: about 2 ms, which the thousands of small calls of a calibration (a
    min/max or a quantize per weight row block) paid each time, 21 s of 130 in an AWQ + GPTQ run.
    """
    return _library(library(level))


class Call:
    """A prepared call of kernel ``name`` at ``level`` on fixed arrays; ``run()`` executes it.

    Arrays must be C-contiguous with dtypes the kernel accepts; outputs are written in place.
    Preparing once and running many times keeps ctypes marshalling out of timings.
    ``library_path`` runs another build of the kernels (e.g. an older revision's, to compare
    the two in one process) instead of this package's build for ``level``.
    """

    def __init__(self, name: str, level: str, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], library_path: Path | None = None) -> None:
        arrays = [*inputs, *outputs]
        for a in arrays:
            if not a.flags.c_contiguous or a.dtype not in _DTYPE_NAMES:
                raise KernelError(f"kernel {name}: arrays must be C-contiguous {sorted(map(str, _DTYPE_NAMES))}, got {a.dtype} contiguous={a.flags.c_contiguous}")
        self.name = name
        self._arrays = arrays
        n = len(arrays)
        self._shapes = [(ctypes.c_int64 * max(a.ndim, 1))(*(a.shape or (1,))) for a in arrays]
        self._params = (ctypes.c_void_p * n)(*(a.ctypes.data for a in arrays))
        self._ndims = (ctypes.c_int * n)(*(a.ndim for a in arrays))
        self._shape_ptrs = (ctypes.POINTER(ctypes.c_int64) * n)(*(ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in self._shapes))
        self._dtypes = (ctypes.c_char_p * n)(*(_DTYPE_NAMES[a.dtype] for a in arrays))
        self._n = n
        self._fn = _ENTRY((f"gsk_{name}", _library(library_path) if library_path else _level_library(level)))

    def run(self) -> None:
        status = self._fn(self._n, self._params, self._ndims, self._shape_ptrs, self._dtypes, None, None)
        if status != 0:
            raise KernelError(f"kernel {self.name} rejected its arguments (status {status}): shapes {[a.shape for a in self._arrays]}")


def call(name: str, level: str, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
    """Run kernel ``name`` once on numpy ``inputs``, writing ``outputs`` in place."""
    Call(name, level, inputs, outputs).run()
