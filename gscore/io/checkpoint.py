"""MindSpore checkpoints with an embedded, versioned quantization description.

:func:`save_checkpoint` writes to a temporary file in the target folder and renames it into
place, so a crash never leaves half a checkpoint under the final name. The description (a
JSON string under :data:`DESCRIPTION_KEY`) says which algorithm and config produced the
file and how each layer is quantized; MindSpore's own ``load_checkpoint`` ignores it, so the
file still loads into Golden Stick-layout networks.

:func:`load_checkpoint` is strict: every parameter of the network must be in the file with
the same shape and dtype, and the file must hold no parameter the network lacks; any
mismatch raises :class:`~gscore.errors.CheckpointMismatchError` naming the parameters.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore import nn

from gscore.dist.outputs import written_by_root
from gscore.errors import CheckpointMismatchError

DESCRIPTION_KEY = "gscore_quant_description"
DESCRIPTION_FORMAT = "gscore-quant"
DESCRIPTION_VERSION = 1


@written_by_root
def save_checkpoint(network: nn.Cell, path: str | os.PathLike[str], description: dict[str, Any] | None = None) -> Path:
    """Write ``network``'s parameters (and ``description``) to ``path`` atomically.

    In a data-parallel (``msrun``) job every worker calls it: the workers check that their
    networks are identical and rank 0 writes (:func:`gscore.dist.outputs.written_by_root`).
    """
    path = Path(path)
    if path.suffix != ".ckpt":
        raise ValueError(f"checkpoint path must end in .ckpt (MindSpore appends it otherwise), got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    append = {}
    if description is not None:
        append[DESCRIPTION_KEY] = json.dumps({"format": DESCRIPTION_FORMAT, "version": DESCRIPTION_VERSION, **description})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".ckpt", dir=path.parent)
    os.close(fd)
    try:
        ms.save_checkpoint(network, tmp, append_dict=append or None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_description(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The quantization description stored in a checkpoint, or None for a plain checkpoint."""
    return _description(ms.load_checkpoint(str(path)))


def _description(contents: dict[str, Any]) -> dict[str, Any] | None:
    raw = contents.pop(DESCRIPTION_KEY, None)
    if raw is None:
        return None
    description = json.loads(raw)
    if description.get("format") != DESCRIPTION_FORMAT or description.get("version") != DESCRIPTION_VERSION:
        raise CheckpointMismatchError(
            f"quantization description has format {description.get('format')!r} version {description.get('version')!r}; "
            f"this gscore reads {DESCRIPTION_FORMAT!r} version {DESCRIPTION_VERSION}"
        )
    return description


def load_checkpoint(path: str | os.PathLike[str], network: nn.Cell) -> dict[str, Any] | None:
    """Load ``path`` into ``network`` strictly; returns the file's quantization description."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    contents = ms.load_checkpoint(str(path))
    description = _description(contents)
    load_parameters(contents, network, f"checkpoint {str(path)!r}")
    return description


def load_parameters(contents: dict[str, Any], network: nn.Cell, source: str) -> None:
    """Load ``contents`` (name -> Parameter) into ``network`` strictly; ``source`` names it in errors."""
    expected = {p.name: p for p in network.get_parameters()}
    problems = [f"missing {name}" for name in expected if name not in contents]
    problems += [f"unexpected {name}" for name in contents if name not in expected]
    for name, param in expected.items():
        if name in contents:
            stored = contents[name]
            if tuple(stored.shape) != tuple(param.shape):
                problems.append(f"{name}: shape {tuple(stored.shape)} in file, {tuple(param.shape)} in network")
            elif stored.dtype != param.dtype:
                problems.append(f"{name}: dtype {stored.dtype} in file, {param.dtype} in network")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CheckpointMismatchError(f"{source} does not fit {type(network).__name__}: {shown}")
    ms.load_param_into_net(network, contents, strict_load=True)
