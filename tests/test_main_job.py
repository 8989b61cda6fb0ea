"""The README's main job, shortened: real MNIST training, RTN, deploy from checkpoint, report."""

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
