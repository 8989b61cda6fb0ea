"""Helpers shared by the benchmarks: timing, memory, machine facts and result files.

The benchmarks run on small, noisy shared machines, so every number they publish is either a
best-of-N wall time or a ratio between two things measured in the same process. Times are
seconds (``time.perf_counter``), memory is MiB (2**20 bytes).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- time


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn()`` once; return ``(wall seconds, its result)``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved_rounds(measures: dict[Any, Callable[[], float]], rounds: int, seed: int = 0) -> dict[Any, list[float]]:
    """Every one of ``measures`` once per round, in a new seeded random order each round, so a
    noisy machine's slow spells fall on all of them alike: each one's results, round by round."""
    import random

    order = random.Random(seed)
    results: dict[Any, list[float]] = {key: [] for key in measures}
    for _ in range(rounds):
        keys = list(measures)
        order.shuffle(keys)
        for key in keys:
            results[key].append(measures[key]())
    return results


def clocked(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run ``fn()`` once; return ``(wall seconds, CPU seconds of this process, its result)``.

    CPU time (all threads) is less sensitive than wall time to other tenants of a shared
    machine taking turns on the cores, so a ratio that holds in both is trustworthy.
    """
    cpu0, start = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu0, result


def slow_share(samples: list[float]) -> float:
    """Share of step times above twice the median of the fastest half: how often a run fell
    into the slow mode of a bimodal distribution."""
    import numpy as np

    ordered = sorted(samples)
    fast_median = float(np.median(ordered[: max(1, len(ordered) // 2)]))
    return float(np.mean(np.array(ordered) > 2 * fast_median))


def summary(samples: list[float]) -> dict[str, Any]:
    """Best (the least disturbed run on a noisy machine), median and every sample, in seconds."""
    ordered = sorted(samples)
    return {"best_s": ordered[0], "median_s": ordered[len(ordered) // 2], "samples_s": samples}


def standard_error_of_mean(values: Any) -> float:
    """Standard deviation of ``values`` over sqrt(len): how far their mean would move between
    draws (e.g. the spread between repeated runs of one method); NaN for fewer than two values."""
    import numpy as np

    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def copy_bandwidth(megabytes: int = 256, repeat: int = 7) -> float:
    """Bytes per second of a numpy copy of ``megabytes`` MiB (best of ``repeat``): the memory
    bandwidth a memory-bound kernel can hope for on this machine right now."""
    import numpy as np

    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    best = min(timed(lambda: np.copyto(dst, src))[0] for _ in range(repeat))
    return src.nbytes / best


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field such as ``VmRSS`` or ``VmHWM``, in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float:
    """Current resident set size, MiB."""
    kib = _status_kib("VmRSS")
    return float("nan") if kib is None else kib / 1024


def hwm_mib() -> float:
    """Peak resident set size since start or the last :func:`reset_peak_rss`, MiB."""
    kib = _status_kib("VmHWM")
    return float("nan") if kib is None else kib / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``).

    Returns True only if the reset demonstrably worked (HWM equals RSS right after), so a
    peak measured after it belongs to the code that ran since, not to earlier setup.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return abs(hwm_mib() - rss_mib()) < 4.0  # a few pages may be touched in between


class PeakRss:
    """Peak RSS growth over a block, MiB: ``with PeakRss() as m: ...; m.delta_mib``.

    Uses the VmHWM reset when it works (exact peak, however short). Otherwise the peak is only
    known if it exceeds every earlier peak of the process (``ru_maxrss``), so ``exact`` is False.
    """

    def __enter__(self) -> "PeakRss":
        self.exact = reset_peak_rss()
        self.before_mib = rss_mib()
        self._hwm_before = hwm_mib()
        return self

    def __exit__(self, *exc: object) -> None:
        self.after_mib = rss_mib()
        self.peak_mib = hwm_mib()
        self.delta_mib = max(0.0, self.peak_mib - (self.before_mib if self.exact else self._hwm_before))
        self.retained_mib = self.after_mib - self.before_mib

    def as_dict(self) -> dict[str, Any]:
        return {
            "rss_before_mib": round(self.before_mib, 1),
            "peak_rss_mib": round(self.peak_mib, 1),
            "peak_over_baseline_mib": round(self.delta_mib, 1),
            "rss_after_minus_before_mib": round(self.retained_mib, 1),
            "peak_is_exact": self.exact,
        }


# --------------------------------------------------------------------------- facts


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, kernel and transparent-hugepage mode (it changes copy speed)."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if line.startswith("model name")), platform.processor())
    mem_kib = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), 0)
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "python": platform.python_version(),
    }


def load_info() -> dict[str, Any]:
    """1/5/15-minute load average and CPU pressure (share of time some task waited for a core)."""
    load = _read("/proc/loadavg").split()[:3]
    pressure = _read("/proc/pressure/cpu").splitlines()
    some = dict(kv.split("=") for kv in pressure[0].split()[1:]) if pressure else {}
    return {"loadavg_1_5_15": [float(v) for v in load], "cpu_pressure_some_avg10_pct": float(some.get("avg10", "nan"))}


def git_revision() -> str:
    """``HEAD`` commit of the checkout, with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def command_line() -> str:
    """The command that ran this benchmark, as typed from the repository root."""
    script = os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0]) else sys.argv[0]
    return shlex.join(["python", script, *sys.argv[1:]])


def provenance(load_start: dict[str, Any]) -> dict[str, Any]:
    """What every report opens with: the command, git revision, machine, and the load average
    at the start (``load_start``, taken by the caller before its measurements) and now."""
    return {"command": command_line(), "git": git_revision(), "machine": machine_info(), "load_start": load_start, "load_end": load_info()}


# --------------------------------------------------------------------------- output


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (indented, stable key order)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_text(name: str, text: str) -> Path:
    """Write ``bench/results/<name>`` as is."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    return path


def write_results(name: str, res: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> None:
    """Write ``bench/results/<name>.json`` and ``<name>.md`` (``markdown(res)``) and say where."""
    print("wrote", write_json(name, res), "and", write_text(f"{name}.md", markdown(res)))


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- kernels


def baseline_library(revision: str, level: str, into: Path) -> Path:
    """The kernels of git ``revision`` built for ``level`` in directory ``into``: what
    ``--baseline`` races this tree's kernels against (bench/kernels.py, bench/decode_fusion.py)."""
    from gscore.kernels.build import compile_library, compiler

    sources = into / "src"
    sources.mkdir()
    archive = subprocess.run(["git", "archive", revision, "gscore/kernels/csrc"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(sources)], input=archive, check=True)
    target = into / f"libgscore_kernels_{level}.so"
    compile_library(level, compiler(), target, sources / "gscore" / "kernels" / "csrc")
    return target
