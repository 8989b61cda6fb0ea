"""A run folder: everything ``gscore quantize --out DIR`` writes, and how later verbs read it.

Layout (written at once: into a temporary folder renamed onto ``DIR`` when complete, so an
interrupted run leaves no half folder):

=====================  ===========================================================
``run.json``           model (name or absolute folder), recipe name, calibration
                       source/windows/tokens, seed, gscore version
``recipe.yaml``        the resolved recipe (every config field explicit); running it
                       again with the same options reproduces ``model.ckpt`` bit for bit
``model.ckpt``         the quantized network, a checked gscore checkpoint (description + CRCs)
``model.safetensors``  the same parameters with the description in its header (see README)
``report.json/.md``    per-layer analysis, ``plots/*.png``; ``eval.json`` after ``gscore eval``
=====================  ===========================================================
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gscore.errors import ConfigError, RunFolderError
from gscore.recipe import Recipe, load_recipe

RUN_FILE = "run.json"
RECIPE_FILE = "recipe.yaml"
CHECKPOINT_FILE = "model.ckpt"
EXPORT_FILE = "model.safetensors"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
EVAL_FILE = "eval.json"
PLOTS_DIR = "plots"
RUN_FORMAT, RUN_VERSION = "gscore-run", 1


@dataclass(frozen=True)
class Run:
    """A run folder as read back: its path, ``run.json`` fields and the resolved recipe."""

    path: Path
    model: str
    recipe: Recipe
    calibration: dict[str, Any]
    seed: int

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE


def run_record(model: str, recipe: Recipe, calibration: dict[str, Any], seed: int) -> dict[str, Any]:
    from gscore.version import __version__

    return {"format": RUN_FORMAT, "version": RUN_VERSION, "model": model, "recipe": recipe.name, "calibration": calibration, "seed": seed, "gscore": __version__}


def open_run(path: str | os.PathLike[str]) -> Run:
    """Read the run folder ``path`` (or the folder of a ``model.ckpt`` inside one)."""
    folder = Path(path)
    if folder.is_file() and folder.name == CHECKPOINT_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise RunFolderError(f"{str(path)!r} is not a run folder (what `gscore quantize --out DIR` writes)")
    for name in (RUN_FILE, RECIPE_FILE, CHECKPOINT_FILE):
        if not (folder / name).is_file():
            raise RunFolderError(f"run folder {str(folder)!r} lacks {name}; is it the --out folder of `gscore quantize`?")
    try:
        record = json.loads((folder / RUN_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{folder / RUN_FILE}: not readable JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT or record.get("version") != RUN_VERSION:
        raise RunFolderError(f"{folder / RUN_FILE}: not a {RUN_FORMAT} version {RUN_VERSION} record")
    try:
        return Run(folder, record["model"], load_recipe(folder / RECIPE_FILE), dict(record["calibration"]), int(record["seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFolderError(f"{folder / RUN_FILE}: field missing or invalid ({exc})") from exc


@contextlib.contextmanager
def new_run_folder(path: str | os.PathLike[str], force: bool) -> Iterator[Path]:
    """A temporary folder beside ``path``, moved onto ``path`` when the block succeeds.

    An existing ``path`` is an error unless ``force``; then it is replaced only after the new
    folder is complete (the old one is renamed aside and removed)."""
    target = Path(path)
    if target.exists() and not force:
        raise RunFolderError(f"{str(target)!r} already exists; choose another --out or pass --force to replace it")
    if target.exists() and not target.is_dir():
        raise RunFolderError(f"{str(target)!r} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the finished folder private
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.rename(target, old / target.name)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_ready(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def float_network(model: str) -> tuple[Any, Any]:
    """``(float LlamaForCausalLM, tokenizer)`` of a model name or folder."""
    from gscore.cli.sources import open_model

    folder = open_model(model)
    return folder.build(), folder.tokenizer()


def deploy_structure(run: Run, network: Any, tokenizer: Any) -> Any:
    """``network`` (float) rebuilt as the recipe's DEPLOY structure, with placeholders; returns the algorithm."""
    from gscore.models.llama_helper import LlamaHelper
    from gscore.recipe import build_algorithm

    algo = build_algorithm(run.recipe.stages[0], "deploy", where=f"recipe {run.recipe.name!r}")
    algo.convert(algo.apply(network, LlamaHelper(tokenizer)))
    return algo


def deployed_network(run: Run) -> tuple[Any, Any]:
    """``(network, tokenizer)``: the run's model in DEPLOY structure with ``model.ckpt`` loaded strictly."""
    from gscore.io import load_checkpoint

    network, tokenizer = float_network(run.model)
    deploy_structure(run, network, tokenizer)
    load_checkpoint(run.checkpoint, network)
    return network, tokenizer


def require(condition: bool, message: str) -> None:
    """Raise a GscoreError with ``message`` unless ``condition`` (an argument check)."""
    if not condition:
        raise ConfigError(message)
