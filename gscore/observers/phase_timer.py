"""Times every phase and records the process's peak RSS, by wrapping the phase hooks.

This is the worked example of a wrapper plugin: it never changes a result, it only appends a
:class:`PhaseRecord` to ``algorithm.phase_records`` and logs one line per phase on the
``gscore`` logger (silence it with ``logging.getLogger("gscore").setLevel(logging.WARNING)``).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from gscore.hookspecs import hookimpl

log = logging.getLogger("gscore")


@dataclass(frozen=True)
class PhaseRecord:
    """One phase run: its name, the algorithm's class, wall seconds, peak RSS in MiB after it."""

    phase: str
    algorithm: str
    seconds: float
    peak_rss_mib: float


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` survives ``exec``, so a process
    started by a large parent (pytest, a benchmark driver) would report the parent's peak.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _timed(phase: str, algorithm: Any) -> Any:
    start = time.perf_counter()
    result = yield
    record = PhaseRecord(phase, type(algorithm).__name__, time.perf_counter() - start, peak_rss_mib())
    algorithm.phase_records.append(record)
    log.info("%s %s: %.3f s, peak RSS %.0f MiB", record.algorithm, phase, record.seconds, record.peak_rss_mib)
    return result


@hookimpl(wrapper=True)
def gscore_calibrate(algorithm: Any, network: Any, network_helper: Any, datasets: Any) -> Any:
    return (yield from _timed("calibrate", algorithm))


@hookimpl(wrapper=True)
def gscore_quantize(algorithm: Any, network: Any) -> Any:
    return (yield from _timed("quantize", algorithm))


@hookimpl(wrapper=True)
def gscore_deploy(algorithm: Any, network: Any) -> Any:
    return (yield from _timed("deploy", algorithm))


@hookimpl(wrapper=True)
def gscore_prune(algorithm: Any, network: Any) -> Any:
    return (yield from _timed("prune", algorithm))
