"""The seed tutorial's two code blocks, ported by changing only their import lines, run as-is."""

import re
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_seed_quantize_then_deploy(tmp_path):
    _run("seed_rtn_quantize.py", tmp_path)
    contents = ms.load_checkpoint(str(tmp_path / "simplenet_rtn.ckpt"))
    assert contents["linear.weight"].dtype == ms.int8 and contents["linear.weight"].shape == (6, 5)
    assert contents["linear._weight_quantizer.scale"].dtype == ms.float16
    assert set(contents) == {"linear.weight", "linear.bias", "linear._weight_quantizer.scale", "linear._weight_quantizer.zp_neg"}

    printed = _run("seed_rtn_deploy.py", tmp_path)
    matrix_lines = [line for line in printed.splitlines() if re.fullmatch(r"\s*\[*[-+\d.e ]+\]*", line)]
    # numpy wraps a row over two lines when the random weights print in scientific notation
    values = np.array([float(v) for line in matrix_lines for v in line.strip(" []").split()])
    assert values.size == 30, printed
    rows = values.reshape(5, 6)
    # input is all ones: each output row is bias + dequantised weight row sums
    q = contents["linear.weight"].asnumpy().astype(np.float32)
    scale = contents["linear._weight_quantizer.scale"].asnumpy().astype(np.float32)
    bias = contents["linear.bias"].asnumpy()
    expected = (q * scale[:, None]).sum(axis=1) + bias
    np.testing.assert_allclose(rows, np.tile(expected, (5, 1)), rtol=2e-3, atol=2e-3)
