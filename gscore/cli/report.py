"""``gscore report RUN``: per-layer error, activation ranges and histograms of a run, as
``report.json``, ``report.md`` and ``plots/*.png`` in the run folder (``quantize`` writes it too)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gscore.cli import runs

PLOTS = {
    "Per-layer output error": "layer_error.png",
    "Activation ranges per layer": "activation_ranges.png",
    "Outlier channels and tokens of the worst layers": "outliers.png",
    "Weight and activation histograms of the worst layers": "histograms.png",
}
WORST = 10
PLOTTED = 3


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("report", parents=[common], help="per-layer error analysis with plots (report.md) of a quantize run")
    parser.add_argument("run_dir", metavar="RUN", help="the --out folder of gscore quantize")
    parser.set_defaults(run=run, render=render)


def held_windows(run: runs.Run, tokenizer: Any) -> np.ndarray:
    """The run's held-out calibration windows: those after the ones that calibrated."""
    from gscore.cli.sources import windows

    c = run.calibration
    all_windows = windows(tokenizer, c["source"], "calibration", c["tokens"], c["windows"] + c["held_windows"])
    return all_windows[c["windows"]:]


def reference_network(run: runs.Run) -> Any:
    """The float model in the quantized network's basis (rotation, float prefix) when the algorithm changes it."""
    from gscore.models.llama_helper import LlamaHelper
    from gscore.recipe import build_algorithm

    network, tokenizer = runs.float_network(run.model)
    algo = build_algorithm(run.recipe.stages[0], "quantize")
    if hasattr(algo, "prepare_reference"):
        algo.prepare_reference(network, LlamaHelper(tokenizer))
    return network


def write_report(folder: Path, run: runs.Run, quantized: Any, tokenizer: Any, progress: bool) -> dict[str, Any]:
    """Compute the layer statistics of ``quantized`` (the run's network) and write the report files into ``folder``."""
    from gscore.io import read_description
    from gscore.report import layers, markdown, plots

    held = held_windows(run, tokenizer)
    stats = layers.layer_stats(quantized, reference_network(run), held, seed=run.seed, progress=progress)
    worst = layers.worst(stats, WORST)
    plot_dir = folder / runs.PLOTS_DIR
    plot_dir.mkdir(exist_ok=True)
    makers = [lambda p: plots.layer_error(stats, p), lambda p: plots.activation_ranges(stats, p),
              lambda p: plots.outliers(worst[:PLOTTED], p), lambda p: plots.histograms(worst[:PLOTTED], p)]
    for make, name in zip(makers, PLOTS.values()):
        make(plot_dir / name)
    description = read_description(folder / runs.CHECKPOINT_FILE) or {}
    eval_path = folder / runs.EVAL_FILE
    report = {
        "run": json.loads((folder / runs.RUN_FILE).read_text()),
        "recipe_description": run.recipe.description,
        "checkpoint": runs.CHECKPOINT_FILE,
        "checkpoint_bytes": os.path.getsize(folder / runs.CHECKPOINT_FILE),
        "held_windows": len(held),
        "layers": description.get("layers", {}),
        "layer_stats": [s.summary() for s in stats],
        "worst": [s.summary() for s in worst],
        "plots": {title: f"{runs.PLOTS_DIR}/{name}" for title, name in PLOTS.items()},
        "eval": json.loads(eval_path.read_text()) if eval_path.is_file() else None,
    }
    runs.write_json(folder / runs.REPORT_JSON, report)
    tmp = folder / f".{runs.REPORT_MD}.tmp"
    tmp.write_text(markdown.render(report))
    os.replace(tmp, folder / runs.REPORT_MD)
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_ = runs.open_run(args.run_dir)
    quantized, tokenizer = runs.deployed_network(run_)
    report = write_report(run_.path, run_, quantized, tokenizer, progress=not args.quiet)
    return summary(run_.path, report)


def summary(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "report": str(folder / runs.REPORT_MD),
        "plots": [str(folder / p) for p in report["plots"].values()],
        "worst": report["worst"],
    }


def render(result: dict[str, Any]) -> str:
    from gscore.report.plots import short_name

    worst = ", ".join(f"{short_name(w['layer'])} ({w['relative_error']:.3g})" for w in result["worst"][:5])
    return f"report: {result['report']}\nworst layers (relative output error): {worst}"
