"""Checkpoints that cannot silently corrupt a network (issue 9, items 4 and 5).

A flipped byte in the stored data, a description tampered with (other bits, another
algorithm), a file that is empty, truncated, random or whose description is not a JSON
object: each is a CheckpointMismatchError naming the file and what is wrong, before any
parameter changes. A save killed with SIGKILL (a real one, in a subprocess) loses nothing and
its temporary files are removed by the next save to that path, while the files of a save
still running in another process are left alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import CheckpointMismatchError, PTQConfig
from gscore.errors import CheckpointNotFoundError
from gscore.io import DESCRIPTION_KEY, load_checkpoint, read_description, save_checkpoint
from gscore.io.atomic import MARK
from gscore.io.integrity import text_crc32
from gscore.testing.fuzz import FuzzMLP
from gscore.testing.reliability import network_state

ms.runtime.launch_blocking()

RTN = gscore.get("rtn")


def quantized() -> tuple[FuzzMLP, object]:
    algo = RTN(PTQConfig())
    net = FuzzMLP((16, 32, 8), seed=5)
    return algo.convert(algo.apply(net)), algo


def deploy_net() -> FuzzMLP:
    algo = RTN(PTQConfig(mode="deploy"))
    return algo.convert(algo.apply(FuzzMLP((16, 32, 8), seed=9)))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    net, algo = quantized()
    return save_checkpoint(net, tmp_path / "rtn.ckpt", description=algo.describe(net))


def rewritten(path: Path, change_record) -> Path:
    """A copy of ``path`` whose record (the description and its CRC) was changed by ``change_record``."""
    contents = ms.load_checkpoint(str(path))
    record = json.loads(contents.pop(DESCRIPTION_KEY))
    change_record(record)
    out = path.with_name("tampered.ckpt")
    ms.save_checkpoint([{"name": k, "data": v} for k, v in contents.items()], str(out), append_dict={DESCRIPTION_KEY: json.dumps(record)})
    return out


def tampered_description(change):
    """A deliberate edit: the description changes and its CRC is recomputed to match."""

    def change_record(record):
        change(record["description"])
        record["description_crc32"] = text_crc32(json.dumps(record["description"]))

    return change_record


def test_a_flipped_byte_in_a_stored_scale_is_found_and_named(saved):
    net, _ = quantized()
    scale = {p.name: p for p in net.get_parameters()}["body.2._weight_quantizer.scale"].asnumpy()
    data = bytearray(saved.read_bytes())
    at = data.find(scale.tobytes())
    assert at > 0 and data.find(scale.tobytes(), at + 1) == -1
    data[at + 5] ^= 0x01
    flipped = saved.with_name("flipped.ckpt")
    flipped.write_bytes(bytes(data))
    ms.load_checkpoint(str(flipped))  # MindSpore itself reads it without complaint
    target = deploy_net()
    state = network_state(target)
    with pytest.raises(CheckpointMismatchError, match=r"flipped.ckpt' is corrupted: .*body\.2\._weight_quantizer\.scale \(crc32 [0-9a-f]{8} in the file, [0-9a-f]{8} when saved\)"):
        load_checkpoint(flipped, target)
    assert network_state(target) == state


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["layers"]["body.0"].update(bits=4), r"layers\['body.0'\].bits: the file says 4, the network has 8"),
        (lambda d: d.update(algorithm="SlbQuantAwareTraining"), r"algorithm: the file says 'SlbQuantAwareTraining', the network was built by 'RoundToNearest'"),
        (lambda d: d["layers"]["body.2"].update(symmetric=False), r"layers\['body.2'\].symmetric: the file says False, the network has True"),
        (lambda d: d["layers"]["body.2"].update(granularity="per_group", group_size=64), r"layers\['body.2'\].granularity: the file says 'per_group'.*layers\['body.2'\].group_size: the file says 64, the network has None"),
        (lambda d: d["layers"].pop("body.0"), r"layers\['body.0'\]: quantized in the network, not described in the file"),
        (lambda d: d.update(layers=[]), r"layers: the file describes its layers as a list"),
    ],
)
def test_a_description_that_contradicts_the_network_is_refused_naming_the_field(saved, change, message):
    target = deploy_net()
    state = network_state(target)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_checkpoint(rewritten(saved, tampered_description(change)), target)
    assert network_state(target) == state


def test_a_description_changed_without_its_checksum_is_corruption(saved):
    def change_record(record):
        record["description"]["layers"]["body.0"]["bits"] = 4

    with pytest.raises(CheckpointMismatchError, match="its description does not match the checksum saved with it"):
        read_description(rewritten(saved, change_record))


def test_the_same_check_runs_through_convert_with_ckpt_path(saved):
    algo = RTN(PTQConfig(mode="deploy"))
    net = algo.apply(FuzzMLP((16, 32, 8), seed=9))
    with pytest.raises(CheckpointMismatchError, match="the file says 'SlbQuantAwareTraining'"):
        algo.convert(net, ckpt_path=rewritten(saved, tampered_description(lambda d: d.update(algorithm="SlbQuantAwareTraining"))))


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am not a checkpoint\n", "random", "truncated", "tail cut"],
)
def test_an_unreadable_file_names_itself(saved, content):
    data = saved.read_bytes()
    blob = {"random": np.random.default_rng(0).bytes(4096), "truncated": data[: len(data) // 2], "tail cut": data[:-7]}.get(content, content)
    bad = saved.with_name("bad.ckpt")
    bad.write_bytes(blob)
    target = deploy_net()
    state = network_state(target)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint '.*bad\.ckpt' (cannot be read|is corrupted)"):
        load_checkpoint(bad, target)
    with pytest.raises(CheckpointMismatchError, match=r"bad\.ckpt"):
        read_description(bad)
    assert network_state(target) == state


@pytest.mark.parametrize(
    "raw, message",
    [("not json {", "its description record is not valid JSON"), ("[1, 2]", "is a list, not a JSON object"), ("null", "not a JSON object"), ('"text"', "is a str, not a JSON object")],
)
def test_a_description_record_that_is_not_a_json_object_names_the_file(tmp_path, raw, message):
    path = tmp_path / "odd.ckpt"
    ms.save_checkpoint(FuzzMLP((4, 2)), str(path), append_dict={DESCRIPTION_KEY: raw})
    with pytest.raises(CheckpointMismatchError, match=rf"odd\.ckpt': {message}" if "valid JSON" in message else message):
        read_description(path)
    with pytest.raises(CheckpointMismatchError, match=r"odd\.ckpt"):
        load_checkpoint(path, FuzzMLP((4, 2)))


def test_a_missing_file_is_a_checkpoint_not_found_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.ckpt", FuzzMLP((4, 2)))
    with pytest.raises(FileNotFoundError):
        read_description(tmp_path / "nothing.ckpt")


def test_plain_mindspore_files_and_version_1_records_still_load(tmp_path, saved):
    net = FuzzMLP((4, 2), seed=1)
    ms.save_checkpoint(net, str(tmp_path / "plain.ckpt"))
    assert load_checkpoint(tmp_path / "plain.ckpt", FuzzMLP((4, 2))) is None
    contents = ms.load_checkpoint(str(saved))
    record = json.loads(contents.pop(DESCRIPTION_KEY))
    old = {"format": "gscore-quant", "version": 1, **record["description"]}
    ms.save_checkpoint([{"name": k, "data": v} for k, v in contents.items()], str(tmp_path / "v1.ckpt"), append_dict={DESCRIPTION_KEY: json.dumps(old)})
    assert load_checkpoint(tmp_path / "v1.ckpt", deploy_net())["layers"]["body.0"]["bits"] == 8


# ---------------------------------------------------------------------- killed and concurrent saves

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from mindspore import Tensor, nn
    from mindspore.train import serialization
    from gscore.io import save_checkpoint

    path, mode, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
    net = nn.Dense(256, 256, weight_init=Tensor(np.full((256, 256), value, np.float32)))

    def hang():
        print("HUNG", flush=True)
        if mode == "live":
            sys.stdin.readline()
        else:
            time.sleep(600)

    if mode == "loop":  # save over and over until killed
        print("READY", flush=True)
        while True:
            save_checkpoint(net, path)
    elif mode == "mid-write":  # stop inside MindSpore's writer, after the first tensor is on disk
        for attr in ("_write_parameter_data", "_write_parameter_bytes_data"):
            real = getattr(serialization, attr)
            def stalled(name, value, f, *args, _real=real, **kwargs):
                result = _real(name, value, f, *args, **kwargs)
                f.flush()
                hang()
                return result
            setattr(serialization, attr, stalled)
    else:  # "before-rename", "live": stop with the temporary file complete, just before it replaces the target
        real_replace = os.replace
        def stalled_replace(src, dst):
            if str(dst) == path:
                hang()
            return real_replace(src, dst)
        os.replace = stalled_replace
    save_checkpoint(net, path)
    print("DONE", flush=True)
    """
)


