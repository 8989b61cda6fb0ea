"""Writing a file atomically, and removing what writers that were killed left behind.

:func:`atomic_target` gives a writer a temporary path in the target's folder and renames it
onto the target only when the block succeeds, so the target always holds either the old file
or the complete new one. A writer killed mid-save (SIGKILL, power loss) cannot clean up, so
every save first removes the temporary files of *dead* earlier saves to the same target.

Which files are "ours and dead": each save owns a token (pid + random) and names its files
``.<target name>.<token>.gscore-save.{lock,ckpt,tmp}`` (``.tmp`` is MindSpore's own
intermediate file). It creates and ``flock``s the ``.lock`` file before any other and deletes
it after all others, holding the lock the whole time. The kernel drops the lock when its
process dies, however it dies, so a lock that can be taken belongs to a dead writer, and
files without a lock file have none. A live concurrent save (another process, or another
thread of this one) keeps its lock and its files; a reused pid cannot fool the check. (The
lock file is created locked, under a ``.new`` name renamed into place, so no cleaner ever
sees it unlocked. A writer killed in that microsecond leaves an empty ``.lock.new`` behind: it
is removed once the pid in its token is gone; a live or reused pid keeps it, the safe side.)
Without ``fcntl`` (Windows) saves are still atomic but nothing is cleaned up.

:func:`atomic_folder` does the same for a whole folder written once (a converted model).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms MindSpore's CPU build supports
    fcntl = None  # type: ignore[assignment]

MARK = "gscore-save"
_KINDS = ("ckpt", "tmp", "lock")


def _base(target: Path, token: str) -> str:
    return f".{target.name}.{token}.{MARK}"


def _pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(target.name)}\.(\d+-[0-9a-f]{{12}})\.{MARK}\.({'|'.join(_KINDS)})$")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _lock_is_free(lock_path: Path) -> tuple[bool, int | None]:
    """``(free, fd)``: whether nobody holds ``lock_path`` (taken now through ``fd``), or it is gone."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return True, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False, None
    return True, fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(target: Path, keep: str = "") -> list[Path]:
    """Delete the files of dead earlier saves to ``target`` (never token ``keep``'s); returns them."""
    if fcntl is None:
        return []
    pattern = _pattern(target)
    staging = re.compile(rf"^\.{re.escape(target.name)}\.((\d+)-[0-9a-f]{{12}})\.{MARK}\.lock\.new$")
    tokens = set()
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            match = pattern.match(entry.name)
            if match:
                tokens.add(match.group(1))
            staged = staging.match(entry.name)
            if staged and staged.group(1) != keep and not _pid_alive(int(staged.group(2))):
                with contextlib.suppress(FileNotFoundError, PermissionError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    for token in sorted(tokens - {keep}):
        base = target.parent / _base(target, token)
        free, fd = _lock_is_free(Path(f"{base}.lock"))
        if not free:
            continue
        try:
            for kind in _KINDS:
                path = Path(f"{base}.{kind}")
                with contextlib.suppress(FileNotFoundError, PermissionError):
                    path.unlink()
                    removed.append(path)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _locked_file(path: Path) -> int:
    """Create ``path`` already locked: made and locked under another name, then renamed, so no
    cleaner can see it unlocked."""
    staging = Path(f"{path}.new")
    fd = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(staging, path)
    return fd


@contextlib.contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """A temporary ``.ckpt`` path beside ``target``; renamed onto ``target`` if the block succeeds.

    Stale files of dead earlier saves to ``target`` are removed first (module docstring).
    """
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    base = target.parent / _base(target, token)
    lock_path, tmp = Path(f"{base}.lock"), Path(f"{base}.ckpt")
    lock_fd = _locked_file(lock_path)
    try:
        remove_stale(target, keep=token)
        yield tmp
        os.replace(tmp, target)
    finally:
        _unlink(tmp)
        _unlink(Path(f"{base}.tmp"))
        _unlink(lock_path)
        os.close(lock_fd)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it is renamed to ``path``.

    ``path`` must not exist yet, except that a complete folder another process renamed into
    place first is kept (ours is discarded): writers of the same content may race safely.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{str(path)!r} already exists; a folder is written only once")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
