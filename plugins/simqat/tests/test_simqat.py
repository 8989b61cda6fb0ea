"""SimQAT on CPU: trains real networks on real digits, deploys with int8 weights, round-trips.

Tolerance for deploy vs simulation: the deployed layer dequantises the same integer codes
with the same scales (computed by gscore.quant from the same float32 ranges), so outputs
agree to float32 rounding; tests allow 1e-5 of the logit scale and need equal predictions.
"""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import ConfigError, NoQuantizableLayerError
from gscore.data.mnist import load_mnist_5k
from gscore.eval.classification import predict_logits, top1_accuracy
from gscore.io import read_description, save_checkpoint
from gscore.models.convnets import DigitsResNet, LeNet5
from gscore.nn.fake_quant import ActivationFakeQuant
from gscore.nn.quant_conv import ActivationQuantizer, Int8Weight
from gscore.nn.quant_layer import QuantLayer
from gscore.testing.conformance import QATConformance
from gscore.train.classifier import train_classifier
from gscore_simqat.algorithm import SimulatedQuantizationAwareTraining
from gscore_simqat.config import SimQATConfig
from gscore_simqat.bn_fold import ConvBnFold

ms.runtime.launch_blocking()

SimQAT = gscore.get("simqat")


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k()


def make_lenet() -> LeNet5:
    ms.set_seed(0)
    return LeNet5()


def make_resnet() -> DigitsResNet:
    ms.set_seed(0)
    return DigitsResNet(widths=(4, 8, 8))


def make_input() -> Tensor:
    return Tensor(load_mnist_5k().test_x[:16])


def few_steps(net: nn.Cell) -> None:
    data = load_mnist_5k()
    train_classifier(net, data.train_x[:96], data.train_y[:96], epochs=1, batch_size=32, progress=False)


class TestConformance(QATConformance):
    algorithm_name = "simqat"
    make_network = staticmethod(make_lenet)
    make_input = staticmethod(make_input)
    train_steps = staticmethod(few_steps)


class TestConformanceWithBatchNorm(QATConformance):
    algorithm_name = "SimulatedQuantizationAwareTraining"
    make_network = staticmethod(make_resnet)
    make_input = staticmethod(make_input)
    train_steps = staticmethod(few_steps)
    quantize_config = {"weight_granularity": "per_tensor", "act_symmetric": True, "narrow_range": True}


def test_registered_class_and_aliases():
    assert SimQAT is SimulatedQuantizationAwareTraining
    assert gscore.get("sim_qat") is SimQAT


@pytest.mark.slow
def test_lenet_a8w8_learns_digits_and_deploys_to_int8_with_the_same_outputs(digits):
    net = make_lenet()
    algo = SimQAT()
    algo.apply(net)
    train_classifier(net, digits.train_x[:2048], digits.train_y[:2048], epochs=2, batch_size=32, learning_rate=2e-3, progress=False)
    x, y = digits.test_x[:500], digits.test_y[:500]
    simulated = predict_logits(net, x)
    assert top1_accuracy(simulated, y) > 0.8  # chance is 0.1; a broken STE or observer stays near it

    algo.convert(net)
    deployed = predict_logits(net, x)
    np.testing.assert_allclose(deployed, simulated, rtol=0, atol=1e-5 * np.abs(simulated).max())
    assert np.array_equal(deployed.argmax(1), simulated.argmax(1))
    for name in ("conv1", "conv2", "fc1", "fc2", "fc3"):
        layer = getattr(net, name)
        assert isinstance(layer.weight_source, Int8Weight) and isinstance(layer.input_quant, ActivationQuantizer)
        q = layer.weight_source.weight.asnumpy()
        assert q.dtype == np.int8
        # symmetric per channel: each channel's largest |w| lands on the end code 127
        np.testing.assert_array_equal(np.abs(q.reshape(q.shape[0], -1)).max(axis=1), 127)
        assert not layer.weight_source.zero_point.asnumpy().any()
    # the input of conv1 is an image in [0, 1]: unsigned codes, zero point 0, scale 1/255
    assert float(net.conv1.input_quant.zero_point.asnumpy()) == 0
    assert abs(float(net.conv1.input_quant.scale.asnumpy()) - 1 / 255) < 1e-3 / 255


def test_training_with_mindspore_model_updates_weights_and_observers(digits):
    from mindspore import dataset as ds
    from mindspore.train import Model

    net = SimQAT().apply(make_lenet())
    before = net.fc1.weight_source.weight.asnumpy().copy()
    data = ds.NumpySlicesDataset({"x": digits.train_x[:128], "y": digits.train_y[:128]}, shuffle=False).batch(32)
    model = Model(net, nn.CrossEntropyLoss(), nn.Adam(net.trainable_params(), 1e-3))
    model.train(1, data, dataset_sink_mode=False)
    assert not np.array_equal(net.fc1.weight_source.weight.asnumpy(), before)
    observer = net.conv1.input_quant
    assert int(observer.step.asnumpy()) == 4
    assert float(observer.minimum.asnumpy()) == 0.0 and 0.9 < float(observer.maximum.asnumpy()) <= 1.0


