"""Recipes: the shipped files are the PTQ presets the bench measures, and a resolved recipe reads back unchanged."""

from __future__ import annotations

import pytest
import yaml

from gscore import PTQConfig
from gscore.errors import RecipeError
from gscore.recipe import build_algorithm, load_recipe, parse_recipe, shipped_recipes
from gscore_ptq.presets import PRESETS


def test_there_is_a_shipped_recipe_for_every_preset_the_bench_measures():
    assert set(shipped_recipes()) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_shipped_recipe_is_its_preset(name):
    stage = load_recipe(name).stages[0]
    expected = {k: v for k, v in PTQConfig(**PRESETS[name]).to_dict().items() if k not in ("type", "version", "mode")}
    assert stage.algorithm == "ptq" and dict(stage.config) == expected


def test_the_resolved_recipe_reads_back_unchanged(tmp_path):
    recipe = load_recipe("a16w4-g128-gptq")
    path = tmp_path / "resolved.yaml"
    path.write_text(recipe.to_yaml())
    again = load_recipe(path)
    assert again.to_dict() == recipe.to_dict()


def test_policies_reach_the_algorithm():
    data = {
        "version": 1,
        "stages": [{"algorithm": "PTQ", "config": {"act_quant_dtype": "int8"}, "policies": {r"mlp\.down_proj$": {"weight_quant_dtype": "int8"}}}],
    }
    recipe = parse_recipe(data)
    assert recipe.stages[0].algorithm == "ptq"  # aliases resolve to the registered name
    algo = build_algorithm(recipe.stages[0], "deploy")
    assert algo.config.mode.value == "deploy"
    pattern, policy = algo.policies.rules[0]
    assert pattern.pattern == r"mlp\.down_proj$" and policy.act is None


def test_mode_is_not_a_recipe_field():
    with pytest.raises(RecipeError, match="'mode' is not a recipe field"):
        parse_recipe({"version": 1, "stages": [{"algorithm": "ptq", "config": {"mode": "deploy"}}]})


def test_the_recipe_files_are_plain_yaml():
    for path in shipped_recipes().values():
        data = yaml.safe_load(path.read_text())
        assert data["version"] == 1 and data["name"] == path.stem and data["description"]
