"""Write a file or a whole folder so that its final name only ever holds a complete copy.

Both helpers hand out a temporary path next to the target (same file system, so the final
``os.replace`` / ``os.rename`` is atomic) and remove it if the writer fails. A crash or an
exception therefore leaves either the previous content or nothing under the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``path`` (an existing file is overwritten).

    ``suffix`` keeps an extension that a writer insists on (MindSpore appends ``.ckpt`` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
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
