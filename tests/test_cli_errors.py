"""The CLI's error contract: every error is one line ``gscore: <message>`` with exit status 2
and no traceback; a closed pipe ends it quietly. None of these load a model.

The many recipe cases call ``main`` in this process (one MindSpore import for all); the
contract itself is checked on the console script as a subprocess for each kind of error."""

from __future__ import annotations

import subprocess

import pytest

from cli_helpers import GSCORE, fails, ok, ok_json
from gscore.cli import main


def fails_here(capsys, *args: str) -> str:
    """``main(args)`` in this process must return 2 with one ``gscore: ...`` line on stderr."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gscore: "), err
    return lines[0]

BAD_RECIPES = {
    "dtype": ("version: 1\nstages:\n  - algorithm: ptq\n    config: {act_quant_dtype: int3}\n", ["stages[0] (ptq)", "act_quant_dtype", "int8"]),
    "unknown field": ("version: 1\nstages:\n  - algorithm: ptq\n    config: {act_dtype: int8}\n", ["stages[0] (ptq)", "act_dtype", "valid fields"]),
    "stage key": ("version: 1\nstages:\n  - algorithm: ptq\n    configs: {}\n", ["stages[0]", "configs", "allowed keys: algorithm, config, policies"]),
    "algorithm": ("version: 1\nstages:\n  - algorithm: ptqq\n", ["stages[0]", "'algorithm'", "ptq"]),
    "training algorithm": ("version: 1\nstages:\n  - algorithm: simqat\n", ["stages[0] (simqat)", "needs training", "ptq"]),
    "combination": ("version: 1\nstages:\n  - algorithm: ptq\n    config: {weight_quant_dtype: int4}\n", ["stages[0] (ptq)", "per_group"]),
    "policy": ("version: 1\nstages:\n  - algorithm: ptq\n    policies: {'down_proj$': {group_size: x}}\n", ["policies['down_proj$']", "group_size"]),
    "version": ("version: 7\nstages: []\n", ["'version'", "recipe version 1"]),
    "two stages": ("version: 1\nstages:\n  - algorithm: ptq\n  - algorithm: rtn\n", ["2 stages", "one stage"]),
    "yaml": ("version: 1\nstages: [\n", ["not valid YAML"]),
    "not a mapping": ("- 1\n- 2\n", ["must be a mapping"]),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_a_bad_recipe_exits_2_naming_the_stage_and_field(tmp_path, capsys, case):
    text, expected = BAD_RECIPES[case]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    message = fails_here(capsys, "quantize", str(tmp_path), "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    for part in expected:
        assert part in message, message
    assert not (tmp_path / "out").exists()


def test_a_bad_recipe_from_the_console_script(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_RECIPES["dtype"][0])
    message = fails("quantize", str(tmp_path), "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert "stages[0] (ptq)" in message and "act_quant_dtype" in message


def test_an_unknown_recipe_name_lists_the_shipped_ones(tmp_path, capsys):
    message = fails_here(capsys, "quantize", "--recipe", "a8w9", "--out", str(tmp_path / "out"))
    assert "a8w8-rotation" in message and "a16w4-g128" in message


def test_a_missing_model_folder_exits_2(tmp_path):
    message = fails("quantize", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out"))
    assert "no-such-model" in message and "smollm2-135m" in message


def test_a_folder_that_is_not_a_model_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    message = fails_here(capsys, "quantize", str(tmp_path / "model"), "--recipe", "a16w8", "--out", str(tmp_path / "out"))
    assert "config.json" in message


@pytest.mark.parametrize("verb", ["eval", "generate", "report", "inspect"])
def test_verbs_refuse_a_folder_that_is_not_a_run(tmp_path, capsys, verb):
    message = fails_here(capsys, verb, str(tmp_path))
    assert str(tmp_path) in message and "run folder" in message


def test_export_refuses_a_missing_run(tmp_path):
    message = fails("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.safetensors"))
    assert "not a run folder" in message


def test_inspect_of_a_file_that_is_not_a_checkpoint_exits_2(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert "junk.ckpt" in fails_here(capsys, "inspect", str(junk))


def test_usage_errors_follow_the_contract(tmp_path, capsys):
    assert "--out" in fails("quantize")
    assert "invalid choice" in fails_here(capsys, "frobnicate")
    assert "invalid choice" in fails_here(capsys, "quantize", "--device", "gpu", "--out", str(tmp_path))


def test_info_of_an_empty_name_is_a_clear_error():
    message = fails("info", "")
    assert "non-empty" in message and "ptq" in message


def test_list_into_a_closed_pipe_exits_quietly():
    process = subprocess.Popen([GSCORE, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before gscore writes, as with `gscore list | head -0`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0
    assert stderr == ""


def test_list_and_info_speak_json_and_can_be_quiet():
    listed = ok_json("list")
    assert "ptq" in {a["name"] for a in listed["algorithms"]}
    assert ok_json("info", "PTQ")["class"] == "gscore_ptq.algorithm.PTQ"
    assert ok("list", "--quiet").stdout == ""
