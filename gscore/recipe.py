"""Recipes: what to do to a model, as a versioned YAML file of stages.

A recipe names one or more *stages*; each stage is an algorithm (a registered name, e.g.
``ptq``), its config (the fields of the algorithm's config class, without ``mode``) and
per-layer *policies* (regular expression on the layer name -> config fields for the layers it
matches; ``opname_blacklist`` keeps layers in float)::

    version: 1
    name: a8w8-rotation
    description: static A8W8 after a rotation of the residual stream
    stages:
      - algorithm: ptq
        config: {act_quant_dtype: int8, outliers_suppression: rotation, algo_args: {prefix: bos}}
        policies: {'mlp\\.down_proj$': {act_quant_dtype: null}}

Everything is checked when the recipe is read, before a model is loaded; an error names the
file, the stage and the field, and lists what is allowed. The recipes gscore ships live in
``gscore/recipes/`` (``recipes/`` at the top of the repository) and are found by name.

Only post-training algorithms (``gscore.PTQAlgorithm``) run from a recipe, one stage per
recipe today: PTQ already combines rotation or SmoothQuant, GPTQ and KV-cache int8 in one
pass, and a second quantizer on an already quantized network has no meaning yet. The list
form keeps recipe files valid when multi-stage runs arrive.

Reading this module imports no MindSpore; checking a stage's algorithm imports its plugin.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from gscore.errors import GscoreError, RecipeError

RECIPE_VERSION = 1
RECIPES_DIR = Path(__file__).with_name("recipes")
_TOP_KEYS = ("version", "name", "description", "stages")
_STAGE_KEYS = ("algorithm", "config", "policies")
_DROPPED_CONFIG_KEYS = ("type", "version", "mode")  # in a config's to_dict form, not a recipe's


@dataclass(frozen=True)
class Stage:
    """One algorithm run: its registered name, its config fields and per-layer policies
    (regex -> config fields)."""

    algorithm: str
    config: Mapping[str, Any]
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A checked recipe; :meth:`to_yaml` writes the resolved form (every config field explicit)."""

    name: str
    description: str
    stages: tuple[Stage, ...]
    source: str = "<recipe>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECIPE_VERSION,
            "name": self.name,
            "description": self.description,
            "stages": [{"algorithm": s.algorithm, "config": dict(s.config), "policies": dict(s.policies)} for s in self.stages],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of every recipe shipped in ``gscore/recipes``."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The file a ``--recipe`` argument means: an existing file, else a shipped recipe's name."""
    text = os.fspath(name_or_path)
    if not text:
        raise RecipeError(f"a recipe is a YAML file or the name of a shipped recipe ({', '.join(shipped_recipes())}), got ''")
    path = Path(text)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if text in shipped:
        return shipped[text]
    raise RecipeError(f"no recipe file {text!r} and no shipped recipe of that name; shipped recipes: {', '.join(shipped)}")


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """Read and check a recipe file (or a shipped recipe by name)."""
    path = recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {str(path)!r} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    return parse_recipe(data, source=str(path), default_name=path.stem)


def _keys(where: str, data: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where} must be a mapping with keys {', '.join(allowed)}, got {type(data).__name__}")
    unknown = [str(k) for k in data if k not in allowed]
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise RecipeError(f"{where}: missing key(s) {missing}")


def parse_recipe(data: Any, source: str = "<recipe>", default_name: str = "recipe") -> Recipe:
    """Check the parsed YAML of a recipe and return it with every config field resolved."""
    where = f"recipe {source!r}"
    _keys(where, data, _TOP_KEYS, ("version", "stages"))
    if data["version"] != RECIPE_VERSION:
        raise RecipeError(f"{where}: field 'version' is {data['version']!r}; this gscore reads recipe version {RECIPE_VERSION}")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise RecipeError(f"{where}: field {key!r} must be a string, got {type(data[key]).__name__}")
    stages = data["stages"]
    if not isinstance(stages, list) or not stages:
        raise RecipeError(f"{where}: field 'stages' must be a non-empty list of stages (algorithm, config, policies)")
    if len(stages) > 1:
        raise RecipeError(
            f"{where}: {len(stages)} stages given; this gscore runs one stage per recipe "
            "(ptq combines rotation or SmoothQuant, GPTQ and KV-cache int8 in one stage)"
        )
    checked = tuple(_stage(f"{where}: stages[{i}]", raw) for i, raw in enumerate(stages))
    return Recipe(name=data.get("name", default_name), description=data.get("description", ""), stages=checked, source=source)


