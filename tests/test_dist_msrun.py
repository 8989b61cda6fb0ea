"""Data-parallel jobs on 2 msrun workers on this host, against one process on the same data.

Tolerances (measured, mindspore 2.9.0 on CPU):

* PTQ calibration with ``windows_per_forward=1`` (each forward runs one window, in the
  one-process run too): the checkpoints are bitwise identical, for the default preset (static
  A8W8, rotation, float BOS prefix), for ``a8w4-gptq`` (GPTQ with act order), for static A8W8 +
  SmoothQuant with a searched strength and static int8 KV cache, and for int4 AWQ + clipping +
  GPTQ. The
  only sums whose order differs, the float64 ``XᵀX`` and ``|x|`` sums, are compensated
  (:mod:`gscore.quant.stats`). Without it (all windows in one forward) a worker's activations
  differ from one process's in the last bit (MindSpore's matmul rounds a row differently with
  the number of rows in the call) and quantization amplifies that: ``bench/scale.py`` counts it.
* Streaming calibration: the same, on a synthetic folder.
* QAT (3 Adam steps on LeNet5 and MNIST, global batch 32; op by op, and SimQAT with compiled
  steps): activation EMA ranges, SLB temperatures and step counters are bitwise equal; weights
  within 1e-4 of each tensor's largest magnitude (measured: 7e-6 SimQAT, 1e-7 SLB), from
  gradients summed in another order.

Every job runs through :func:`gscore.dist.launch.launch`, which stops the job and kills its
processes when it fails or times out; the last test checks that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import psutil
import pytest

from gscore import cli
from gscore.dist.launch import launch
from gscore.errors import LaunchError
from gscore.models.llama import LlamaConfig
from gscore.testing.llama_folders import write_random_llama_folder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "tests" / "jobs"
TIMEOUT = 1800


def one_process(script: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output[-3000:]


def checkpoint(path: Path) -> dict[str, np.ndarray]:
    contents = ms.load_checkpoint(str(path))
    description = contents.pop("gscore_quant_description")
    return {"description": description, **{name: value.asnumpy() for name, value in contents.items()}}


def assert_same_checkpoint(one: Path, two: Path) -> None:
    a, b = checkpoint(one), checkpoint(two)
    assert set(a) == set(b)
    assert a.pop("description") == b.pop("description")
    for name, value in a.items():
        np.testing.assert_array_equal(b[name], value, err_msg=name)


def test_ptq_on_two_workers_writes_the_checkpoint_one_process_writes(tmp_path):
    configs = {
        "a8w8-smooth-search-kv": {"act_quant_dtype": "int8", "outliers_suppression": "smooth", "kvcache_quant_dtype": "int8", "algo_args": {"alpha": [0.3, 0.5, 0.7]}},
        "w4-awq-clip-gptq": {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "outliers_suppression": "awq",
                             "precision_recovery": "gptq", "weight_clip": True, "algo_args": {"desc_act": True, "static_groups": True, "smooth_alpha": [0.0, 0.25, 0.5]}},
    }
    presets = ["a8w8-rotation", "a8w4-gptq"]  # the default (rotation, float BOS prefix) and GPTQ with act order on dynamic A8
    common = ["--layers", "2", "--windows", "4", "--tokens", "64", "--windows-per-forward", "1", "--presets", *presets, "--configs", json.dumps(configs)]
    script = ROOT / "examples" / "ptq_data_parallel.py"
    alone = one_process(script, "--out", str(tmp_path / "one"), *common)
    launch([str(script), "--out", str(tmp_path / "two"), *common], 2, log_dir=tmp_path / "logs", timeout=TIMEOUT)
    finished(alone)
    assert json.loads((tmp_path / "two" / "report.json").read_text())["workers"] == 2
    for name in [*presets, *configs]:
        assert_same_checkpoint(tmp_path / "one" / f"{name}.ckpt", tmp_path / "two" / f"{name}.ckpt")


def test_streaming_on_two_workers_writes_the_files_one_process_writes(tmp_path):
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4, num_kv_heads=2, max_positions=64)
    model = write_random_llama_folder(tmp_path / "model", config, seed=5)
    fields = {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 64, "outliers_suppression": "awq",
              "precision_recovery": "gptq", "act_quant_dtype": "int8", "act_quant_granularity": "per_token"}
    common = ["--random-windows", "--windows", "4", "--tokens", "24", "--windows-per-forward", "1", "--config", json.dumps(fields)]
    script = ROOT / "examples" / "ptq_streaming.py"
    alone = one_process(script, str(model), str(tmp_path / "one"), *common)
    typed = ["launch", "--workers", "2", "--log-dir", str(tmp_path / "logs"), "--timeout", str(TIMEOUT), str(script), str(model), str(tmp_path / "two"), *common]
    assert cli.main(typed) == 0  # as a user types it: gscore launch --workers 2 ...
    finished(alone)
    one, two = (json.loads((tmp_path / side / "manifest.json").read_text()) for side in ("one", "two"))
    assert two["complete"] and two["job"]["workers"] == 2 and one["job"]["workers"] == 1
    assert [(b["name"], b["digest"]) for b in two["blocks"]] == [(b["name"], b["digest"]) for b in one["blocks"]]
    assert two["rest"] == one["rest"] and two["description"] == one["description"]


@pytest.mark.parametrize("compiled", [False, True], ids=["op-by-op", "compiled"])
def test_qat_on_two_workers_equals_one_process_on_the_global_batch(tmp_path, compiled):
    """Op by op (SimQAT and SLB), and with compiled steps (SimQAT: the gradient mean and the
    observers' global ranges are collectives inside the graph)."""
    script = JOBS / "qat_job.py"
    algorithms = ["simqat"] if compiled else ["simqat", "slb"]
    flags = ["--compiled"] if compiled else []
    alone = one_process(script, str(tmp_path / "one"), *algorithms, *flags)
    launch([str(script), str(tmp_path / "two"), *algorithms, *flags], 2, log_dir=tmp_path / "logs", timeout=TIMEOUT)
    finished(alone)
    for algorithm in algorithms:
        one, two = np.load(tmp_path / "one" / f"{algorithm}.npz"), np.load(tmp_path / "two" / f"{algorithm}.npz")
        assert set(one.files) == set(two.files)
        for name in one.files:
            exact = name.endswith(("minimum", "maximum", "temperature", "step")) or one[name].dtype.kind != "f"
            if exact:
                np.testing.assert_array_equal(two[name], one[name], err_msg=f"{algorithm} {name}")
            else:
                scale = max(float(np.abs(one[name]).max()), 1e-30)
                np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-4 * scale, err_msg=f"{algorithm} {name}")


def _job_processes(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.mark.parametrize(("mode", "reported"), [("raise", "rank 1 failed on purpose"), ("hang", "did not finish in 20 s"), ("disagree", "workers disagree on a result")])
def test_a_failed_or_stuck_job_is_reported_and_leaves_no_process(tmp_path, mode, reported):
    script = tmp_path / f"fail_{mode}.py"  # a unique path to find the job's processes by
    script.write_text((JOBS / "fail_job.py").read_text())
    with pytest.raises(LaunchError, match=reported):
        launch([str(script), mode], 2, log_dir=tmp_path / "logs", timeout=20 if mode == "hang" else None)
    assert _job_processes(str(script)) == []
