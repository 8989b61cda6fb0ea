"""gscore.dist and data-parallel calibration, in one process (the msrun jobs are in test_dist_msrun.py).

Outside msrun every collective is the single-process identity and the communication stack is
not imported. What does not need two processes to be checked is checked here: which windows a
worker holds, the bit-exact transport of arrays as int32 words, the order-independence of the
compensated Hessian sums, the sample rows two simulated workers pick against one process's,
and that grouped forwards compute each window exactly as a forward of that window alone.
"""

from __future__ import annotations

import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mindspore import Tensor, nn

from gscore import dist
from gscore.calib.data_parallel import data_parallel
from gscore.calib.observers import Collect, InputObserver, RowOrigin
from gscore.dist.collectives import _as_words, _from_words
from gscore.dist.launch import msrun_command
from gscore.dist.training import gradient_mean, local_rows, refuse_batch_statistics
from gscore.errors import CalibrationDataError, ConfigError
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.fake_quant import batch_range
from gscore.quant import HessianAccumulator
from gscore.testing.tiny_llama import random_llama

ms.runtime.launch_blocking()


def test_one_process_is_rank_0_of_1_and_collectives_are_the_identity():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert not dist.active() and not dist.launched() and dist.rank() == 0 and dist.size() == 1 and dist.is_root()
    dist.init()
    for reduced in (dist.all_sum(x), dist.all_min(x), dist.all_max(x), dist.gather_rows(x)):
        np.testing.assert_array_equal(reduced, x)
    np.testing.assert_array_equal(dist.gather(x), x[None])
    dist.agree("anything", "ab" * 32)
    dist.barrier()


def test_one_process_never_joins_a_cluster():
    code = "import sys, gscore.dist; assert 'mindspore' not in sys.modules, 'gscore.dist imported mindspore'"
    subprocess.run([sys.executable, "-c", code], check=True)
    from mindspore.communication import GlobalComm

    dist.init()
    dist.barrier()
    assert not GlobalComm.INITED


@given(total=st.integers(1, 40), size=st.integers(1, 6), group=st.integers(1, 5))
def test_shards_cover_every_window_once_in_whole_groups(total, size, group):
    shards = [dist.Shard(r, size, total, group) for r in range(size)]
    held = np.concatenate([s.indices for s in shards])
    np.testing.assert_array_equal(np.sort(held), np.arange(total))
    for s in shards:
        assert (np.diff(s.indices) > 0).all()
        assert set(s.indices // group) == set(range(s.rank, -(-total // group), size))
        for count in range(total + 1):
            assert s.held_below(count) == int(np.count_nonzero(s.indices < count))
    assert shards[0].take(list(range(100, 100 + total))) == [100 + int(i) for i in shards[0].indices]


def test_too_few_windows_for_the_workers_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("gscore.dist.shard.size", lambda: 4)
    monkeypatch.setattr("gscore.dist.shard.rank", lambda: 0)
    with pytest.raises(CalibrationDataError, match=r"4 data-parallel workers need at least 4 groups of 2 calibration windows.*got 6"):
        dist.Shard.of(6, group=2)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "int8", "uint8", "bool", "float16"])
def test_arrays_travel_as_int32_words_bit_for_bit(dtype):
    """MindSpore's CPU AllGather silently narrows float64/int64 to 32 bits; words are exact."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5)) * 100).astype(dtype) if dtype.startswith("float") else rng.integers(-100, 100, (3, 5)).astype(dtype)
    if dtype == "float64":
        x[0, 0], x[0, 1] = 1.0 + 1e-12, -0.0
    words = np.stack([_as_words(x), _as_words(x)])
    assert words.dtype == np.int32
    back = _from_words(words, x)
    assert back.dtype == x.dtype and back.shape == (2, *x.shape)
    assert back[1].tobytes() == x.tobytes()


def test_compensated_sums_do_not_depend_on_how_windows_are_split():
    """One process adding 6 windows in turn, and 2 or 3 'workers' each adding their strided
    share then merging in rank order, give bitwise the same Hessian (a plain float64 sum does not)."""
    rng = np.random.default_rng(1)
    windows = [(rng.standard_normal((64, 24)) * rng.uniform(1e-3, 1e2, 24)).astype(np.float32) for _ in range(6)]
    windows[0][0] *= 1e3  # an attention-sink row
    whole = HessianAccumulator(24)
    for w in windows:
        whole.add(w)
    plain = sum(w.astype(np.float64).T @ w.astype(np.float64) for w in windows)
    for workers in (2, 3):
        shares = []
        for r in range(workers):
            share = HessianAccumulator(24)
            for w in windows[r::workers]:
                share.add(w)
            shares.append(HessianAccumulator.from_sums(share.total, share.count, share.residual))
        merged = shares[0]
        for share in shares[1:]:
            merged.merge(share)
        np.testing.assert_array_equal(merged.hessian(), whole.hessian())
        plain_split = sum(sum(w.astype(np.float64).T @ w.astype(np.float64) for w in windows[r::workers]) for r in range(workers))
        assert not np.array_equal(plain_split, plain)  # what the compensation is for


def _observed_sample(rows_by_window: np.ndarray, windows: np.ndarray, total: int, tokens: int, grouped: bool, group: int, sample_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    observer = InputObserver(nn.Dense(rows_by_window.shape[-1], 2), tokens_per_sequence=tokens, collect=Collect(sample_rows=sample_rows))
    observer.set_origin(RowOrigin(windows, total, grouped) if windows is not None else None)
    calls = [rows_by_window] if group is None else [rows_by_window[i : i + group] for i in range(0, len(rows_by_window), group)]
    for call in calls:
        observer(Tensor(call.reshape(-1, call.shape[-1])))
    return observer.sample, observer.sample_positions


@pytest.mark.parametrize("group", [None, 1, 2])
def test_two_workers_pick_the_sample_rows_one_process_picks(group):
    """Rows are placed by global position; gathered and sorted, they are one process's sample."""
    tokens, total, width = 16, 6, 3
    x = np.random.default_rng(2).standard_normal((total, tokens, width)).astype(np.float32)
    one, _ = _observed_sample(x, None, total, tokens, False, group, sample_rows=10)
    picked, positions = [], []
    for r in range(2):
        shard = dist.Shard(r, 2, total, group or 1)
        sample, where = _observed_sample(x[shard.indices], shard.indices, total, tokens, group is not None, group, sample_rows=10)
        picked.append(sample)
        positions.append(where)
    order = np.argsort(np.concatenate(positions), kind="stable")
    np.testing.assert_array_equal(np.concatenate(picked)[order], one)


