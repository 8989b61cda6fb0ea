"""SLB on CPU: search 1/2/4-bit weights on real digits, deploy packed, match the hard network.

Deploy vs training network: on the portable path the deployed layer looks up the same level
values with the same argmax codes and multiplies by the same float32 scales, so outputs are
bit-identical (tolerance: exact). With 8-bit activations and native kernels (the default) a
layer runs the integer operator on the same codes (SLB's levels are odd integers over
``2**bits - 1``), within the tolerances of :mod:`gscore.testing.native_deploy`.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import CalibrationDataError, ConfigError, NoQuantizableLayerError, kernels
from gscore.data.mnist import load_mnist_5k
from gscore.eval.classification import predict_logits, top1_accuracy
from gscore.io import save_checkpoint
from gscore.models.convnets import LeNet5
from gscore.nn.quant_conv import ActivationQuantizer, PackedWeight
from gscore.nn.quant_layer import QuantLayer
from gscore.quant.bitpack import unpack_bits
from gscore.testing.conformance import QATConformance
from gscore.testing.native_deploy import assert_native_deploy_close, native_layers
from gscore.train.classifier import train_classifier
from gscore_slb.algorithm import SlbQuantAwareTraining
from gscore_slb.config import SLBConfig
from gscore_slb.schedule import TemperatureSchedule
from gscore_slb.search import SlbWeight, levels

ms.runtime.launch_blocking()

SLB = gscore.get("slb")


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k()


def make_lenet() -> LeNet5:
    ms.set_seed(0)
    return LeNet5()


def make_input() -> Tensor:
    return Tensor(load_mnist_5k().test_x[:16])


@pytest.fixture(scope="module")
def pretrained(digits, tmp_path_factory):
    """A float LeNet trained briefly (about 90% test accuracy), saved to a checkpoint."""
    net = make_lenet()
    train_classifier(net, digits.train_x[:2048], digits.train_y[:2048], epochs=2, batch_size=32, learning_rate=2e-3, progress=False)
    path = tmp_path_factory.mktemp("slb") / "lenet.ckpt"
    ms.save_checkpoint(net, str(path))
    accuracy = top1_accuracy(predict_logits(net, digits.test_x[:500]), digits.test_y[:500])
    assert accuracy > 0.85
    return path, accuracy


def load_pretrained(path) -> LeNet5:
    net = make_lenet()
    ms.load_checkpoint(str(path), net)
    return net


def train_with_schedule(net, algo, x, y, steps, batch_size=32, learning_rate=1e-3) -> None:
    """A value_and_grad loop that drives the temperature with the functional step."""
    schedule = algo.schedule(steps)
    params = net.trainable_params()
    optimizer = nn.Adam(params, learning_rate=learning_rate)
    loss_fn = nn.CrossEntropyLoss()

    def forward(images, labels):
        return loss_fn(net(images), labels)

    grad_fn = ms.value_and_grad(forward, None, params)
    net.set_train(True)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        schedule.step(net)
        idx = rng.choice(len(x), batch_size, replace=False)
        _, grads = grad_fn(Tensor(x[idx]), Tensor(y[idx]))
        optimizer(grads)
    net.set_train(False)


def few_steps(net: nn.Cell) -> None:
    data = load_mnist_5k()
    train_with_schedule(net, SLB(SLBConfig(weight_bits=2, include_dense=True, act_bits=8)), data.train_x[:256], data.train_y[:256], steps=4)


class TestConformance(QATConformance):
    algorithm_name = "slb"
    make_network = staticmethod(make_lenet)
    make_input = staticmethod(make_input)
    train_steps = staticmethod(few_steps)
    quantize_config = {"weight_bits": 2, "include_dense": True, "act_bits": 8}


class TestConformanceOneBitConvOnly(QATConformance):
    algorithm_name = "SlbQuantAwareTraining"
    make_network = staticmethod(make_lenet)
    make_input = staticmethod(make_input)
    quantize_config = {"weight_bits": 1}


def test_registered_class_and_aliases():
    assert SLB is SlbQuantAwareTraining
    assert gscore.get("slb_qat") is SLB


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_search_starts_at_round_to_nearest_of_the_pretrained_weights(pretrained, bits):
    path, _ = pretrained
    float_w = load_pretrained(path).conv2.weight.asnumpy()
    net = SLB(SLBConfig(weight_bits=bits)).apply(load_pretrained(path))
    source = net.conv2.weight_source
    net.set_train(False)
    hard = source().asnumpy()
    alpha = source.alpha.asnumpy().reshape(-1, 1, 1, 1)
    values = levels(bits)
    nearest = values[np.abs(float_w[..., None] / alpha[..., None] - values).argmin(-1)] * alpha
    np.testing.assert_allclose(hard, nearest, rtol=1e-6)
    if bits > 1:  # alpha = max|w| per channel: every weight is within half a step of its level
        assert np.all(np.abs(hard - float_w) <= alpha * (values[1] - values[0]) / 2 * (1 + 1e-5))
    else:  # the sign survives, scaled by mean|w|
        np.testing.assert_array_equal(np.sign(hard), np.sign(float_w))


def test_pretrained_init_keeps_accuracy_that_random_init_throws_away(digits, pretrained):
    path, float_accuracy = pretrained
    x, y = digits.test_x[:500], digits.test_y[:500]
    kept = SLB(SLBConfig(weight_bits=4, include_dense=True)).apply(load_pretrained(path))
    assert top1_accuracy(predict_logits(kept, x), y) > float_accuracy - 0.03
    thrown = SLB(SLBConfig(weight_bits=4, include_dense=True, init_from_pretrained=False)).apply(load_pretrained(path))
    assert top1_accuracy(predict_logits(thrown, x), y) < 0.3


@pytest.mark.slow
def test_two_bit_search_learns_and_deploys_packed_with_identical_outputs(digits, pretrained, tmp_path):
    path, _ = pretrained
    net = load_pretrained(path)
    algo = SLB(SLBConfig(weight_bits=2, include_dense=True, act_bits=8))
    algo.apply(net)
    train_with_schedule(net, algo, digits.train_x, digits.train_y, steps=150)
    x, y = digits.test_x[:500], digits.test_y[:500]
    hard = predict_logits(net, x)
    assert top1_accuracy(hard, y) > 0.85

    with kernels.forced(kernels.PORTABLE):
        algo.convert(net)
    np.testing.assert_array_equal(predict_logits(net, x), hard)
    path = tmp_path / "deployed.ckpt"
    save_checkpoint(net, path, algo.describe(net))
    native = SLB(SLBConfig(weight_bits=2, include_dense=True, act_bits=8))
    native_net = native.convert(native.apply(make_lenet()), ckpt_path=path)
    if kernels.enabled():
        assert native_layers(native_net) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert_native_deploy_close(predict_logits(native_net, x), hard)
    fc1 = net.fc1.weight_source
    assert isinstance(fc1, PackedWeight) and isinstance(net.fc1.input_quant, ActivationQuantizer)
    packed = fc1.packed.asnumpy()
    assert packed.dtype == np.uint8 and packed.shape == (120, 256 // 4)  # 4 two-bit codes per byte
    weight = fc1().asnumpy()
    alpha = fc1.scale.asnumpy()[:, None]
    codes = unpack_bits(packed, 2, 256)
    np.testing.assert_array_equal(weight, levels(2)[codes] * alpha)  # exactly on the 4-value grid
    assert max(len(np.unique(row)) for row in weight) <= 4


def test_model_train_callback_drives_the_temperature(digits):
    from mindspore import dataset as ds
    from mindspore.train import Model

    cfg = SLBConfig(weight_bits=1, t_start=1.0, t_end=16.0, t_start_time=0.0, t_end_time=0.75)
    algo = SLB(cfg)
    net = algo.apply(make_lenet())
    data = ds.NumpySlicesDataset({"x": digits.train_x[:96], "y": digits.train_y[:96]}, shuffle=False).batch(32)
    model = Model(net, nn.CrossEntropyLoss(), nn.Adam(net.trainable_params(), 1e-3))
    model.train(1, data, callbacks=algo.callbacks(net, total_steps=4), dataset_sink_mode=False)
    # three steps ran: the last applied step 2 of 4, p = 0.5 -> T = 16 ** (0.5 / 0.75)
    assert float(net.conv1.weight_source.temperature.asnumpy()) == pytest.approx(16 ** (2 / 3), rel=1e-5)
    assert not net.conv1.weight_source.hard
    TemperatureSchedule(cfg, 4).apply(net, 3)
    assert net.conv2.weight_source.hard


def test_schedule_is_flat_then_geometric_then_hard():
    schedule = TemperatureSchedule(SLBConfig(t_start=2.0, t_end=200.0, t_start_time=0.2, t_end_time=0.6), total_steps=100)
    assert schedule.at(0) == (2.0, False) and schedule.at(20) == (2.0, False)
    assert schedule.at(40)[0] == pytest.approx(20.0) and not schedule.at(59)[1]
    assert schedule.at(60) == (200.0, True) and schedule.at(99) == (200.0, True)
    with pytest.raises(ValueError, match="positive int"):
        TemperatureSchedule(SLBConfig(), total_steps=0)


def test_soft_weight_approaches_the_hard_weight_as_temperature_rises(pretrained):
    path, _ = pretrained
    source = SLB(SLBConfig(weight_bits=2)).apply(load_pretrained(path)).conv1.weight_source
    source.set_train(False)
    hard = source().asnumpy()
    source.set_train(True)
    gaps = []
    for t in (1.0, 10.0, 1000.0):
        source.temperature.set_data(Tensor(np.float32(t)))
        gaps.append(np.abs(source().asnumpy() - hard).mean())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * np.abs(hard).mean()


def test_dense_layers_are_searched_by_default_and_leaving_them_float_warns_with_their_share():
    net = SLB(SLBConfig()).apply(make_lenet())
    assert all(isinstance(getattr(net, n).weight_source, SlbWeight) for n in ("conv1", "conv2", "fc1", "fc2", "fc3"))
    # LeNet5: conv 150 + 2400 weights, dense 30720 + 10080 + 840: 94.2 % of them are Dense
    with pytest.warns(UserWarning, match=r"include_dense=False leaves 94\.2% of the Conv2d/Dense weights in float \(fc1, fc2, fc3\)"):
        net = SLB(SLBConfig(include_dense=False)).apply(make_lenet())
    assert isinstance(net.conv1.weight_source, SlbWeight) and isinstance(net.fc1, nn.Dense)
    with pytest.raises(NoQuantizableLayerError, match="include_dense=True"):
        SLB(SLBConfig(include_dense=False, opname_blacklist=["conv"])).apply(make_lenet())
    with pytest.raises(NoQuantizableLayerError, match="run apply"):
        SLB().convert(make_lenet())


def test_eight_bit_activations_that_never_observed_data_are_refused_by_name():
    algo = SLB(SLBConfig(weight_bits=2, act_bits=8))
    net = algo.apply(make_lenet())
    with pytest.raises(CalibrationDataError, match=r"5 activation quantizer\(s\) never observed data.*conv1\.input_quant"):
        algo.convert(net)
    net.set_train(False)
    with pytest.raises(CalibrationDataError, match=r"conv1\.input_quant"):
        net(make_input())
    net.set_train(True)
    net(make_input())
    algo.convert(net)
    assert isinstance(net.conv1.input_quant, ActivationQuantizer) and float(net.conv1.input_quant.scale.asnumpy()) != 1.0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("weight_bits", 3, "allowed: 1, 2, 4"),
        ("weight_bits", 8, "allowed: 1, 2, 4"),
        ("act_bits", 4, r"allowed: 8, None"),
        ("t_start", 0, r"t_start must be a number > 0"),
        ("t_end_time", 1.5, r"t_end_time must be a number in \[0.2, 1\]"),
        ("t_start_time", "0.1", "t_start_time must be a number"),
        ("include_dense", 1, "True or False"),
        ("act_quant_delay", -3, "int >= 0"),
    ],
)
def test_config_errors_say_what_is_allowed(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SLBConfig(**{field: value})
    with pytest.raises(ConfigError, match=message):
        SLB({field: value})
