"""``gscore quantize MODEL --recipe RECIPE --out DIR``: calibrate and quantize a model from a
recipe, write a checked checkpoint, its safetensors export and the report (see :mod:`gscore.cli.runs`).

"Checked": before the folder is moved into place, a fresh DEPLOY network is built from the
recipe, the checkpoint is loaded into it strictly, and its logits on a held-out window must
equal the quantized network's exactly.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gscore.cli import runs, sources
from gscore.errors import CheckpointMismatchError
from gscore.recipe import load_recipe

DEFAULT_RECIPE = "a8w8-rotation"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("quantize", parents=[common], help="quantize a model from a recipe into a checked checkpoint with a report")
    parser.add_argument("model", nargs="?", default=sources.DEFAULT_MODEL, help=f"a model name ({', '.join(sources.MODELS)}) or a Hugging Face-format Llama-family folder (default: %(default)s)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="a recipe YAML file or the name of a shipped recipe (gscore/recipes/*.yaml; default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="run folder to write (must not exist unless --force)")
    parser.add_argument("--calib", type=int, default=8, help="calibration windows (default: %(default)s)")
    parser.add_argument("--calib-data", default=sources.WIKIPEDIA, help="'wikipedia' (the embedded calibration split), a .txt or a .jsonl file with a 'text' field")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per window (default: %(default)s)")
    parser.add_argument("--report-windows", type=int, default=2, help="held-out windows for the per-layer report (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of MindSpore's and numpy's generators (default: %(default)s)")
    parser.add_argument("--device", choices=["cpu"], default="cpu", help="where to run (CPU only)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists (only once the new run is complete)")
    parser.set_defaults(run=run, render=render)


def check_deployed(quantized: Any, deployed: Any, ids: np.ndarray) -> None:
    """The checkpoint loaded into a DEPLOY network must give the quantized network's logits exactly."""
    from gscore.eval.perplexity import llama_forward

    expected, got = llama_forward(quantized)(ids), llama_forward(deployed)(ids)
    if not np.array_equal(expected, got):
        raise CheckpointMismatchError(f"the saved checkpoint does not reproduce the quantized network (max |Δ logit| {np.abs(expected - got).max():.3g}); nothing was written")


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = sources.model_reference(args.model)
    recipe = load_recipe(args.recipe)
    runs.require(args.force or not args.out.exists(), f"{str(args.out)!r} already exists; choose another --out or pass --force to replace it")
    runs.require(args.calib >= 1 and args.report_windows >= 1, "--calib and --report-windows must be at least 1")
    import mindspore as ms

    from gscore.io import save_checkpoint
    from gscore.io.safetensors_io import export_safetensors
    from gscore.models.llama_helper import LlamaHelper
    from gscore.recipe import build_algorithm
    from gscore.cli.report import write_report

    ms.set_device("CPU")
    ms.runtime.launch_blocking()
    ms.set_seed(args.seed)
    np.random.seed(args.seed)
    folder = sources.open_model(model)
    tokenizer = folder.tokenizer()
    windows = sources.windows(tokenizer, args.calib_data, "calibration", args.tokens, args.calib + args.report_windows)
    calibration = {"source": args.calib_data, "windows": args.calib, "tokens": args.tokens, "held_windows": args.report_windows}

    network = folder.build()
    algo = build_algorithm(recipe.stages[0], "quantize", where=f"recipe {recipe.name!r}")
    start = time.perf_counter()
    algo.convert(algo.apply(network, LlamaHelper(tokenizer), datasets=windows[: args.calib]))
    seconds = time.perf_counter() - start
    description = algo.describe(network)

    with runs.new_run_folder(args.out, args.force) as tmp:
        save_checkpoint(network, tmp / runs.CHECKPOINT_FILE, description=description)
        (tmp / runs.RECIPE_FILE).write_text(recipe.to_yaml())
        runs.write_json(tmp / runs.RUN_FILE, runs.run_record(model, recipe, calibration, args.seed))
        run_ = runs.open_run(tmp)
        deployed, _ = runs.deployed_network(run_)
        check_deployed(network, deployed, windows[args.calib])
        del network
        export_safetensors(deployed, tmp / runs.EXPORT_FILE, description, metadata={"recipe": recipe.to_yaml(), "model": model})
        report = write_report(tmp, run_, deployed, tokenizer, progress=not args.quiet)
    return {
        "out": str(args.out),
        "model": model,
        "recipe": recipe.name,
        "quantize_seconds": seconds,
        "checkpoint": str(args.out / runs.CHECKPOINT_FILE),
        "checkpoint_bytes": os.path.getsize(args.out / runs.CHECKPOINT_FILE),
        "export": str(args.out / runs.EXPORT_FILE),
        "report": str(args.out / runs.REPORT_MD),
        "quantized_layers": len(description.get("layers", {})),
        "worst": report["worst"][:5],
    }


def render(r: dict[str, Any]) -> str:
    from gscore.report.plots import short_name

    worst = ", ".join(f"{short_name(w['layer'])} ({w['relative_error']:.3g})" for w in r["worst"])
    return "\n".join([
        f"quantized {r['model']} with {r['recipe']} in {r['quantize_seconds']:.1f} s: {r['quantized_layers']} layers",
        f"checkpoint: {r['checkpoint']} ({r['checkpoint_bytes'] / 2**20:.1f} MiB, checked by loading it into a DEPLOY network)",
        f"export:     {r['export']}",
        f"report:     {r['report']}",
        f"worst layers (relative output error): {worst}",
    ])
