"""Native CPU kernels for deployed quantized networks, and which of them this process uses.

The C++ sources ship in ``gscore/kernels/csrc``; :mod:`gscore.kernels.build` compiles them on
first use into a per-user cache, one library per *dispatch level*:

* ``amx`` — ``avx512vnni`` with the int8 prefill GEMM (A8W8, 32 rows and more) on AMX tiles
  (Intel Sapphire Rapids and later; falls back to VNNI if Linux refuses the tile state);
* ``avx512vnni`` — AVX-512 float math, int8 dot products with VNNI;
* ``avx2`` — AVX2 + FMA float math, int8 dot products as exact int16 pairs;
* ``cpp`` — portable C++ (no intrinsics), the same algorithms.

``GSCORE_KERNELS`` picks: ``auto`` (default: the best level this CPU runs), one of the levels
above, or ``portable`` — no native kernels: quantized cells compute with ordinary MindSpore ops
(dequantise, then a float matmul), as before the kernels existed. Without a C++ compiler (or
when the build fails, or the built library does not load) ``auto`` falls back to ``portable``
too. Either way one :class:`KernelFallbackWarning` says so, once per process and reason.

A cell decides when it is built (deploy/convert time), so set the variable before building the
network; :func:`forced` switches for a block of code (tests, benchmarks).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from contextlib import contextmanager
from typing import Iterator

from gscore.kernels.build import LEVEL_FLAGS, KernelError, compiler, library, supported_levels

ENV = "GSCORE_KERNELS"
PORTABLE = "portable"
AUTO = "auto"
CHOICES = (AUTO, *LEVEL_FLAGS, PORTABLE)

__all__ = ["AUTO", "CHOICES", "ENV", "PORTABLE", "KernelError", "KernelFallbackWarning", "enabled", "forced", "level", "supported_levels"]


class KernelFallbackWarning(UserWarning):
    """Quantized cells use the MindSpore ops path instead of native kernels, or a lower native
    level than the best this CPU runs (and why)."""


_override: str | None = None
_resolved: dict[str, str] = {}
_warned: set[str] = set()


def _requested() -> str:
    want = _override if _override is not None else (os.environ.get(ENV, "").strip().lower() or AUTO)
    if want not in CHOICES:
        raise KernelError(f"{ENV}={want!r} is not a kernel choice; use one of: {', '.join(CHOICES)}")
    return want


def _warn(message: str) -> None:
    """One KernelFallbackWarning per distinct message and process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, KernelFallbackWarning, stacklevel=4)


def _fall_back(reason: str) -> str:
    _warn(
        f"gscore native kernels are off ({reason}): quantized layers run the portable MindSpore path "
        f"(dequantise, then a float matmul), which is slower than FP32 on CPU"
    )
    return PORTABLE


def _resolve(want: str) -> str:
    if want == PORTABLE:
        return _fall_back(f"{ENV}={PORTABLE}")
    if want != AUTO and want not in supported_levels():
        raise KernelError(f"{ENV}={want}: this CPU cannot run it; it supports: {', '.join(supported_levels())} (or {PORTABLE})")
    cxx = compiler()
    if cxx is None:
        return _fall_back("no C++ compiler found: install g++ or set CXX")
    # auto: the best level that builds (a compiler may not know a new CPU's flags, e.g. AMX)
    failures = []
    for candidate in supported_levels() if want == AUTO else [want]:
        problem = _load_problem(candidate, cxx)
        if problem is None:
            if failures:
                _warn(f"gscore native kernels run at level {candidate}: " + "; ".join(failures))
            return candidate
        failures.append(problem)
    return _fall_back("; ".join(failures))


def _load_problem(candidate: str, cxx: str) -> str | None:
    """Why the ``candidate`` level's library cannot be used, or None when it can."""
    try:
        built = ctypes.CDLL(str(library(candidate, cxx)))
    except (KernelError, OSError) as err:  # OSError: the library was built but does not load
        return f"building the {candidate} kernels failed: {err}"
    built.gsk_level.restype = ctypes.c_char_p
    if built.gsk_level().decode() != candidate:
        return f"the {candidate} kernel library reports level {built.gsk_level().decode()!r}"
    return None


def level() -> str:
    """The active level: ``amx``, ``avx512vnni``, ``avx2``, ``cpp``, or ``portable`` (no native kernels).

    Builds the library on first use. Raises :class:`KernelError` for an unknown
    ``GSCORE_KERNELS`` value or a level this CPU cannot run.
    """
    want = _requested()
    if want not in _resolved:
        _resolved[want] = _resolve(want)
    return _resolved[want]


def enabled() -> bool:
    """True when quantized cells built now use native kernels."""
    return level() != PORTABLE


@contextmanager
def forced(choice: str) -> Iterator[str]:
    """Use ``choice`` (any of :data:`CHOICES`) for cells built inside the block; yields the level."""
    global _override
    previous = _override
    _override = choice.strip().lower()
    try:
        yield level()
    finally:
        _override = previous
