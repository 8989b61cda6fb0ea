"""MindSpore checkpoints that explain and check themselves, written atomically.

:func:`save_checkpoint` writes through :func:`gscore.io.atomic.atomic_target` (a temporary
file renamed into place; files of earlier saves that were killed are removed), so a crash
never leaves half a checkpoint under the final name. Besides the parameters, the file holds
one JSON record under :data:`DESCRIPTION_KEY`: the quantization description (which
algorithm and config produced the file and how each layer is quantized) and a CRC-32 of
every parameter and of the description. MindSpore's own ``load_checkpoint`` ignores the
record, so the file still loads into Golden Stick-layout networks.

:func:`load_checkpoint` is strict and all-or-nothing. A file that does not exist, cannot be
parsed, or whose data no longer matches its checksums; a missing, extra, mis-shaped or
mis-typed parameter; a description that contradicts what the algorithm that built the
network said about it (:func:`gscore.algorithm.built_description`): each raises
:class:`~gscore.errors.CheckpointMismatchError` naming the file and what is wrong, before
any parameter changes.

Record versions: 2 (this one) nests the description and adds checksums; version 1 files
(description at the top level, no checksums) still load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import mindspore as ms
from mindspore import nn

from gscore.algorithm import built_description
from gscore.errors import CheckpointMismatchError, CheckpointNotFoundError, ConfigError
from gscore.io.atomic import atomic_target
from gscore.io.integrity import CHECKSUM, check_description, checksums, text_crc32, verify_checksums
from gscore.transaction import is_cell, transaction

DESCRIPTION_KEY = "gscore_quant_description"
DESCRIPTION_FORMAT = "gscore-quant"
DESCRIPTION_VERSION = 2
_READABLE_VERSIONS = (1, 2)


def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"a checkpoint path must be a non-empty str or os.PathLike, got {path!r}")
    return Path(path)


def save_checkpoint(network: nn.Cell, path: str | os.PathLike[str], description: Mapping[str, Any] | None = None) -> Path:
    """Write ``network``'s parameters, ``description`` and their checksums to ``path`` atomically."""
    path = _as_path(path)
    if path.suffix != ".ckpt":
        raise ConfigError(f"checkpoint path must end in .ckpt (MindSpore appends it otherwise), got {str(path)!r}")
    if not is_cell(network):
        raise ConfigError(f"save_checkpoint saves a mindspore.nn.Cell, got {type(network).__name__}")
    if description is not None and not isinstance(description, Mapping):
        raise ConfigError(f"description must be a mapping (e.g. algo.describe(net)), got {type(description).__name__}")
    try:
        description_text = json.dumps(description, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"description must be JSON data (strings, finite numbers, lists, dicts): {exc}") from exc
    record = {
        "format": DESCRIPTION_FORMAT,
        "version": DESCRIPTION_VERSION,
        "description": json.loads(description_text),
        "description_crc32": text_crc32(description_text),
        "checksum": CHECKSUM,
        "checksums": checksums((p.name, p) for _, p in network.parameters_and_names()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        ms.save_checkpoint(network, str(tmp), append_dict={DESCRIPTION_KEY: json.dumps(record)})
    return path


def _read(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """``(path, parameters, record)``: the file parsed, its record checked (None for a plain file)."""
    path = _as_path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        contents = ms.load_checkpoint(str(path))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError for empty, truncated or foreign files
        raise CheckpointMismatchError(f"checkpoint {str(path)!r} cannot be read as a MindSpore checkpoint (empty, truncated or not a checkpoint): {exc}") from exc
    return path, contents, _record(str(path), contents.pop(DESCRIPTION_KEY, None))


def _record(path: str, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        record = json.loads(raw) if isinstance(raw, str) else None
    except ValueError as exc:
        raise CheckpointMismatchError(f"checkpoint {path!r}: its description record is not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CheckpointMismatchError(f"checkpoint {path!r}: its description record is a {type(record).__name__ if record is not None else type(raw).__name__}, not a JSON object")
    if record.get("format") != DESCRIPTION_FORMAT or record.get("version") not in _READABLE_VERSIONS:
        raise CheckpointMismatchError(
            f"checkpoint {path!r}: quantization description has format {record.get('format')!r} version {record.get('version')!r}; "
            f"this gscore reads {DESCRIPTION_FORMAT!r} versions {list(_READABLE_VERSIONS)}"
        )
    if record["version"] == 1:
        return {"description": record}
    description = record.get("description")
    if description is not None and not isinstance(description, dict):
        raise CheckpointMismatchError(f"checkpoint {path!r}: its description is a {type(description).__name__}, not a JSON object")
    if record.get("description_crc32") != text_crc32(json.dumps(description, allow_nan=False)):
        raise CheckpointMismatchError(f"checkpoint {path!r} is corrupted: its description does not match the checksum saved with it")
    if description is not None:
        record["description"] = {"format": DESCRIPTION_FORMAT, "version": record["version"], **description}
    return record


def read_description(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The quantization description stored in a checkpoint (with its ``format`` and record
    ``version``), or None if it has none."""
    _, _, record = _read(path)
    return None if record is None else record["description"]


def load_checkpoint(path: str | os.PathLike[str], network: nn.Cell) -> dict[str, Any] | None:
    """Load ``path`` into ``network`` strictly; returns the file's quantization description."""
    if not is_cell(network):
        raise ConfigError(f"load_checkpoint loads into a mindspore.nn.Cell, got {type(network).__name__}")
    path, contents, record = _read(path)
    name = str(path)
    if record is not None and "checksums" in record:
        verify_checksums(name, contents, record["checksums"])
    if not contents:
        raise CheckpointMismatchError(f"checkpoint {name!r} holds no parameters")
    description = None if record is None else record["description"]
    built_as = built_description(network)
    if description is not None and built_as is not None:
        check_description(name, description, built_as)
    load_parameters(contents, network, f"checkpoint {name!r}")
    return description


def load_parameters(contents: dict[str, Any], network: nn.Cell, source: str) -> None:
    """Load ``contents`` (name -> Parameter) into ``network`` strictly, all or nothing; ``source``
    names where they came from in errors (e.g. another tool's checkpoint after renaming).

    Raises CheckpointMismatchError naming every missing, unexpected, mis-shaped or mis-typed
    parameter."""
    expected = {p.name: p for _, p in network.parameters_and_names()}
    problems = [f"missing {n}" for n in expected if n not in contents]
    problems += [f"unexpected {n}" for n in contents if n not in expected]
    for n, param in expected.items():
        if n in contents:
            stored = contents[n]
            if tuple(stored.shape) != tuple(param.shape):
                problems.append(f"{n}: shape {tuple(stored.shape)} in file, {tuple(param.shape)} in network")
            elif stored.dtype != param.dtype:
                problems.append(f"{n}: dtype {stored.dtype} in file, {param.dtype} in network")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CheckpointMismatchError(f"{source} does not fit {type(network).__name__}: {shown}")
    with transaction(network):
        ms.load_param_into_net(network, contents, strict_load=True)
