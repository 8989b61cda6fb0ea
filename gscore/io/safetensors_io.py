"""The quantized network as a safetensors file: integer codes, scales and zero points by
parameter name, with the quantization description in the header.

Layout: one tensor per network parameter, under the parameter's gscore name
(``<layer>.weight`` int8 codes (int4 layers: two codes per byte, low nibble first),
``<layer>._weight_quantizer.scale`` / ``.zp_neg``, input quantizer scales and zero points,
KV-cache scales, float parameters such as norms and embeddings) in the network's own dtype.
The header's ``__metadata__`` holds strings only (safetensors' rule):

* ``format``: ``gscore-quant-safetensors``, ``version``: ``1``;
* ``description``: the checkpoint description as JSON (algorithm, config, per-layer dtype,
  bits, granularity, axis, symmetry, group size), as :func:`gscore.io.save_checkpoint` embeds it;
* ``checksums``: CRC-32 of every tensor (JSON), checked on load;
* anything the caller adds in ``metadata`` (the CLI adds ``recipe`` and ``model``).

:func:`load_safetensors` fills a DEPLOY network (built by the same algorithm and config) from
the file alone, no MindSpore checkpoint involved, with the same strict, all-or-nothing checks
as :func:`gscore.io.load_checkpoint`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import ml_dtypes  # noqa: F401 - registers numpy's bfloat16 for safetensors' numpy API
import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from gscore.algorithm import built_description
from gscore.errors import CheckpointMismatchError, CheckpointNotFoundError, ConfigError
from gscore.io.atomic import atomic_target
from gscore.io.checkpoint import load_parameters
from gscore.io.integrity import check_description, checksums, verify_checksums

FORMAT = "gscore-quant-safetensors"
VERSION = "1"


def _numpy(param: Parameter) -> np.ndarray:
    value = param.asnumpy() if param.dtype != ms.bfloat16 else param.float().asnumpy()
    return np.ascontiguousarray(value)


def export_safetensors(network: nn.Cell, path: str | os.PathLike[str], description: Mapping[str, Any] | None, metadata: Mapping[str, str] | None = None) -> Path:
    """Write every parameter of ``network`` and ``description`` to ``path`` atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"export path must end in .safetensors, got {str(path)!r}")
    params = [(p.name, p) for _, p in network.parameters_and_names()]
    tensors = {name: _numpy(p) for name, p in params}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "description": json.dumps(description, allow_nan=False),
        "checksums": json.dumps(checksums(params)),
        **{str(k): str(v) for k, v in (metadata or {}).items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:  # atomic_target names its temporary file .ckpt; the rename gives the final name
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The header metadata of an exported file (``description`` and ``checksums`` still JSON text)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no safetensors file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError for a bad header
        raise CheckpointMismatchError(f"{str(path)!r} cannot be read as a safetensors file: {exc}") from exc
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise CheckpointMismatchError(f"{str(path)!r} is not a {FORMAT} version {VERSION} file (its header says {metadata.get('format')!r} {metadata.get('version')!r})")
    return dict(metadata)


def load_safetensors(path: str | os.PathLike[str], network: nn.Cell) -> dict[str, Any] | None:
    """Load an exported file into ``network`` strictly; returns its description."""
    from safetensors.numpy import load_file

    metadata = read_metadata(path)
    name = str(path)
    try:
        description = json.loads(metadata["description"])
        expected = json.loads(metadata["checksums"])
        arrays = load_file(name)
    except (KeyError, ValueError) as exc:
        raise CheckpointMismatchError(f"{name!r}: header or data unreadable ({exc})") from exc
    network_params = {p.name: p for _, p in network.parameters_and_names()}
    contents = {}
    for key, value in arrays.items():
        dtype = network_params[key].dtype if key in network_params else None
        contents[key] = Parameter(Tensor(value, dtype) if dtype is not None else Tensor(value), name=key)
    verify_checksums(name, contents, expected)
    built_as = built_description(network)
    if description is not None and built_as is not None:
        check_description(name, description, built_as)
    load_parameters(contents, network, f"safetensors file {name!r}")
    return description
