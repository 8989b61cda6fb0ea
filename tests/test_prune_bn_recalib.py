"""BatchNorm recalibration: moving statistics re-estimated from data, nothing else changed."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from gscore.data.mnist import load_mnist_5k
from gscore.models.convnets import LeNet5
from gscore.nn.bn_recalib import recalibrate_batchnorm

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
    recalibrate_batchnorm(net, images, batch_size=100, batches=80)
    np.testing.assert_allclose(net.bn.moving_mean.asnumpy(), features.mean(axis=(0, 2, 3)), rtol=0.05, atol=0.01)
    np.testing.assert_allclose(net.bn.moving_variance.asnumpy(), features.var(axis=(0, 2, 3)), rtol=0.1, atol=0.01)
    np.testing.assert_array_equal(net.conv.weight.asnumpy(), weight)
    assert not net.training and not net.bn.training and not net.drop.training


def test_a_network_without_batchnorm_or_too_few_images_is_an_error():
    images = np.zeros((8, 28, 28), np.float32)
    with pytest.raises(ValueError, match="LeNet5 has no BatchNorm2d"):
        recalibrate_batchnorm(LeNet5(), images)
    with pytest.raises(ValueError, match="at least one batch of images"):
        recalibrate_batchnorm(ConvNorm(), images, batch_size=64)
