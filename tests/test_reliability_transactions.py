"""No half-converted networks (issue 9, item 2): a verb that fails leaves the network as it was.

For every first-party algorithm and verb, a failure is injected at the last layer (the last
cell replacement of the verb, counted in a dry run on an identical network); the network's
cells, parameter names and values must then equal what they were before, and a retry must
give the same network as an undisturbed run. The failures the issue found in the wild
(calibration data of the wrong dtype or width, NaN in a later layer, SimQAT convert with a
NaN, SCOP apply with too few images) are reproduced as they happen.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import gscore
from gscore import CalibrationDataError, CheckpointMismatchError, PTQConfig
from gscore.errors import NonFiniteValueError
from gscore.io import save_checkpoint
from gscore.nn import walk
from gscore.testing.fuzz import FuzzConvNet, FuzzMLP
from gscore.testing.reliability import describe_difference, network_state

ms.runtime.launch_blocking()

QUIET = {"progress": False}


class InjectedFailure(RuntimeError):
    """Raised by the patched replace_cell; deliberately not a GscoreError."""


def patch_replacements(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None, error: type[BaseException] = InjectedFailure) -> dict[str, int]:
    """Count ``replace_cell`` calls in every module that imported it; raise at call ``fail_at``."""
    original = walk.replace_cell
    calls = {"n": 0}

    def replace_cell(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise error(f"injected failure at replacement {fail_at}")
        original(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__dict__", {}).get("replace_cell") is original:
            monkeypatch.setattr(module, "replace_cell", replace_cell)
    return calls


def mlp() -> FuzzMLP:
    return FuzzMLP((16, 32, 8, 4), seed=3, nested=True)


def convnet() -> FuzzConvNet:
    return FuzzConvNet(1, (4, 3), 6, 3, batchnorm=True, seed=3)


def mlp_data() -> list[np.ndarray]:
    return [np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)]


def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.random((8, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 8)


def trained_step(algo: Any, net: Any) -> Any:
    """QAT apply, then one training-mode forward: the activation ranges have observed data
    (convert refuses quantizers that never did)."""
    net = algo.apply(net)
    net.set_train(True)
    net(Tensor(images()[0]))
    net.set_train(False)
    return net


# (algorithm, config, network factory, steps before the verb, the verb); a step takes (algo, net)
SCENARIOS: dict[str, tuple[str, dict[str, Any], Callable[[], Any], list[Callable[..., Any]], Callable[..., Any]]] = {
    "rtn-apply": ("rtn", {}, mlp, [], lambda a, n: a.apply(n)),
    "rtn-convert": ("rtn", {}, mlp, [lambda a, n: a.apply(n)], lambda a, n: a.convert(n)),
    "rtn-deploy": ("rtn", {"mode": "deploy"}, mlp, [], lambda a, n: a.apply(n)),
    "ptq-apply-smooth": ("ptq", {"act_quant_dtype": "int8", "outliers_suppression": "smooth", "algo_args": QUIET}, mlp, [], lambda a, n: a.apply(n, datasets=mlp_data())),
    "ptq-apply-w4": ("ptq", {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 64}, mlp, [], lambda a, n: a.apply(n)),
    "ptq-convert": ("ptq", {"act_quant_dtype": "int8", "algo_args": QUIET}, mlp, [lambda a, n: a.apply(n, datasets=mlp_data())], lambda a, n: a.convert(n)),
    "ptq-deploy": ("ptq", {"mode": "deploy", "act_quant_dtype": "int8"}, mlp, [], lambda a, n: a.apply(n)),
    "simqat-apply": ("simqat", {}, convnet, [], lambda a, n: a.apply(n)),
    "simqat-convert": ("simqat", {}, convnet, [trained_step], lambda a, n: a.convert(n)),
    "slb-apply": ("slb", {"include_dense": True, "act_bits": 8}, convnet, [], lambda a, n: a.apply(n)),
    "slb-convert": ("slb", {"include_dense": True}, convnet, [lambda a, n: a.apply(n)], lambda a, n: a.convert(n)),
    "scop-apply": ("scop", {"prune_rate": 0.5, "knockoff_batch_size": 4, "recalibrate_batches": 1}, convnet, [], lambda a, n: a.apply(n, datasets=images())),
    "scop-convert": ("scop", {"prune_rate": 0.5, "knockoff_batch_size": 4, "recalibrate_batches": 1}, convnet, [lambda a, n: a.apply(n, datasets=images())], lambda a, n: a.convert(n)),
    "scop-knockoff-apply": ("scop-knockoff", {"prune_rate": 0.5, "knockoff_epochs": 1, "knockoff_batch_size": 4, "recalibrate_batches": 1}, convnet, [], lambda a, n: a.apply(n, datasets=images())),
    "scop-knockoff-convert": ("scop-knockoff", {"prune_rate": 0.5, "knockoff_epochs": 0, "knockoff_batch_size": 4, "recalibrate_batches": 1}, convnet, [lambda a, n: a.apply(n, datasets=images())], lambda a, n: a.convert(n)),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_failure_at_the_last_layer_leaves_the_network_as_it_was_and_a_retry_works(scenario, monkeypatch):
    name, config, make, before, verb = SCENARIOS[scenario]
    cls = gscore.get(name)

    def prepared() -> tuple[Any, Any]:
        algo, net = cls(config), make()
        for step in before:
            step(algo, net)
        return algo, net

    reference_algo, reference = prepared()  # also imports every module the verb uses, before patching
    reference_result = verb(reference_algo, reference)
    counting_algo, counting = prepared()
    calls = patch_replacements(monkeypatch)
    verb(counting_algo, counting)
    replacements = calls["n"]
    assert replacements >= 2, f"{scenario} replaced {replacements} cell(s); the test needs a failure after an earlier change"
    monkeypatch.undo()

    algo, net = prepared()
    state = network_state(net)
    patch_replacements(monkeypatch, fail_at=replacements)
    with pytest.raises(InjectedFailure):
        verb(algo, net)
    assert network_state(net) == state, describe_difference(state, network_state(net))
    monkeypatch.undo()

    result = verb(algo, net)
    assert network_state(result) == network_state(reference_result)


def test_a_keyboard_interrupt_mid_phase_also_restores_the_network(monkeypatch):
    net = mlp()
    state = network_state(net)
    patch_replacements(monkeypatch, fail_at=2, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        gscore.get("rtn")().apply(net)
    assert network_state(net) == state


@pytest.mark.parametrize(
    "data, message",
    [
        ([np.ones((4, 16), np.int32)], r"cannot run on calibration input 0 \(shape \(4, 16\), dtype Int32\)"),
        ([np.ones((4, 17), np.float32)], r"cannot run on calibration input 0 \(shape \(4, 17\), dtype Float32\)"),
        ([], "datasets is empty"),
        ("windows.npy", "datasets must be an iterable"),
        ([np.array("text")], "must be a non-empty numeric array"),
    ],
)
def test_calibration_data_that_does_not_fit_leaves_no_observer_and_no_renamed_parameter(data, message):
    net = mlp()
    state = network_state(net)
    algo = gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", algo_args=QUIET))
    with pytest.raises(CalibrationDataError, match=message):
        algo.apply(net, datasets=data)
    assert network_state(net) == state
    assert "stem.0.weight" in {p.name for p in net.get_parameters()}
    algo.apply(net, datasets=mlp_data())  # the retry nests nothing
    assert not any(".layer." in p.name for p in net.get_parameters())
    assert {p.name for p in net.get_parameters()} >= {"stem.0.weight", "body.1.weight", "stem.0._input_quantizer.scale"}


@pytest.mark.parametrize(
    "name, config, data",
    [
        ("rtn", {}, None),
        ("ptq", {"algo_args": QUIET}, None),
        ("ptq", {"act_quant_dtype": "int8", "outliers_suppression": "smooth", "algo_args": QUIET}, mlp_data()),
    ],
)
def test_a_nan_in_the_last_layer_converts_nothing(name, config, data):
    net = FuzzMLP((16, 32, 8, 4), seed=3, poison=2)
    state = network_state(net)
    with pytest.raises(NonFiniteValueError, match="non-finite"):
        gscore.get(name)(config).apply(net, datasets=data)
    assert network_state(net) == state


def test_simqat_convert_with_a_nan_keeps_the_trained_float_weights():
    algo = gscore.get("simqat")()
    net = trained_step(algo, convnet())
    trained = {p.name: p for p in net.get_parameters() if p.name.endswith("weight")}
    for param in trained.values():  # what training did to the weights
        param.set_data(Tensor(param.asnumpy() * 1.5))
    last = trained["fc.weight_source.weight"]
    poisoned = last.asnumpy().copy()
    poisoned[0, 0] = np.nan
    last.set_data(Tensor(poisoned))
    state = network_state(net)
    with pytest.raises(NonFiniteValueError):
        algo.convert(net)
    assert network_state(net) == state


def test_scop_apply_that_failed_can_be_retried():
    algo = gscore.get("scop-knockoff")({"prune_rate": 0.5, "knockoff_epochs": 1, "knockoff_batch_size": 4, "recalibrate_batches": 0})
    net = convnet()
    state = network_state(net)
    x, y = images()
    with pytest.raises(CalibrationDataError, match="at least one full batch: 2 images < knockoff_batch_size 4"):
        algo.apply(net, datasets=(x[:2], y[:2]))
    assert network_state(net) == state and not algo.groups
    algo.apply(net, datasets=(x, y))
    assert algo.convert(net) is not net


def test_convert_whose_checkpoint_does_not_fit_is_undone_as_a_whole(tmp_path):
    simqat = gscore.get("simqat")
    maker = simqat()
    other = maker.convert(trained_step(maker, FuzzConvNet(1, (2, 3), 6, 3, batchnorm=True, seed=3)))
    path = save_checkpoint(other, tmp_path / "other.ckpt")
    algo = simqat()
    net = trained_step(algo, convnet())
    state = network_state(net)
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        algo.convert(net, ckpt_path=path)
    assert network_state(net) == state


@pytest.mark.parametrize(
    "data, message",
    [
        ((np.zeros((4, 6, 6), np.float32), np.zeros(4, np.int64)), r"the network cannot run on the given images \(each \(6, 6\), float32\)"),
        ((np.zeros((4, 2, 6, 6), np.float32), np.zeros(4, np.int64)), r"the network cannot run on the given images \(each \(2, 6, 6\), float32\)"),
        ((np.zeros((4, 1, 6, 6), np.float32), np.zeros(3, np.int64)), "one label per image"),
        ((np.full((4, 1, 6, 6), np.nan, np.float32), np.zeros(4, np.int64)), "NaN or infinite"),
        ((np.zeros((4, 1, 6, 6), np.float32), np.full(4, 0.5)), "class indices"),
        ((np.zeros((4, 1, 6, 6), np.float32), -np.ones(4, np.int64)), "class indices"),
        (([[1.0], [1.0, 2.0]], np.zeros(2, np.int64)), "not an array"),
    ],
)
def test_scop_images_that_do_not_fit_are_a_calibration_data_error(data, message):
    net = convnet()
    state = network_state(net)
    with pytest.raises(CalibrationDataError, match=message):
        gscore.get("scop")().apply(net, datasets=data)
    assert network_state(net) == state
