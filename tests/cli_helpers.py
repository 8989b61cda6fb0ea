"""Running the ``gscore`` console script as a user would: a subprocess, its exit status and streams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

GSCORE = str(Path(sys.executable).with_name("gscore"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gscore(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([GSCORE, *map(str, args)], capture_output=True, text=True, check=False, timeout=timeout)


def ok(*args: str) -> subprocess.CompletedProcess:
    """Run and require success; on failure the assertion shows stderr."""
    result = gscore(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def fails(*args: str) -> str:
    """Run and require the error contract: exit 2, one ``gscore: ...`` line, no traceback; returns the message."""
    result = gscore(*args)
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("gscore: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails unless the file starts with the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
