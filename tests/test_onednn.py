"""Importing gscore caps oneDNN at AVX2 (its AVX-512 float32 convolutions are the slow path), unless the user chose a cap."""

import os
import subprocess
import sys

import pytest

from gscore import onednn

PRINT_SETTING = f"import gscore, os; print(os.environ.get({onednn.VARIABLE!r}))"


def cap_after_import(**chosen: str) -> str:
    """``ONEDNN_MAX_CPU_ISA`` in a fresh interpreter that imported gscore, started with the variables ``chosen`` (the rest unset)."""
    env = {k: v for k, v in os.environ.items() if k not in (onednn.VARIABLE, onednn.FORMER_VARIABLE)}
    env.update(chosen)
    done = subprocess.run([sys.executable, "-c", PRINT_SETTING], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_caps_onednn_at_avx2_when_unset():
    assert cap_after_import() == "AVX2"


@pytest.mark.parametrize("chosen", ["ALL", "AVX512_CORE"])
def test_import_keeps_the_users_cap(chosen):
    assert cap_after_import(ONEDNN_MAX_CPU_ISA=chosen) == chosen


def test_a_cap_under_onednns_former_name_counts_as_chosen():
    assert cap_after_import(DNNL_MAX_CPU_ISA="ALL") == "None"


def test_convolutions_run_under_the_cap_gscore_chose():
    """oneDNN reports the instruction set it dispatches to; after importing gscore (before any
    MindSpore operator) a convolution runs with AVX2 at most."""
    script = (
        "import gscore, numpy as np, mindspore as ms\n"
        "from mindspore import nn, Tensor\n"
        "nn.Conv2d(1, 4, 3)(Tensor(np.ones((1, 1, 8, 8), np.float32))).asnumpy()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (onednn.VARIABLE, onednn.FORMER_VARIABLE)}
    env["ONEDNN_VERBOSE"] = "1"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    isa = [line for line in done.stdout.splitlines() if line.startswith("onednn_verbose") and ",info,cpu,isa:" in line]
    assert isa, done.stdout[-2000:]
    assert "AVX-512" not in isa[0] and "AMX" not in isa[0], isa[0]
