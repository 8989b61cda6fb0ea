"""Recalibration after pruning: BatchNorm statistics and BN-free output statistics re-measured from data."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from gscore.data.mnist import load_mnist_5k
from gscore.models.convnets import LeNet5
from gscore.nn.bn_recalib import recalibrate_batchnorm, recalibrate_outputs
from gscore.nn.shrink import plan_from_groups, shrink
from gscore.nn.trace import channel_groups
from gscore.train.classifier import train_classifier

ms.runtime.launch_blocking()  # synchronous dispatch: much faster for small networks on 2 cores


class ConvNorm(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, has_bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(p=0.5)

    def construct(self, x):
        return self.drop(self.bn(self.conv(ms.ops.expand_dims(x, 1))))


def test_moving_statistics_become_those_of_the_data_and_weights_stay():
    images = load_mnist_5k().train_x[:1000]
    ms.set_seed(0)
    net = ConvNorm()
    net.bn.moving_mean.set_data(Tensor(np.full(4, 5.0, np.float32)))  # stale statistics
    net.bn.moving_variance.set_data(Tensor(np.full(4, 9.0, np.float32)))
    weight = net.conv.weight.asnumpy().copy()
    features = net.conv(Tensor(np.expand_dims(images, 1))).asnumpy()
    assert recalibrate_batchnorm(net, images, batch_size=100, batches=10) == 1000
    np.testing.assert_allclose(net.bn.moving_mean.asnumpy(), features.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.bn.moving_variance.asnumpy(), features.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(net.conv.weight.asnumpy(), weight)
    assert not net.training and not net.bn.training and not net.drop.training


def test_a_network_without_batchnorm_or_too_few_images_is_an_error():
    images = np.zeros((8, 28, 28), np.float32)
    with pytest.raises(ValueError, match="LeNet5 has no BatchNorm2d"):
        recalibrate_batchnorm(LeNet5(), images)
    with pytest.raises(ValueError, match="at least one batch of images"):
        recalibrate_batchnorm(ConvNorm(), images, batch_size=64)


def _output_statistics(net, names, images):
    outputs = {name: [] for name in names}
    handles = [getattr(net, name).register_forward_hook(lambda cell, i, o, n=name: outputs[n].append(o.asnumpy())) for name in names]
    net.set_train(False)
    net(Tensor(images))
    for handle in handles:
        handle.remove()
    stats = {}
    for name, chunks in outputs.items():
        values = np.concatenate(chunks).astype(np.float64)
        axes = (0, 2, 3) if values.ndim == 4 else (0,)
        stats[name] = (values.mean(axes), values.std(axes))
    return stats


def test_a_pruned_bn_free_network_gets_the_output_statistics_of_the_unpruned_one_back():
    data = load_mnist_5k()
    ms.set_seed(0)
    net = LeNet5()
    train_classifier(net, data.train_x[:1024], data.train_y[:1024], epochs=1, batch_size=32, progress=False)
    found = channel_groups(net, data.train_x[:2])
    kept = {name: np.arange(0, g.channels, 2) for name, g in found.groups.items()}  # every other channel
    plan = plan_from_groups(found.groups, kept)
    pruned = shrink(net, plan)
    layers = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    images = data.train_x[:500]
    before = _output_statistics(pruned, layers, images)
    changed = recalibrate_outputs(net, pruned, layers, images, {n: c.out_keep for n, c in plan.cuts.items()})
    assert changed == layers
    want, got = _output_statistics(net, layers, images), _output_statistics(pruned, layers, images)
    for name in layers:
        keep = kept.get(name, slice(None))
        np.testing.assert_allclose(got[name][0], want[name][0][keep], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[name][1], want[name][1][keep], rtol=1e-3, atol=1e-4)
    assert not np.allclose(before["fc3"][1], want["fc3"][1], rtol=0.05)  # pruning had changed them
    np.testing.assert_array_equal(pruned.conv1.weight.asnumpy(), net.conv1.weight.asnumpy()[kept["conv1"]])  # first layer unaffected
