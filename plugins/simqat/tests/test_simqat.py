"""SimQAT on CPU: trains real networks on real digits, deploys with int8 weights, round-trips.

Deploy vs simulation: bit for bit on the portable path, within the tolerances of
:mod:`gscore.testing.native_deploy` on the native kernels (the default).
"""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import CalibrationDataError, ConfigError, NoQuantizableLayerError, kernels
from gscore.data.mnist import load_mnist_5k
from gscore.eval.classification import predict_logits, top1_accuracy
from gscore.io import read_description, save_checkpoint
from gscore.models.convnets import DigitsResNet, LeNet5
from gscore.nn.fake_quant import ActivationFakeQuant
from gscore.nn.quant_conv import ActivationQuantizer, Int8Weight
from gscore.nn.quant_layer import QuantLayer
from gscore.testing.conformance import QATConformance
from gscore.testing.native_deploy import assert_native_deploy_close, native_layers
from gscore.train.classifier import train_classifier
from gscore_simqat.algorithm import SimulatedQuantizationAwareTraining
from gscore_simqat.config import SimQATConfig
from gscore_simqat.bn_fold import ConvBnFold
from gscore.nn.fake_quant import FakeQuantizedWeight

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


def observe(net: nn.Cell, x: Tensor | None = None) -> None:
    """One training-mode forward, so every activation observer has seen a batch."""
    net.set_train(True)
    net(make_input() if x is None else x)
    net.set_train(False)


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
    assert_native_deploy_close(deployed, simulated)
    if kernels.enabled():
        assert native_layers(net) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
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


@pytest.mark.parametrize("use_batch_statistics", [None, False])
def test_bn_fold_stops_the_rescale_gradient_only_where_it_is_zero(digits, use_batch_statistics, monkeypatch):
    """The fold stops the gradient through its ``1 / f`` output rescale when the BatchNorm uses
    batch statistics (it divides any per-channel scale out again): the weight, gamma and beta
    gradients stay those of the full path to well within the ``eps / var`` it drops, with
    negative gammas too. On moving statistics that path carries a real part of gamma's
    gradient (stopped, gamma's gradient differs beyond 1e-3), so it is kept. The full path is
    what the fold computes when told to keep that gradient."""
    from mindspore import ParameterTuple, ops

    x, labels = Tensor(digits.test_x[:32]), Tensor(digits.test_y[:32].astype(np.int32))
    net = make_resnet()
    train_classifier(net, digits.train_x[:64], digits.train_y[:64], epochs=1, batch_size=32, progress=False)
    net.bn1.gamma.set_data(Tensor(np.where(np.arange(4) % 2 == 0, -1.0, 1.0).astype(np.float32) * np.abs(net.bn1.gamma.asnumpy()) + 0.1))
    net = SimQAT(SimQATConfig(act_bits=None)).apply(net)
    net.set_train(True)
    fold = net.conv1
    assert isinstance(fold, ConvBnFold)
    fold.bn.use_batch_statistics = use_batch_statistics  # set after apply, as a user freezing the statistics would
    params = ParameterTuple([fold.weight, fold.bn.gamma, fold.bn.beta])
    loss = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
    moving = [p.asnumpy().copy() for p in (fold.bn.moving_mean, fold.bn.moving_variance)]
    grads = {}
    for full_path in (False, True):
        if full_path:
            monkeypatch.setattr(ConvBnFold, "_keeps_rescale_gradient", lambda self: True)
        grads[full_path] = [g.asnumpy() for g in ops.GradOperation(get_by_list=True)(loss, params)(x, labels)]
        for p, value in zip((fold.bn.moving_mean, fold.bn.moving_variance), moving):
            p.set_data(Tensor(value))
    close = [np.allclose(g, full, rtol=1e-3, atol=1e-6 * np.abs(full).max()) for g, full in zip(grads[False], grads[True])]
    assert close == [True, True, True], close  # on moving statistics, stopping it would move gamma's gradient