def test_outside_msrun_the_helper_is_not_wrapped():
    helper = LlamaHelper()
    assert data_parallel(helper) is helper


def _tiny_llama():
    rng = np.random.default_rng(0)
    net = random_llama(rng, 0.1)
    return net, rng.integers(0, 64, (5, 16)).astype(np.int32)


def test_windows_per_forward_computes_each_window_as_a_forward_of_it_alone():
    net, windows = _tiny_llama()
    block = net.model.layers[0]
    grouped = LlamaHelper(windows_per_forward=2)
    out = grouped.run_block(block, grouped.block_inputs(net, windows)).hidden.asnumpy().reshape(5, 16, -1)
    for first in range(0, 5, 2):
        alone = LlamaHelper()
        part = alone.run_block(block, alone.block_inputs(net, windows[first : first + 2])).hidden.asnumpy()
        np.testing.assert_array_equal(out[first : first + 2].reshape(part.shape), part)
    whole = LlamaHelper()
    np.testing.assert_allclose(whole.run_block(block, whole.block_inputs(net, windows)).hidden.asnumpy().reshape(out.shape), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="windows_per_forward must be a positive int"):
        LlamaHelper(windows_per_forward=0)


def test_training_pieces_are_the_identity_in_one_process():
    batch = np.arange(7)
    np.testing.assert_array_equal(local_rows(batch), batch)
    grads = (Tensor(np.ones(2, np.float32)),)
    assert gradient_mean([])(grads) is grads
    refuse_batch_statistics(nn.SequentialCell([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)]))  # only refused under msrun
    x = Tensor(np.array([[-2.0, 3.5], [0.25, 1.0]], np.float32))
    lo, hi = batch_range(x)
    assert float(lo.asnumpy()) == -2.0 and float(hi.asnumpy()) == 3.5


def test_data_parallel_training_refuses_batchnorm_statistics(monkeypatch):
    monkeypatch.setattr("gscore.dist.training.active", lambda: True)
    with pytest.raises(ConfigError, match=r"BatchNorm statistics synchronised.*\['1'\]"):
        refuse_batch_statistics(nn.SequentialCell([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)]))
    monkeypatch.setattr("gscore.dist.training.size", lambda: 2)
    with pytest.raises(ConfigError, match="does not split evenly over 2"):
        local_rows(np.arange(5))


def test_msrun_command_lines():
    cmd = msrun_command(["job.py", "--x", "1"], 2, log_dir="logs", master_port=9000)
    assert cmd[1:] == ["--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1", "--master_port=9000", "--log_dir=logs",
                       "--join=True", "--cluster_time_out=300", "job.py", "--x", "1"]
    multi = msrun_command(["job.py"], 4, log_dir="logs", master_port=9000, local_workers=2, master_addr="10.0.0.1", node_rank=1)
    assert "--node_rank=1" in multi and "--local_worker_num=2" in multi and "--master_addr=10.0.0.1" in multi
    with pytest.raises(ConfigError, match="workers must be a positive int"):
        msrun_command(["job.py"], 0, log_dir="l", master_port=1)
    with pytest.raises(ConfigError, match="needs node_rank"):
        msrun_command(["job.py"], 4, log_dir="l", master_port=1, local_workers=2)
    with pytest.raises(ConfigError, match="path of a Python script"):
        msrun_command(["-m", "module"], 2, log_dir="l", master_port=1)
