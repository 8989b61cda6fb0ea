"""``gscore export RUN --out FILE.safetensors``: the deployed network's integer codes, scales
and zero points with the quantization description in the header (layout: README,
:mod:`gscore.io.safetensors_io`). ``quantize`` writes ``model.safetensors`` already; this
verb writes it elsewhere or again."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gscore.cli import runs


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("export", parents=[common], help="write a quantize run as a safetensors file with its quantization description")
    parser.add_argument("run_dir", metavar="RUN", help="the --out folder of gscore quantize")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(run=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_ = runs.open_run(args.run_dir)
    runs.require(args.out.suffix == ".safetensors", f"--out must end in .safetensors, got {str(args.out)!r}")
    runs.require(args.force or not args.out.exists(), f"{str(args.out)!r} already exists; pass --force to replace it")
    from gscore.io import read_description
    from gscore.io.safetensors_io import export_safetensors

    deployed, _ = runs.deployed_network(run_)
    stored = read_description(run_.checkpoint) or {}
    description = {k: v for k, v in stored.items() if k not in ("format", "version")}  # as quantize exports it
    export_safetensors(deployed, args.out, description, metadata={"recipe": run_.recipe.to_yaml(), "model": run_.model})
    return {"out": str(args.out), "bytes": os.path.getsize(args.out), "parameters": sum(1 for _ in deployed.get_parameters())}


def render(r: dict[str, Any]) -> str:
    return f"wrote {r['out']} ({r['bytes'] / 2**20:.1f} MiB, {r['parameters']} tensors)"
