"""Building, caching and choosing the native kernels, and falling back without them."""

from __future__ import annotations

import multiprocessing
import subprocess
import os
import stat
import sys
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from gscore import kernels
from gscore.kernels import build
from gscore.kernels.ops import built_from, linear_group_plan, linear_group_primitive, primitive

FAKE_COMPILER = """#!{python}
# Stands in for g++: writes the -o file slowly, in pieces, so concurrent builds overlap.
import sys, time
args = sys.argv[1:]
if args == ["--version"]:
    print("fake-c++ 1.0")
    sys.exit(0)
out = args[args.index("-o") + 1]
with open(out, "wb") as f:
    for _ in range(20):
        f.write(b"x" * 4096)
        f.flush()
        time.sleep(0.01)
"""


@pytest.fixture
def fresh_choice(monkeypatch):
    """Forget this process's resolved level and warnings (they are cached per process)."""
    monkeypatch.setattr(kernels, "_resolved", {})
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setattr(kernels, "_override", None)


@pytest.fixture
def fake_compiler(tmp_path):
    path = tmp_path / "fake-c++"
    path.write_text(FAKE_COMPILER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _build_in_child(cache: str, cxx: str, queue) -> None:
    os.environ["GSCORE_CACHE"] = cache
    queue.put(str(build.library("cpp", cxx)))


def test_two_processes_building_at_once_both_get_the_complete_library(tmp_path, fake_compiler):
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    children = [ctx.Process(target=_build_in_child, args=(cache, fake_compiler, queue)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    paths = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(paths) == 1
    built = Path(paths.pop())
    assert built.stat().st_size == 20 * 4096
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary file left behind


def test_the_cache_key_follows_sources_compiler_and_mindspore(monkeypatch, tmp_path, fake_compiler):
    key = build.cache_key("cpp", fake_compiler)
    assert build.cache_key("cpp", fake_compiler) == key
    assert build.cache_key("avx2", fake_compiler) != key
    monkeypatch.setattr(build, "_mindspore_version", lambda: "0.0.0")
    assert build.cache_key("cpp", fake_compiler) != key
    monkeypatch.undo()
    source = tmp_path / "csrc"
    source.mkdir()
    for path in build.sources():
        (source / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(build, "SOURCE_DIR", source)
    assert build.cache_key("cpp", fake_compiler) == key
    (source / "entry.cc").write_text((source / "entry.cc").read_text() + "\n// changed\n")
    assert build.cache_key("cpp", fake_compiler) != key


def test_a_failed_compile_says_why_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("GSCORE_CACHE", str(tmp_path))
    with pytest.raises(build.KernelError, match="compiling the cpp kernels failed"):
        build.library("cpp", "/bin/false")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_portable_choice_warns_once_and_cells_use_mindspore_ops(fresh_choice, monkeypatch):
    from gscore.nn.quant_linear import native_kernel
    from gscore.nn.quantizers import WeightQuantizer

    monkeypatch.setenv(kernels.ENV, "portable")
    with pytest.warns(kernels.KernelFallbackWarning, match="GSCORE_KERNELS=portable") as record:
        wq = WeightQuantizer(np.ones(4, np.float32), np.zeros(4, np.float32), ms.float32, 0, -127, 127)  # asks for the level
        assert wq.fused is None
        assert kernels.level() == "portable"
        assert native_kernel(wq, None, True) is None
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.level() == "portable"  # no second warning


def test_without_a_compiler_auto_falls_back_with_one_warning(fresh_choice, monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv(kernels.ENV, raising=False)
    with pytest.warns(kernels.KernelFallbackWarning, match="no C\\+\\+ compiler"):
        assert kernels.level() == "portable"
    assert not kernels.enabled()


def test_a_level_this_cpu_lacks_or_an_unknown_choice_is_a_clear_error(fresh_choice, monkeypatch):
    monkeypatch.setenv(kernels.ENV, "sse9")
    with pytest.raises(kernels.KernelError, match="not a kernel choice; use one of: auto, amx, avx512vnni, avx2, cpp, portable"):
        kernels.level()
    missing = [lvl for lvl in build.LEVEL_FLAGS if lvl not in kernels.supported_levels()]
    if missing:
        monkeypatch.setenv(kernels.ENV, missing[0])
        with pytest.raises(kernels.KernelError, match="this CPU cannot run it"):
            kernels.level()


def test_forced_switches_for_a_block_and_restores(fresh_choice):
    with kernels.forced("cpp") as level:
        assert level == kernels.level() == "cpp"
        with pytest.warns(kernels.KernelFallbackWarning), kernels.forced("portable"):
            assert not kernels.enabled()
        assert kernels.level() == "cpp"
    assert kernels.level() == kernels.supported_levels()[0]


@pytest.mark.parametrize(
    "breakage, reason",
    [
        ("failing-compiler", "compiling the .* kernels failed"),
        ("garbage-library", "building the .* kernels failed"),
        ("unwritable-cache", "cannot build the .* kernels into"),
    ],
)
def test_a_broken_build_falls_back_with_one_warning(fresh_choice, monkeypatch, tmp_path, fake_compiler, breakage, reason):
    """A compiler that fails, one that writes a file that is no library, a cache that cannot be
    written: each is one KernelFallbackWarning naming the cause, then the portable path."""
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setenv("GSCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "/bin/false" if breakage == "failing-compiler" else fake_compiler)
    if breakage == "unwritable-cache":
        (tmp_path / "file").write_text("not a directory")
        monkeypatch.setenv("GSCORE_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(kernels.KernelFallbackWarning, match=reason) as record:
        assert kernels.level() == "portable"
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not kernels.enabled()


DEPLOY_WITHOUT_COMPILER = """
import warnings
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
import gscore
from gscore import PTQConfig

warnings.simplefilter("always")
ms.set_seed(0)
net = nn.SequentialCell([nn.Dense(16, 8), nn.ReLU(), nn.Dense(8, 4)])
rtn = gscore.get("rtn")(PTQConfig())
rtn.convert(rtn.apply(net))
print("kernel", net[0].kernel, "output", net(Tensor(np.ones((2, 16), np.float32))).shape)
"""


def test_a_machine_without_a_compiler_deploys_on_the_portable_path(tmp_path):
    """A fresh process with no C++ compiler: RTN deploys and runs; one warning says why."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "GSCORE_CACHE": str(tmp_path / "cache")}
    env.pop(kernels.ENV, None)
    result = subprocess.run([sys.executable, "-c", DEPLOY_WITHOUT_COMPILER], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kernel None output (2, 4)" in result.stdout
    assert result.stderr.count("KernelFallbackWarning") == 1
    assert "no C++ compiler found" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(len(kernels.supported_levels()) < 3, reason="needs two native levels on this CPU (the best one is made to fail)")
def test_auto_takes_the_next_level_when_the_best_does_not_build(fresh_choice, monkeypatch, tmp_path):
    """A compiler that does not know the best level's flags (an older g++ on an AMX CPU, say):
    auto builds the next level, with one warning naming the failure, instead of going portable."""
    best, following = kernels.supported_levels()[:2]
    wrapper = tmp_path / "picky-c++"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *-DGSK_LEVEL_{best.upper()}\\ *) echo "unrecognized option" >&2; exit 1;; esac\nexec g++ "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setenv("GSCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(wrapper))
    with pytest.warns(kernels.KernelFallbackWarning, match=f"run at level {following}: building the {best} kernels failed") as record:
        assert kernels.level() == following
    assert len(record) == 1


def test_built_from_gives_operators_of_another_library_inside_the_block_only(tmp_path):
    """bench/decode_fusion.py --baseline deploys one network on an older build of the kernels:
    operators made inside ``built_from`` call that library; outside, this tree's again."""
    level = kernels.level()
    other = tmp_path / "libother.so"
    other.write_bytes(build.library(level).read_bytes())
    plan = linear_group_plan("w8_linear", (False,), None, "add")
    ours, our_group = primitive("add"), linear_group_primitive(plan)
    with built_from(other):
        theirs, their_group = primitive("add"), linear_group_primitive(plan)
    assert str(other) in theirs.func and str(other) in their_group.func
    assert str(other) not in ours.func and str(other) not in our_group.func
    assert primitive("add") is ours and linear_group_primitive(plan) is our_group
    x, y = np.arange(6, dtype=np.float32).reshape(2, 3), np.full((2, 3), 0.5, np.float32)
    np.testing.assert_array_equal(theirs(Tensor(x), Tensor(y)).asnumpy(), x + y)