def test_without_bn_fold_batchnorm_stays_float():
    net = SimQAT(SimQATConfig(bn_fold=False)).apply(make_resnet())
    observe(net)
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
    observe(algo.apply(net))
    algo.convert(net)
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


# ---------------------------------------------------------------------- observers that never saw data


def test_convert_and_evaluation_refuse_activation_quantizers_that_never_observed_data(tmp_path: Path):
    net = SimQAT().apply(make_lenet())
    net.set_train(False)
    with pytest.raises(CalibrationDataError, match=r"conv1\.input_quant.*never observed|never observed data.*conv1\.input_quant"):
        net(make_input())
    with pytest.raises(CalibrationDataError, match=r"5 activation quantizer\(s\) never observed data.*conv1\.input_quant, conv2\.input_quant, fc1\.input_quant, fc2\.input_quant, fc3\.input_quant.*ckpt_path"):
        SimQAT().convert(net)
    assert isinstance(net.conv1.weight_source, FakeQuantizedWeight)  # nothing converted

    observe(net)  # one training-mode forward is enough: the ranges are real now
    algo = SimQAT()
    algo.convert(net)
    path = save_checkpoint(net, tmp_path / "a8w8.ckpt", description=algo.describe(net))
    fresh = SimQAT()
    rebuilt = fresh.convert(fresh.apply(make_lenet()), ckpt_path=str(path))  # the checkpoint supplies the ranges
    x = make_input()
    np.testing.assert_array_equal(rebuilt(x).asnumpy(), net(x).asnumpy())


class SignedInputCNN(nn.Cell):
    """A BN-free CNN fed standardised images (minimum about -0.4): every activation range of conv1
    has a negative minimum, and so does the input of fc2 (no ReLU before it)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, pad_mode="valid", has_bias=True)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, pad_mode="valid", has_bias=True)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Dense(8 * 12 * 12, 32)
        self.fc2 = nn.Dense(32, 10)

    def construct(self, x):
        x = (ms.ops.expand_dims(x, 1) - 0.13) / 0.31
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc2(self.fc1(self.flatten(x)))


def standardised(images: np.ndarray) -> np.ndarray:
    return ((images - 0.13) / 0.31).astype(np.float32)


@pytest.mark.parametrize("make, config, prepare", [
    (SignedInputCNN, {}, np.asarray),
    (SignedInputCNN, {"act_symmetric": True, "weight_granularity": "per_tensor", "narrow_range": True}, np.asarray),
    (make_resnet, {}, standardised),
], ids=["cnn", "cnn-symmetric-activations", "resnet-bn-folded-standardised-input"])
def test_deployed_network_is_bit_identical_to_the_simulated_one_with_negative_activation_minima(digits, make, config, prepare, tmp_path: Path):
    ms.set_seed(0)
    net = make()
    algo = SimQAT(config)
    algo.apply(net)
    train_classifier(net, prepare(digits.train_x[:192]), digits.train_y[:192], epochs=1, batch_size=32, progress=False)
    minima = {name: float(cell.minimum.asnumpy()) for name, cell in net.cells_and_names() if isinstance(cell, ActivationFakeQuant)}
    assert any(m < 0 for m in minima.values()), minima
    x = prepare(digits.test_x[:64])
    simulated = predict_logits(net, x)
    with kernels.forced(kernels.PORTABLE):
        algo.convert(net)
    np.testing.assert_array_equal(predict_logits(net, x), simulated)
    # the same deployed checkpoint loaded onto the native kernels, which the default deploy uses
    path = tmp_path / "deployed.ckpt"
    save_checkpoint(net, path, algo.describe(net))
    native = SimQAT(config)
    native_net = native.convert(native.apply(make()), ckpt_path=path)
    if kernels.enabled():
        assert len(native_layers(native_net)) == len([c for _, c in native_net.cells_and_names() if isinstance(c, QuantLayer)])
    assert_native_deploy_close(predict_logits(native_net, x), simulated)