def test_quant_delay_trains_in_float_then_quantizes(digits):
    cfg = SimQATConfig(quant_delay=2)
    float_net = make_lenet()
    net = SimQAT(cfg).apply(make_lenet())
    x = Tensor(digits.train_x[:8])
    net.set_train(True)
    float_net.set_train(True)
    for _ in range(2):
        np.testing.assert_array_equal(net(x).asnumpy(), float_net(x).asnumpy())
    assert not np.array_equal(net(x).asnumpy(), float_net(x).asnumpy())
    assert int(net.fc2.weight_source.quantizer.step.asnumpy()) == 3


def test_bn_fold_matches_the_float_network_before_training(digits):
    """The fold is exact algebra; only quantization noise separates it from float conv+BN."""
    x = Tensor(digits.test_x[:32])
    float_net = make_resnet()
    # give BatchNorm non-trivial statistics so a wrong fold formula shows
    train_classifier(float_net, digits.train_x[:64], digits.train_y[:64], epochs=1, batch_size=32, progress=False)
    reference = float_net(x).asnumpy()
    net = SimQAT(SimQATConfig(act_bits=None)).apply(float_net)
    assert isinstance(net.layers[0].conv1, ConvBnFold) and isinstance(net.layers[0].bn1, nn.Identity)
    assert isinstance(net.layers[1].downsample[0], ConvBnFold) and isinstance(net.layers[1].downsample[1], nn.Identity)
    out = net(x).asnumpy()
    assert np.abs(out - reference).max() < 0.02 * np.abs(reference).max()


def test_without_bn_fold_batchnorm_stays_float():
    net = SimQAT(SimQATConfig(bn_fold=False)).apply(make_resnet())
    assert isinstance(net.bn1, nn.BatchNorm2d) and isinstance(net.conv1, QuantLayer)
    SimQAT(SimQATConfig(bn_fold=False)).convert(net)
    assert isinstance(net.conv1.weight_source, Int8Weight) and isinstance(net.bn1, nn.BatchNorm2d)


def test_low_bit_weights_lie_on_their_grid():
    net = make_lenet()
    algo = SimQAT(SimQATConfig(weight_bits=4, act_bits=None, narrow_range=True))
    algo.convert(algo.apply(net))
    q = net.fc1.weight_source.weight.asnumpy()
    assert q.min() >= -7 and q.max() <= 7 and not net.fc1.has_input_quant
    assert len(np.unique(q)) <= 15


def test_checkpoint_describes_itself(tmp_path: Path):
    net = make_lenet()
    algo = SimQAT()
    algo.convert(algo.apply(net))
    path = save_checkpoint(net, tmp_path / "a8w8.ckpt", description=algo.describe(net))
    description = read_description(path)
    assert description["config"]["type"] == "SimQATConfig"
    assert description["layers"]["conv2"] == {
        "kind": "weight+activation", "dtype": "int8", "bits": 8, "granularity": "per_channel",
        "symmetric": True, "narrow": False, "act_bits": 8, "bn_folded": False,
    }
    fresh = make_lenet()
    deploy = SimQAT()
    deploy.convert(deploy.apply(fresh), ckpt_path=str(path))
    assert fresh.conv2.weight_source.weight.dtype == ms.int8


def test_blacklist_and_nothing_to_quantize():
    net = SimQAT(SimQATConfig(opname_blacklist=["fc"])).apply(make_lenet())
    assert isinstance(net.fc1, nn.Dense) and isinstance(net.conv1, QuantLayer)
    with pytest.raises(NoQuantizableLayerError, match="no nn.Conv2d or nn.Dense"):
        SimQAT(SimQATConfig(opname_blacklist=["fc", "conv"])).apply(make_lenet())
    with pytest.raises(NoQuantizableLayerError, match="run apply"):
        SimQAT().convert(make_lenet())


def test_activation_observer_uses_an_ema_of_batch_ranges():
    from gscore.quant import QuantScheme

    observer = ActivationFakeQuant(QuantScheme(bits=8, symmetric=False, signed=False, granularity="per_tensor"), ema_decay=0.5)
    observer.set_train(True)
    observer(Tensor(np.array([-1.0, 2.0], np.float32)))
    observer(Tensor(np.array([-3.0, 4.0], np.float32)))
    assert observer.minimum.asnumpy() == pytest.approx(-2.0) and observer.maximum.asnumpy() == pytest.approx(3.0)
    observer.set_train(False)
    observer(Tensor(np.array([-9.0, 9.0], np.float32)))
    assert observer.minimum.asnumpy() == pytest.approx(-2.0) and int(observer.step.asnumpy()) == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("weight_bits", 1, r"allowed: 2, 3, 4, 5, 6, 7, 8"),
        ("act_bits", 16, r"None \(no activation quantization\)"),
        ("weight_granularity", "per_group", "allowed: per_channel, per_tensor"),
        ("ema_decay", 1.0, r"in \[0, 1\)"),
        ("quant_delay", -1, "int >= 0"),
        ("bn_fold", "yes", "True or False"),
        ("opname_blacklist", "fc", "list of strings"),
    ],
)
def test_config_errors_say_what_is_allowed(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SimQATConfig(**{field: value})
    with pytest.raises(ConfigError, match=message):
        SimQAT({field: value})


def test_unknown_config_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown SimQATConfig field"):
        SimQATConfig.from_dict({"per_channel": [False, True]})