def _stage(where: str, raw: Any) -> Stage:
    from gscore import plugins
    from gscore.algorithm import PTQAlgorithm

    _keys(where, raw, _STAGE_KEYS, ("algorithm",))
    name = raw["algorithm"]
    if not isinstance(name, str):
        raise RecipeError(f"{where}: field 'algorithm' must be an algorithm name (string), got {name!r}")
    try:
        info = plugins.host().get(name)
        cls = info.cls
    except GscoreError as exc:
        raise RecipeError(f"{where}: field 'algorithm': {exc}") from exc
    where = f"{where} ({info.name})"
    if not issubclass(cls, PTQAlgorithm):
        runnable = [i.name for i in plugins.host().registry.infos() if _is_post_training(i)]
        raise RecipeError(f"{where}: field 'algorithm': {info.name!r} needs training, which a recipe does not run; post-training algorithms: {', '.join(runnable)}")
    config = _config(f"{where}: field 'config'", cls, raw.get("config") or {})
    policies = raw.get("policies") or {}
    if not isinstance(policies, Mapping):
        raise RecipeError(f"{where}: field 'policies' must map layer-name regular expressions to config fields, got {type(policies).__name__}")
    if policies and "layer_policies" not in inspect.signature(cls.__init__).parameters:
        raise RecipeError(f"{where}: field 'policies': {info.name!r} takes no per-layer policies")
    resolved = {str(p): _config(f"{where}: field 'policies[{p!r}]'", cls, fields) for p, fields in policies.items()}
    stage = Stage(algorithm=info.name, config=config, policies=resolved)
    build_algorithm(stage, "quantize", where=where)  # the algorithm's own checks (combinations, algo_args, policy regexes)
    return stage


def _is_post_training(info: Any) -> bool:
    from gscore.algorithm import PTQAlgorithm

    try:
        return issubclass(info.cls, PTQAlgorithm)
    except GscoreError:
        return False


def _config(where: str, cls: type, fields: Any) -> dict[str, Any]:
    """``fields`` checked by the algorithm's config class, returned in full (every field explicit)."""
    if not isinstance(fields, Mapping):
        raise RecipeError(f"{where} must be a mapping of config fields, got {type(fields).__name__}")
    if "mode" in fields:
        raise RecipeError(f"{where}: 'mode' is not a recipe field (gscore quantize runs QUANTIZE, loading a checkpoint runs DEPLOY)")
    try:
        config = cls.config_cls.from_dict(fields)
    except GscoreError as exc:
        raise RecipeError(f"{where}: {exc}") from exc
    return {k: v for k, v in config.to_dict().items() if k not in _DROPPED_CONFIG_KEYS}


def build_algorithm(stage: Stage, mode: str, where: str = "recipe stage") -> Any:
    """The algorithm instance of ``stage`` in ``mode`` (``"quantize"`` or ``"deploy"``)."""
    from gscore import plugins

    cls = plugins.host().get(stage.algorithm).cls
    config_cls = cls.config_cls
    try:
        config = config_cls.from_dict({**stage.config, "mode": mode})
        kwargs = {}
        if stage.policies:
            kwargs["layer_policies"] = {p: config_cls.from_dict({**f, "mode": mode}) for p, f in stage.policies.items()}
        return cls(config, **kwargs)
    except GscoreError as exc:
        raise RecipeError(f"{where}: {exc}") from exc
