"""The main jobs, shortened: RTN on a real MNIST classifier, PTQ on SmolLM2; each deploys from its checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "rtn_mnist.py"


@pytest.mark.slow
def test_main_job_reports_a_deployed_int8_classifier(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--epochs", "2", "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| RTN A16W8, deployed from checkpoint |" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["float_top1"] > 0.8
    assert abs(report["rtn_top1"] - report["float_top1"]) <= 0.01
    assert report["prediction_agreement"] >= 0.98
    assert report["deployed_equals_quantized"] is True
    assert report["rtn_ckpt_bytes"] < 0.3 * report["float_ckpt_bytes"]
    assert report["quantized_layers"] == ["body.0", "body.2", "head"]


@pytest.mark.slow
def test_main_job_quantizes_smollm2_and_deploys_it_from_the_checkpoint(tmp_path):
    script = SCRIPT.with_name("ptq_smollm2.py")
    args = ["--eval", "1", "--calib", "1", "--tokens", "64", "--out", str(tmp_path)]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| a8w8-rotation, deployed from smollm2-a8w8-rotation.ckpt" in result.stdout  # the default preset
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quant_ppl"] < 1.1 * report["fp32_ppl"]
    assert report["quant_text"].startswith(" Paris")
    assert report["checkpoint_bytes"] < 0.5 * 513 * 2**20
