"""What a checkpoint file must prove before it is loaded: intact data, a fitting description.

* :func:`checksums` - a CRC-32 of every parameter's raw bytes, stored in the file's record at
  save time; :func:`verify_checksums` recomputes them at load time, so a flipped byte in a
  stored scale is an error naming the parameter, not a silently wrong network. (CRC-32 finds
  accidental corruption; it is no protection against deliberate tampering.)
* :func:`check_description` - the file's quantization description against what the
  algorithm that built the network says about it: the algorithm, and per layer the fields
  of :data:`LAYER_FIELDS` (bits, group size, symmetry, ...). A mismatch names the field.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Iterable, Mapping

import numpy as np

from gscore.errors import CheckpointMismatchError

CHECKSUM = "crc32"
LAYER_FIELDS = ("kind", "dtype", "bits", "granularity", "group_size", "symmetric", "packed", "axis", "input", "act_bits", "levels")


def tensor_bytes(tensor: Any) -> np.ndarray:
    """The raw bytes of a MindSpore tensor or parameter as a flat uint8 array (no copy if contiguous)."""
    try:
        array = tensor.asnumpy()
    except TypeError:  # dtypes numpy lacks (bfloat16): their float32 form is exact
        from mindspore import ops
        import mindspore as ms

        array = ops.cast(tensor, ms.float32).asnumpy()
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def crc32(tensor: Any) -> str:
    """CRC-32 of a tensor's raw bytes, as 8 hex digits."""
    return f"{zlib.crc32(tensor_bytes(tensor)):08x}"


def text_crc32(text: str) -> str:
    """CRC-32 of a string's UTF-8 bytes, as 8 hex digits."""
    return f"{zlib.crc32(text.encode()):08x}"


def checksums(named_tensors: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """``{name: crc32}`` for ``(name, tensor)`` pairs."""
    return {name: crc32(tensor) for name, tensor in named_tensors}


def verify_checksums(path: str, contents: Mapping[str, Any], expected: Mapping[str, str]) -> None:
    """Raise CheckpointMismatchError naming every parameter whose bytes do not match ``expected``."""
    if not isinstance(expected, Mapping):
        raise CheckpointMismatchError(f"checkpoint {path!r} is corrupted: its checksum table is a {type(expected).__name__}, not a mapping")
    problems = [f"{name} is listed in the checksums but missing from the file" for name in expected if name not in contents]
    problems += [f"{name} has no checksum" for name in contents if name not in expected]
    problems += [
        f"{name} (crc32 {actual} in the file, {expected[name]} when saved)"
        for name, tensor in contents.items()
        if name in expected and (actual := crc32(tensor)) != expected[name]
    ]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CheckpointMismatchError(f"checkpoint {path!r} is corrupted: the stored data of these parameters changed since it was saved: {shown}")


def _json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), to compare with a file."""
    return json.loads(json.dumps(value, default=str))


def check_description(path: str, stored: Any, expected: Mapping[str, Any]) -> None:
    """Raise CheckpointMismatchError naming each field where the file's description ``stored``
    contradicts ``expected`` (what the algorithm that built the network describes)."""
    if not isinstance(stored, Mapping):
        raise CheckpointMismatchError(f"checkpoint {path!r}: its quantization description is a {type(stored).__name__}, not a mapping")
    expected = _json(expected)
    problems = []
    if "algorithm" in expected and stored.get("algorithm") != expected["algorithm"]:
        problems.append(f"algorithm: the file says {stored.get('algorithm')!r}, the network was built by {expected['algorithm']!r}")
    if isinstance(expected.get("layers"), Mapping):
        problems += _layer_problems(stored.get("layers"), expected["layers"])
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CheckpointMismatchError(f"checkpoint {path!r} contradicts the network it is loaded into: {shown}")


def _layer_problems(stored: Any, expected: Mapping[str, Any]) -> list[str]:
    if not isinstance(stored, Mapping):
        return [f"layers: the file describes its layers as a {type(stored).__name__}, not a mapping of layer names"]
    problems = []
    for name in sorted(set(stored) | set(expected)):
        if name not in stored:
            problems.append(f"layers[{name!r}]: quantized in the network, not described in the file")
        elif name not in expected:
            problems.append(f"layers[{name!r}]: described in the file, not quantized in the network")
        elif not isinstance(stored[name], Mapping):
            problems.append(f"layers[{name!r}]: the file describes it as a {type(stored[name]).__name__}, not a mapping")
        else:
            for key in LAYER_FIELDS:
                in_file, in_network = stored[name].get(key), expected[name].get(key)
                if in_file != in_network:
                    problems.append(f"layers[{name!r}].{key}: the file says {in_file!r}, the network has {in_network!r}")
    return problems
