"""SimQAT training steps compiled into one graph compute the op-by-op step.

Why this matters: a compiled step is several times faster on CPU (bench/results/qat_step.md),
and MindSpore runs any Python-side code it cannot compile as an interpreted node *and stops the
gradient there*, with only a log warning. These tests train the same network op by op and
compiled on the same batches and compare everything that training changes.

Tolerance: weights within 1e-5 relative to each tensor's largest value after three Adam steps
(the compiled graph may order float sums differently); step counters exact; observer ranges
within 1e-5 relative.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

import gscore
from gscore.data.mnist import load_mnist_5k
from gscore.models.convnets import DigitsResNet, LeNet5
from gscore.train.classifier import train_classifier
from gscore_simqat.config import SimQATConfig

ms.runtime.launch_blocking()

SimQAT = gscore.get("simqat")


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k()


def build(network: str, config: dict) -> ms.nn.Cell:
    ms.set_seed(0)
    net = LeNet5() if network == "lenet" else DigitsResNet(widths=(4, 8, 8))
    return SimQAT(SimQATConfig(**config)).apply(net)


@pytest.mark.parametrize(
    "network, config",
    [("lenet", {}), ("lenet", {"quant_delay": 2}), ("resnet", {"bn_fold": True})],
    ids=["lenet-a8w8", "lenet-delay2", "resnet-bnfold"],
)
def test_a_compiled_step_trains_as_the_op_by_op_step(digits, kernel_path, network, config):
    x, y = digits.train_x[:96], digits.train_y[:96]
    nets = {compiled: build(network, config) for compiled in (False, True)}
    losses = {compiled: train_classifier(net, x, y, epochs=1, batch_size=32, progress=False, compiled=compiled).final_loss for compiled, net in nets.items()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    compiled = dict(nets[True].parameters_and_names())
    changed = 0
    for name, param in nets[False].parameters_and_names():
        a, b = param.asnumpy(), compiled[name].asnumpy()
        if name.endswith("step"):
            assert int(a) == int(b) == 3, name
            continue
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(float(np.abs(a).max()), 1e-30), err_msg=name)
        changed += param.requires_grad
    assert changed > 0


def test_quant_delay_passes_values_through_inside_a_compiled_step(digits, kernel_path):
    """While the delay holds, a compiled SimQAT step trains exactly as the float network."""
    x, y = digits.train_x[:64], digits.train_y[:64]
    ms.set_seed(0)
    float_net = LeNet5()
    net = build("lenet", {"quant_delay": 2})
    for model in (float_net, net):
        train_classifier(model, x, y, epochs=1, batch_size=32, progress=False, compiled=True)
    quantized = dict(net.parameters_and_names())
    for name, param in float_net.parameters_and_names():
        twin = quantized[name.replace(".weight", ".weight_source.weight")]
        np.testing.assert_allclose(twin.asnumpy(), param.asnumpy(), rtol=0, atol=1e-6, err_msg=name)
    assert int(net.fc3.weight_source.quantizer.step.asnumpy()) == 2
