"""Every verb of the ``gscore`` console script, run as a subprocess on a real network: SmolLM2's
embedding, tokenizer and first two decoder layers written as a Hugging Face-format folder
(see :mod:`gscore.testing.tiny_llama`), quantized once per module with the default recipe
(static A8W8 after rotation, with a float BOS prefix)."""

from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from cli_helpers import ok, ok_json, png_size
from gscore.testing.tiny_llama import write_truncated_smollm2

TOKENS = "64"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_truncated_smollm2(tmp_path_factory.mktemp("model") / "smollm2-2-layers", num_layers=2)


def quantize(model: Path, out: Path, recipe: str = "a8w8-rotation", *extra: str):
    return ok("quantize", str(model), "--recipe", recipe, "--out", str(out), "--calib", "2", "--tokens", TOKENS, "--report-windows", "1", *extra)


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "a8w8-rotation"
    return out, json.loads(quantize(tiny_model, out, "a8w8-rotation", "--json").stdout)


def test_quantize_writes_a_complete_run_folder(tiny_run, tiny_model):
    out, result = tiny_run
    assert result["recipe"] == "a8w8-rotation" and result["model"] == str(tiny_model.resolve())
    assert result["quantized_layers"] == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for name in ("model.ckpt", "model.safetensors", "recipe.yaml", "run.json", "report.json", "report.md"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert result["checkpoint_bytes"] == (out / "model.ckpt").stat().st_size


def test_report_holds_plots_that_open_and_the_ten_worst_layers(tiny_run):
    out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    assert len(report["plots"]) >= 3
    for relative in report["plots"].values():
        width, height = png_size(out / relative)
        assert width >= 600 and height >= 300 and (out / relative).stat().st_size > 5000
        assert f"]({relative})" in markdown
    table = markdown.split("## Ten worst layers")[1].split("## Plots")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`model.layers." in line]
    assert len(rows) == 10
    errors = [w["relative_error"] for w in report["worst"]]
    assert errors == sorted(errors, reverse=True) and 0 < errors[-1] <= errors[0] < 1


def _parameters(path: Path) -> dict[str, np.ndarray]:
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, "asnumpy")}


@pytest.mark.slow
def test_running_the_saved_recipe_reproduces_the_checkpoint_bit_for_bit(tiny_run, tiny_model, tmp_path):
    out, _ = tiny_run
    again = tmp_path / "again"
    assert quantize(tiny_model, again, str(out / "recipe.yaml"), "--quiet").stdout == ""
    first, second = _parameters(out / "model.ckpt"), _parameters(again / "model.ckpt")
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype and first[name].tobytes() == second[name].tobytes(), name
    assert (again / "recipe.yaml").read_text() == (out / "recipe.yaml").read_text()


def test_eval_compares_fp32_and_the_checkpoint_then_report_shows_it(tiny_run):
    out, _ = tiny_run
    result = ok_json("eval", str(out), "--windows", "2", "--tokens", TOKENS)
    assert result["windows"] == 2 and np.isfinite(result["delta_stderr"])
    assert 1 < result["fp32_ppl"] < result["quant_ppl"] * 1.05 and result["quant_ppl"] < 2 * result["fp32_ppl"]
    assert json.loads((out / "eval.json").read_text())["quant_ppl"] == result["quant_ppl"]
    text = ok("report", str(out)).stdout
    assert "report.md" in text
    assert "## Perplexity" in (out / "report.md").read_text()


def test_generate_continues_a_prompt_greedily(tiny_run):
    out, _ = tiny_run
    result = ok_json("generate", str(out), "--prompt", "The capital of France is", "--max-new-tokens", "3", "--compare")
    assert isinstance(result["completion"], str) and result["completion"]
    assert isinstance(result["float_completion"], str)


def test_inspect_tells_what_the_checkpoint_holds(tiny_run):
    out, _ = tiny_run
    result = ok_json("inspect", str(out))
    assert result["algorithm"] == "PTQ" and result["config"]["outliers_suppression"] == "rotation"
    assert len(result["layers"]) == 14 and all(layer["bits"] == 8 and layer["symmetric"] for layer in result["layers"].values())
    assert result["bytes_by_dtype"]["Int8"] > 0
    text = ok("inspect", str(out / "model.safetensors")).stdout
    assert "algorithm: PTQ" in text and "14 x int8 per_channel sym, input static" in text


def test_export_loads_into_a_deploy_network_with_the_same_outputs(tiny_run, tmp_path):
    from gscore.cli import runs
    from gscore.eval.perplexity import llama_forward
    from gscore.io.safetensors_io import load_safetensors, read_metadata

    out, _ = tiny_run
    exported = tmp_path / "exported.safetensors"
    assert ok_json("export", str(out), "--out", str(exported))["out"] == str(exported)
    metadata = read_metadata(exported)
    assert json.loads(metadata["description"])["algorithm"] == "PTQ" and "a8w8-rotation" in metadata["recipe"]

    run = runs.open_run(out)
    from_ckpt, tokenizer = runs.deployed_network(run)
    from_safetensors, _ = runs.float_network(run.model)
    runs.deploy_structure(run, from_safetensors, tokenizer)
    load_safetensors(exported, from_safetensors)
    ids = np.arange(100, 140, dtype=np.int32)
    np.testing.assert_array_equal(llama_forward(from_safetensors)(ids), llama_forward(from_ckpt)(ids))
    from safetensors.numpy import load_file

    written_by_quantize, written_by_export = load_file(out / "model.safetensors"), load_file(exported)
    assert written_by_quantize.keys() == written_by_export.keys()
    assert all(written_by_quantize[k].tobytes() == written_by_export[k].tobytes() for k in written_by_quantize)
    assert read_metadata(out / "model.safetensors") == metadata


@pytest.mark.slow
def test_smollm2_quantize_eval_generate(tmp_path):
    out = tmp_path / "run"
    result = ok_json("quantize", "smollm2-135m", "--recipe", "a8w8-dynamic", "--out", str(out), "--calib", "1", "--tokens", TOKENS, "--report-windows", "1")
    assert result["quantized_layers"] == 210
    evaluation = ok_json("eval", str(out), "--windows", "2", "--tokens", TOKENS)
    assert evaluation["quant_ppl"] < 1.1 * evaluation["fp32_ppl"]
    assert ok_json("generate", str(out), "--max-new-tokens", "4")["completion"].startswith(" Paris")
