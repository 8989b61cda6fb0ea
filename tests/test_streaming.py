"""Streaming calibration of a Llama folder, one layer in memory: same checkpoint as in memory, resumable, flat memory.

Synthetic folders (random weights, :mod:`gscore.testing.llama_folders`) give models of any
depth quickly. The real model is covered by the in-memory PTQ tests; what is tested here is
that the streamed computation is the in-memory one (bitwise), that a stopped run resumes to
the same files, that every file is checked, and (slow, in subprocesses) that peak memory does
not grow with depth and stays far below the model's float weights.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

import gscore
from gscore import PTQConfig
from gscore.calib.streaming import quantize_streaming
from gscore.errors import CheckpointMismatchError, ConfigError
from gscore.io.streamed import MANIFEST, load_streamed, read_streamed
from gscore.models.hf_folder import load_llama
from gscore.models.llama import LlamaConfig
from gscore.models.llama_helper import LlamaHelper
from gscore.models.llama_stream import LlamaFolderSource
from gscore.testing.llama_folders import float_block_bytes, random_windows, write_random_llama_folder

ms.runtime.launch_blocking()
PTQ = gscore.get("ptq")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4, num_kv_heads=2, max_positions=64, tie_word_embeddings=False)
CONFIGS = {
    "a8w8-smooth-search-kv": {"act_quant_dtype": "int8", "outliers_suppression": "smooth", "kvcache_quant_dtype": "int8", "algo_args": {"alpha": [0.3, 0.6]}},
    "w4-awq-clip-gptq": {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 64, "outliers_suppression": "awq",
                         "precision_recovery": "gptq", "weight_clip": True, "algo_args": {"smooth_alpha": [0.0, 0.5]}},
    "a16w8-no-data": {},
}


def quiet(fields: dict) -> PTQConfig:
    return PTQConfig(**{**fields, "algo_args": {"progress": False, **fields.get("algo_args", {})}})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_llama_folder(tmp_path_factory.mktemp("model") / "llama", SMALL, seed=3)


@pytest.fixture(scope="module")
def windows():
    return random_windows(SMALL, 4, 24, seed=4)


def in_memory(folder: Path, fields: dict, windows: np.ndarray) -> dict[str, np.ndarray]:
    net, _ = load_llama(folder)
    algo = PTQ(quiet(fields))
    algo.apply(net, LlamaHelper(), datasets=windows)
    algo.convert(net)
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def streamed(output: Path) -> dict[str, np.ndarray]:
    return {name: value.asnumpy() for name, value in read_streamed(output).parameters().items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streaming_writes_the_checkpoint_in_memory_calibration_makes(folder, windows, tmp_path, name):
    expected = in_memory(folder, CONFIGS[name], windows)
    out = quantize_streaming(PTQ(quiet(CONFIGS[name])), LlamaFolderSource(folder), windows, tmp_path / "out", progress=False)
    got = streamed(out)
    assert set(got) == set(expected)
    for param, value in expected.items():
        np.testing.assert_array_equal(got[param], value, err_msg=param)
    description = read_streamed(out).description
    assert description["algorithm"] == "PTQ" and len(description["layers"]) == 7 * SMALL.num_layers


def test_a_deploy_network_loads_the_streamed_checkpoint(folder, windows, tmp_path):
    fields = CONFIGS["a8w8-smooth-search-kv"]
    out = quantize_streaming(PTQ(quiet(fields)), LlamaFolderSource(folder), windows, tmp_path / "out", progress=False)
    net, _ = load_llama(folder)
    deploy = PTQ(PTQConfig(mode="deploy", **{k: v for k, v in fields.items() if k != "algo_args"}))
    deploy.apply(net, LlamaHelper())
    description = load_streamed(out, net)
    assert description["config"]["act_quant_dtype"] == "int8"
    for param, value in streamed(out).items():
        np.testing.assert_array_equal(dict((p.name, p) for p in net.get_parameters())[param].asnumpy(), value)


class Stop(Exception):
    pass


def test_a_stopped_run_resumes_to_the_same_files_and_every_file_is_checked(folder, windows, tmp_path):
    fields = CONFIGS["w4-awq-clip-gptq"]
    whole = quantize_streaming(PTQ(quiet(fields)), LlamaFolderSource(folder), windows, tmp_path / "whole", progress=False)

    def stop_after_two(name: str) -> None:
        if name == "model.layers.1":
            raise Stop

    with pytest.raises(Stop):
        quantize_streaming(PTQ(quiet(fields)), LlamaFolderSource(folder), windows, tmp_path / "resumed", on_block=stop_after_two, progress=False)
    stopped = json.loads((tmp_path / "resumed" / MANIFEST).read_text())
    assert [b["name"] for b in stopped["blocks"]] == ["model.layers.0", "model.layers.1"] and not stopped["complete"]
    with pytest.raises(CheckpointMismatchError, match="stopped after 2 blocks"):
        read_streamed(tmp_path / "resumed")

    resumed_blocks = []
    quantize_streaming(PTQ(quiet(fields)), LlamaFolderSource(folder), windows, tmp_path / "resumed", on_block=resumed_blocks.append, progress=False)
    assert resumed_blocks == ["model.layers.2", "model.layers.3"]
    assert json.loads((tmp_path / "resumed" / MANIFEST).read_text())["blocks"] == json.loads((whole / MANIFEST).read_text())["blocks"]
    assert not (tmp_path / "resumed" / "state").exists()

    with pytest.raises(ConfigError, match=r"another job \(differing: config\)"):
        quantize_streaming(PTQ(quiet(CONFIGS["a16w8-no-data"])), LlamaFolderSource(folder), windows, tmp_path / "resumed", progress=False)
    with pytest.raises(ConfigError, match=r"differing: windows"):
        quantize_streaming(PTQ(quiet(fields)), LlamaFolderSource(folder), windows[:3], tmp_path / "resumed", progress=False)
    block = tmp_path / "resumed" / "model.layers.2.ckpt"
    block.write_bytes((whole / "model.layers.3.ckpt").read_bytes())
    with pytest.raises(CheckpointMismatchError, match=r"model.layers.2.ckpt does not hold what manifest.json recorded"):
        read_streamed(tmp_path / "resumed")


def test_whole_model_steps_and_foreign_folders_are_refused(folder, windows, tmp_path):
    whole_model = ({"act_quant_dtype": "int8", "outliers_suppression": "rotation"}, {"act_quant_dtype": "int8", "algo_args": {"prefix": [1]}}, {"algo_args": {"head": "int8"}}, {"algo_args": {"distill_epochs": 1}})
    for i, fields in enumerate(whole_model):
        with pytest.raises(ConfigError, match="cannot run a step over the whole model"):
            quantize_streaming(PTQ(quiet(fields)), LlamaFolderSource(folder), windows, tmp_path / f"x{i}", progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"holds \['notes.txt'\] and no manifest.json"):
        quantize_streaming(PTQ(quiet({})), LlamaFolderSource(folder), windows, tmp_path / "mine", progress=False)
    with pytest.raises(ConfigError, match="QUANTIZE mode"):
        quantize_streaming(PTQ(PTQConfig(mode="deploy")), LlamaFolderSource(folder), windows, tmp_path / "y", progress=False)


def _stream_in_subprocess(model: Path, out: Path, report: Path, extra: tuple[str, ...] = (), kill_after: str | None = None) -> subprocess.CompletedProcess:
    """examples/ptq_streaming.py in a fresh process (its own peak RSS); ``kill_after``: SIGKILL itself once that block is written."""
    argv = [str(model), str(out), "--random-windows", "--windows", "4", "--tokens", "32", "--report", str(report), *extra]
    hook = "None" if kill_after is None else f"lambda name: name == {kill_after!r} and os.kill(os.getpid(), signal.SIGKILL)"
    code = f"import os, signal, sys; sys.path.insert(0, {str(EXAMPLES)!r}); import ptq_streaming as ex; ex.run(ex.parse({argv!r}), on_block={hook})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, check=False)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_checkpoint(folder, tmp_path):
    first = _stream_in_subprocess(folder, tmp_path / "killed", tmp_path / "r1.json", kill_after="model.layers.1")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert len(json.loads((tmp_path / "killed" / MANIFEST).read_text())["blocks"]) == 2
    second = _stream_in_subprocess(folder, tmp_path / "killed", tmp_path / "r2.json")
    assert second.returncode == 0, second.stderr[-2000:]
    whole = _stream_in_subprocess(folder, tmp_path / "whole", tmp_path / "r3.json")
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert json.loads((tmp_path / "killed" / MANIFEST).read_text()) == json.loads((tmp_path / "whole" / MANIFEST).read_text())


@pytest.mark.slow
def test_peak_memory_is_flat_in_depth_and_far_below_the_float_weights(tmp_path):
    """Two folders of 63 MB float layers, 2 and 12 deep (0.13 GB and 0.76 GB of float weights):
    streaming peaks within one layer of each other, and the deep model's peak is far from
    holding its weights. In memory, the deep model costs its weights again (the baseline)."""
    config = LlamaConfig(vocab_size=256, hidden_size=1024, intermediate_size=4096, num_layers=2, num_heads=8, num_kv_heads=4, max_positions=64)
    block = float_block_bytes(config) / 2**20
    peaks = {}
    for depth in (2, 12):
        model = write_random_llama_folder(tmp_path / f"d{depth}", LlamaConfig(**{**config.__dict__, "num_layers": depth}))
        result = _stream_in_subprocess(model, tmp_path / f"out{depth}", tmp_path / f"s{depth}.json")
        assert result.returncode == 0, result.stderr[-2000:]
        peaks[depth] = json.loads((tmp_path / f"s{depth}.json").read_text())
    deep = peaks[12]
    weights = 12 * block
    assert abs(deep["peak_rss_mib"] - peaks[2]["peak_rss_mib"]) < block, (peaks, block)
    assert deep["peak_rss_mib"] - deep["peak_rss_mib_before"] < 0.8 * weights, (deep, weights)
    in_memory = _stream_in_subprocess(tmp_path / "d12", tmp_path / "inmem.ckpt", tmp_path / "m12.json", extra=("--in-memory",))
    assert in_memory.returncode == 0, in_memory.stderr[-2000:]
    held = json.loads((tmp_path / "m12.json").read_text())
    assert held["peak_rss_mib"] - deep["peak_rss_mib"] > 0.5 * weights, (held, deep)
