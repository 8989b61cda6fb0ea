"""``gscore inspect CKPT``: what a checkpoint holds (algorithm, config, per-layer bits,
granularity and symmetry, sizes by dtype), read from the file alone, no model needed.

CKPT is a ``.ckpt`` file, a ``.safetensors`` export, or a run folder (its ``model.ckpt``)."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from gscore.cli import runs
from gscore.errors import CheckpointMismatchError
from gscore.report.markdown import layer_spec


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("inspect", parents=[common], help="what a checkpoint holds: algorithm, config, per-layer quantization, sizes")
    parser.add_argument("path", metavar="CKPT", help="a .ckpt or .safetensors file, or a run folder")
    parser.set_defaults(run=run, render=render)


def _contents(path: Path) -> tuple[dict[str, Any] | None, dict[str, tuple[str, tuple[int, ...], int]]]:
    """``(description, {parameter: (dtype, shape, bytes)})`` of a checkpoint or export."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from gscore.io.safetensors_io import read_metadata

        description = json.loads(read_metadata(path)["description"])
        with safe_open(str(path), framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return description, {k: (str(v.dtype), tuple(v.shape), v.nbytes) for k, v in tensors.items()}
    import mindspore as ms

    from gscore.io import DESCRIPTION_KEY, read_description

    description = read_description(path)
    params = {k: v for k, v in ms.load_checkpoint(str(path)).items() if k != DESCRIPTION_KEY}
    return description, {k: (str(v.dtype), tuple(v.shape), int(np.prod(v.shape)) * v.itemsize) for k, v in params.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.path)
    if path.is_dir():
        path = runs.open_run(path).checkpoint
    if not path.is_file():
        raise CheckpointMismatchError(f"no checkpoint at {str(path)!r} (give a .ckpt, a .safetensors export or a run folder)")
    description, params = _contents(path)
    by_dtype: Counter[str] = Counter()
    for dtype, _, size in params.values():
        by_dtype[dtype] += size
    description = description or {}
    return {
        "path": str(path),
        "file_bytes": os.path.getsize(path),
        "algorithm": description.get("algorithm"),
        "config": description.get("config"),
        "layers": description.get("layers", {}),
        "parameters": len(params),
        "bytes_by_dtype": dict(by_dtype.most_common()),
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"{r['path']}: {r['file_bytes'] / 2**20:.1f} MiB, {r['parameters']} parameters",
        "by dtype: " + ", ".join(f"{d} {b / 2**20:.1f} MiB" for d, b in r["bytes_by_dtype"].items()),
    ]
    if r["algorithm"] is None:
        return "\n".join(lines + ["no quantization description (a plain MindSpore checkpoint)"])
    config = {k: v for k, v in (r["config"] or {}).items() if k not in ("type", "version") and v not in (None, [], {}, "none", False, 0)}
    lines += [f"algorithm: {r['algorithm']}", "config: " + ", ".join(f"{k}={v}" for k, v in config.items())]
    specs = Counter(layer_spec(layer) for layer in r["layers"].values())
    lines.append(f"quantized layers: {len(r['layers'])}")
    lines += [f"  {count:>4} x {spec}" for spec, count in specs.most_common()]
    lines += ["", "| layer | quantization |", "|---|---|"]
    lines += [f"| {name} | {layer_spec(layer)} |" for name, layer in r["layers"].items()]
    return "\n".join(lines)
