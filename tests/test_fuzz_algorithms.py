"""The reliability property, for every first-party algorithm, on generated configs, networks and data.

Any generated config (a dict read through ``from_dict``, values usually valid and sometimes
not), any generated small real network (possibly with a NaN weight) and any generated data
(possibly empty, mis-shaped, mis-typed, NaN or not an array) gives a finished result or a
:class:`~gscore.errors.GscoreError`, never another exception; a failed call leaves the
network exactly as it was; and a run that finishes saves, deploys from the file and
reproduces its outputs. Every call is checked by
:func:`gscore.testing.reliability.call_all_or_nothing`.

The fast profile runs a few examples per algorithm (derandomized, so CI is reproducible);
the ``slow`` profile runs many more.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import mindspore as ms
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mindspore import Tensor

import gscore
from gscore.config import PTQMode
from gscore.errors import GscoreWarning
from gscore.io import load_checkpoint, save_checkpoint
from gscore.testing.fuzz import (
    PTQ_PRESETS,
    RTN_PRESETS,
    SCOP_FIELDS,
    SIMQAT_FIELDS,
    SLB_FIELDS,
    FuzzConvNet,
    FuzzMLP,
    config_dicts,
    conv_cases,
    mlp_cases,
    ptq_config_dicts,
)
from gscore.testing.reliability import call_all_or_nothing

ms.runtime.launch_blocking()

FAST_EXAMPLES = 8
SLOW_EXAMPLES = 80


def _valid_mlp_input(widths: tuple[int, ...]) -> Tensor:
    return Tensor(np.random.default_rng(7).standard_normal((2, widths[0])).astype(np.float32))


def _valid_images(case: dict[str, Any]) -> Tensor:
    in_channels, _, size, *_ = case["network"]
    return Tensor(np.random.default_rng(7).random((2, in_channels, size, size)).astype(np.float32))


def _apply_failed(algo: Any, net: Any, apply: Any) -> str:
    """Run ``apply`` all-or-nothing; if it failed, convert must fail all-or-nothing too (the
    network is unchanged); returns the outcome label, or "" when apply finished."""
    _, error = call_all_or_nothing(apply, net)
    if error is None:
        return ""
    call_all_or_nothing(lambda: algo.convert(net), net)
    return f"apply: {type(error).__name__}"


def check_ptq_family(name: str, config: dict[str, Any], case: dict[str, Any], folder: Path) -> str:
    """rtn / ptq: apply (with the data) and convert; if both finish, save, deploy, load, compare."""
    cls = gscore.get(name)
    net = FuzzMLP(*case["network"])
    try:
        algo = cls(config)
    except gscore.GscoreError:
        return "config refused"
    failed = _apply_failed(algo, net, lambda: algo.apply(net, datasets=case["data"]))
    if failed:
        return failed
    _, error = call_all_or_nothing(lambda: algo.convert(net), net)
    if error is not None:
        return f"convert: {type(error).__name__}"
    if algo.config.mode is PTQMode.DEPLOY:
        return "deployed"
    x = _valid_mlp_input(case["network"][0])
    expected = net(x).asnumpy()
    path = save_checkpoint(net, folder / "q.ckpt", description=algo.describe(net))
    fresh = FuzzMLP(*case["network"])
    deploy = cls(dataclasses.replace(algo.config, mode="deploy"))
    deploy.convert(deploy.apply(fresh))
    load_checkpoint(path, fresh)
    np.testing.assert_array_equal(fresh(x).asnumpy(), expected)
    return "finished"


def check_qat(name: str, config: dict[str, Any], case: dict[str, Any], folder: Path) -> str:
    """simqat / slb: apply, one eval forward, convert; then save, rebuild the deploy form, load, compare."""
    cls = gscore.get(name)
    net = FuzzConvNet(*case["network"])
    try:
        algo = cls(config)
    except gscore.GscoreError:
        return "config refused"
    failed = _apply_failed(algo, net, lambda: algo.apply(net))
    if failed:
        return failed
    x = _valid_images(case)
    net.set_train(True)
    net(x)  # one training-mode forward gives the activation observers a range (else convert refuses them)
    net.set_train(False)
    net(x)
    _, error = call_all_or_nothing(lambda: algo.convert(net), net)
    if error is not None:
        return f"convert: {type(error).__name__}"
    expected = net(x).asnumpy()
    path = save_checkpoint(net, folder / "qat.ckpt", description=algo.describe(net))
    deploy = cls(config)
    fresh = deploy.convert(deploy.apply(FuzzConvNet(*case["network"])), ckpt_path=str(path))
    fresh.set_train(False)
    np.testing.assert_array_equal(fresh(x).asnumpy(), expected)
    return "finished"


def check_scop(name: str, config: dict[str, Any], case: dict[str, Any], folder: Path) -> str:
    """scop: apply with the data, convert to the smaller network; save it and rebuild it from the file."""
    from gscore_scop import load_pruned

    cls = gscore.get(name)
    net = FuzzConvNet(*case["network"])
    try:
        algo = cls({**config, "knockoff_batch_size": config.get("knockoff_batch_size", 2)})
    except gscore.GscoreError:
        return "config refused"
    failed = _apply_failed(algo, net, lambda: algo.apply(net, datasets=case["data"]))
    if failed:
        return failed
    pruned, error = call_all_or_nothing(lambda: algo.convert(net), net)
    if error is not None:
        return f"convert: {type(error).__name__}"
    x = _valid_images(case)
    pruned.set_train(False)
    expected = pruned(x).asnumpy()
    path = save_checkpoint(pruned, folder / "pruned.ckpt", description=algo.describe())
    rebuilt = load_pruned(path, FuzzConvNet(*case["network"]))
    rebuilt.set_train(False)
    np.testing.assert_array_equal(rebuilt(x).asnumpy(), expected)
    return "finished"


ALGORITHMS: dict[str, tuple[Callable[..., str], Any, Any]] = {
    "rtn": (check_ptq_family, ptq_config_dicts(RTN_PRESETS + PTQ_PRESETS[1:4]), mlp_cases()),
    "ptq": (check_ptq_family, ptq_config_dicts(), mlp_cases()),
    "simqat": (check_qat, config_dicts(SIMQAT_FIELDS), conv_cases()),
    "slb": (check_qat, config_dicts(SLB_FIELDS), conv_cases()),
    "scop": (check_scop, config_dicts(SCOP_FIELDS), conv_cases()),
    "scop-knockoff": (check_scop, config_dicts(SCOP_FIELDS), conv_cases()),
}


def run_property(name: str, examples: int) -> dict[str, int]:
    """Run the property for ``name`` on ``examples`` generated cases; returns outcome counts."""
    check, configs, cases = ALGORITHMS[name]
    outcomes: dict[str, int] = {}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(config=configs, case=cases)
    def prop(config: dict[str, Any], case: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore", GscoreWarning)
            outcome = check(name, config, case, Path(folder))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    prop()
    return outcomes


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_any_config_network_and_data_finishes_or_fails_cleanly(name):
    run_property(name, FAST_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_any_config_network_and_data_finishes_or_fails_cleanly_long(name):
    outcomes = run_property(name, SLOW_EXAMPLES)
    assert outcomes.get("finished", 0) + outcomes.get("deployed", 0) > 0, outcomes
