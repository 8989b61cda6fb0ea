"""Compile the C++ kernels once per machine and keep the shared libraries in a cache.

A library is built per dispatch level (see :data:`LEVEL_FLAGS`) with the system C++ compiler
into ``$GSCORE_CACHE/kernels/<key>/`` (``GSCORE_CACHE`` defaults to ``~/.cache/gscore``). The
key hashes everything the binary depends on: the sources shipped in ``gscore/kernels/csrc``,
the compiler and its version, the compile flags, this CPU's features, and the MindSpore version
(whose AOT calling convention the entry points follow). A changed source or a new compiler
therefore builds a new library; nothing stale is ever loaded.

The compiler writes to a unique temporary name in the target directory, which is then renamed
onto the final name: two processes building the same key at once both succeed (the rename is
atomic; the second one replaces an identical file), and a killed build leaves no half library.

Imports neither MindSpore nor numpy: :mod:`gscore.quant` loads the same library through ctypes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from gscore.errors import GscoreError

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
# A build takes 20-30 s on a busy 2-core machine; a compiler still running after this is stuck.
COMPILE_TIMEOUT_S = 600
COMMON_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-Wl,-z,nodelete", "-ffp-contract=off", "-fno-math-errno")

# Native levels, best first: the CPU flags (from /proc/cpuinfo) each needs and how it compiles.
_AVX512VNNI_NEEDS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx2", "fma", "f16c")
_AVX512VNNI_FLAGS = ("-DGSK_LEVEL_AVX512VNNI", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c")
LEVEL_FLAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "amx": ((*_AVX512VNNI_NEEDS, "amx_tile", "amx_int8"), (*_AVX512VNNI_FLAGS, "-DGSK_LEVEL_AMX", "-mamx-tile", "-mamx-int8")),
    "avx512vnni": (_AVX512VNNI_NEEDS, _AVX512VNNI_FLAGS),
    "avx2": (("avx2", "fma", "f16c"), ("-DGSK_LEVEL_AVX2", "-mavx2", "-mfma", "-mf16c")),
    "cpp": ((), ()),
}


class KernelError(GscoreError):
    """A kernel level cannot be used: unknown, unsupported by this CPU, or failed to build."""


def cache_root() -> Path:
    """``$GSCORE_CACHE/kernels`` (``GSCORE_CACHE`` defaults to ``~/.cache/gscore``)."""
    return Path(os.environ.get("GSCORE_CACHE", Path.home() / ".cache" / "gscore")) / "kernels"


def compiler() -> str | None:
    """The C++ compiler to use: ``$CXX`` if set (it must exist), else g++, c++ or clang++ on PATH."""
    wanted = os.environ.get("CXX")
    if wanted:
        return shutil.which(wanted)
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


@lru_cache(maxsize=None)
def _compiler_identity(path: str) -> str:
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return f"{path}\n{result.stdout.strip()}"


@lru_cache(maxsize=None)
def cpu_features() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of this CPU from ``/proc/cpuinfo`` (empty when unreadable)."""
    model, flags = "", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def supported_levels() -> list[str]:
    """Native levels this CPU can run, best first (``cpp`` always)."""
    _, flags = cpu_features()
    return [level for level, (needs, _) in LEVEL_FLAGS.items() if set(needs) <= flags]


def _mindspore_version() -> str:
    try:
        return importlib.metadata.version("mindspore")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def sources() -> list[Path]:
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".cc", ".h"))


def cache_key(level: str, cxx: str) -> str:
    """Hash of sources, compiler identity, flags, CPU features and MindSpore version."""
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    model, flags = cpu_features()
    for part in (level, _compiler_identity(cxx), " ".join(COMMON_FLAGS + LEVEL_FLAGS[level][1]), model, " ".join(sorted(flags)), _mindspore_version()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:20]


def library(level: str, cxx: str | None = None) -> Path:
    """Path of the built library for ``level``, compiling it first if the cache lacks it.

    Raises :class:`KernelError` for an unknown level, a level this CPU cannot run, no
    compiler, or a failed compile (with the compiler's message).
    """
    if level not in LEVEL_FLAGS:
        raise KernelError(f"unknown kernel level {level!r}; known: {', '.join(LEVEL_FLAGS)}")
    if level not in supported_levels():
        raise KernelError(f"this CPU cannot run kernel level {level!r}; it supports: {', '.join(supported_levels())}")
    cxx = cxx or compiler()
    if cxx is None:
        raise KernelError("no C++ compiler found (set CXX, or install g++)")
    target = cache_root() / cache_key(level, cxx) / f"libgscore_kernels_{level}.so"
    if target.exists():
        return target
    try:
        compile_library(level, cxx, target)
    except OSError as err:  # an unwritable cache, a compiler that cannot be run
        raise KernelError(f"cannot build the {level} kernels into {target.parent}: {err} (set GSCORE_CACHE to a writable directory, or CXX)") from err
    return target


def compile_library(level: str, cxx: str, target: Path, source_dir: Path = SOURCE_DIR) -> None:
    """Compile ``source_dir/entry.cc`` for ``level`` into ``target``, atomically (a temporary
    name, then a rename: two processes building at once both succeed). ``bench/kernels.py
    --baseline`` builds an older revision's sources this way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        command = [cxx, *COMMON_FLAGS, *LEVEL_FLAGS[level][1], "-I", str(source_dir), "-o", tmp, str(source_dir / "entry.cc")]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise KernelError(f"compiling the {level} kernels took over {COMPILE_TIMEOUT_S} s ({' '.join(command)})") from err
        if result.returncode != 0:
            raise KernelError(f"compiling the {level} kernels failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