def _start(path: Path, mode: str, value: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode, str(value)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _wait_for(child: subprocess.Popen, word: str) -> None:
    line = child.stdout.readline().strip()
    assert line == word, f"child said {line!r}, expected {word!r}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if MARK in p.name)


def _weight_value(path: Path) -> float:
    net = nn.Dense(256, 256)
    load_checkpoint(path, net)
    return float(net.weight.asnumpy()[0, 0])


def test_killed_saves_lose_nothing_their_leftovers_go_and_a_live_save_is_left_alone(tmp_path):
    target = tmp_path / "model.ckpt"
    save_checkpoint(nn.Dense(256, 256, weight_init=Tensor(np.full((256, 256), 1.0, np.float32))), target)
    children = {mode: _start(target, mode, value) for mode, value in (("mid-write", 2.0), ("before-rename", 3.0), ("live", 4.0))}
    for child in children.values():
        _wait_for(child, "HUNG")
    for mode in ("mid-write", "before-rename"):
        children[mode].send_signal(signal.SIGKILL)
        children[mode].wait()
    assert _weight_value(target) == 1.0  # the old file survived both kills, checksums intact
    stale = _leftovers(tmp_path)
    assert any(n.endswith(".tmp") for n in stale) and any(n.endswith(".ckpt") for n in stale)  # the kills left files behind
    live_files = [n for n in stale if f".{children['live'].pid}-" in n]
    assert live_files

    save_checkpoint(nn.Dense(256, 256, weight_init=Tensor(np.full((256, 256), 5.0, np.float32))), target)
    assert _weight_value(target) == 5.0
    assert _leftovers(tmp_path) == live_files  # the dead saves' files are gone, the live one's kept

    children["live"].stdin.write("go\n")
    children["live"].stdin.flush()
    _wait_for(children["live"], "DONE")
    children["live"].wait()
    assert _weight_value(target) == 4.0 and _leftovers(tmp_path) == []


def test_cleanup_keeps_files_whose_lock_is_held_and_removes_unlocked_ones(tmp_path):
    target = tmp_path / "m.ckpt"
    dead = [tmp_path / f".m.ckpt.123-aaaaaaaaaaaa.{MARK}.{kind}" for kind in ("lock", "ckpt", "tmp")]
    orphan = tmp_path / f".m.ckpt.124-bbbbbbbbbbbb.{MARK}.tmp"
    alive = [tmp_path / f".m.ckpt.125-cccccccccccc.{MARK}.{kind}" for kind in ("lock", "ckpt")]
    foreign = [tmp_path / ".m.ckpt.notours.ckpt", tmp_path / f".other.ckpt.126-dddddddddddd.{MARK}.tmp"]
    for path in dead + [orphan] + alive + foreign:
        path.write_bytes(b"x")
    holder = os.open(alive[0], os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        save_checkpoint(FuzzMLP((4, 2)), target)
        remaining = sorted(p.name for p in tmp_path.iterdir())
        assert remaining == sorted(["m.ckpt"] + [p.name for p in alive + foreign])
    finally:
        os.close(holder)


def test_a_staged_lock_of_a_dead_writer_goes_and_one_of_a_live_pid_stays(tmp_path):
    """A writer killed between creating its lock file (``.lock.new``) and renaming it leaves it
    behind; the pid in its token tells whether that writer can still be running."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f".m.ckpt.{child.pid}-aaaaaaaaaaaa.{MARK}.lock.new"
    live = tmp_path / f".m.ckpt.{os.getpid()}-bbbbbbbbbbbb.{MARK}.lock.new"
    for path in (dead, live):
        path.write_bytes(b"")
    save_checkpoint(FuzzMLP((4, 2)), tmp_path / "m.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.ckpt", live.name])


@pytest.mark.slow
def test_many_kills_at_random_moments_never_lose_the_file(tmp_path):
    target = tmp_path / "model.ckpt"
    save_checkpoint(nn.Dense(256, 256, weight_init=Tensor(np.full((256, 256), 1.0, np.float32))), target)
    rng = np.random.default_rng(0)
    for kill in range(6):
        child = _start(target, "loop", 10.0 + kill)
        _wait_for(child, "READY")
        time.sleep(float(rng.uniform(0.2, 1.5)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert _weight_value(target) in {1.0} | {10.0 + k for k in range(kill + 1)}
    save_checkpoint(nn.Dense(256, 256), target)
    assert _leftovers(tmp_path) == []
