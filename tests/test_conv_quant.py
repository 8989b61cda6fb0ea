"""RTN and PTQ quantize ``nn.Conv2d`` weights (int8 per output channel) of a real digit CNN.

LeNet5 is trained briefly on real MNIST digits, then quantized: every convolution holds int8
codes that equal numpy's ``round(w / s)`` with ``s = max|w| / 127`` per output channel (scales
rounded to the stored float32), the deployed network equals the simulated one bit for bit,
saves, and loads into a DEPLOY-mode network.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import gscore
from gscore import ConfigError, PTQConfig
from gscore.data.mnist import load_mnist_5k
from gscore.eval.classification import predict_logits, top1_accuracy
from gscore.io import load_checkpoint, save_checkpoint
from gscore.models.convnets import LeNet5
from gscore.nn.quant_conv2d import QuantConv2d, SimQuantConv2d
from gscore.train.classifier import train_classifier

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k()


@pytest.fixture(scope="module")
def trained(digits):
    """Float weights of a LeNet5 trained for one epoch on 1024 digits."""
    ms.runtime.launch_blocking()
    ms.set_seed(0)
    net = LeNet5()
    train_classifier(net, digits.train_x[:1024], digits.train_y[:1024], epochs=1, batch_size=32, learning_rate=2e-3, progress=False)
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def lenet(weights):
    net = LeNet5()
    for p in net.get_parameters():
        p.set_data(Tensor(weights[p.name]))
    net.set_train(False)
    return net


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("algorithm,config", [("rtn", {}), ("ptq", {"algo_args": QUIET}), ("ptq", {"act_quant_dtype": "int8", "algo_args": QUIET})],
                         ids=["rtn-a16w8", "ptq-a16w8", "ptq-a8w8-static"])
def test_convolutions_are_quantized_deployed_and_loaded(algorithm, config, trained, digits, tmp_path, kernel_path):
    images = digits.test_x[:500]
    reference = predict_logits(lenet(trained), images)
    accuracy = top1_accuracy(reference, digits.test_y[:500])
    assert accuracy > 0.5  # it learned something: quantization error is measured on a real classifier

    net = lenet(trained)
    algo = gscore.get(algorithm)(PTQConfig(**config))
    datasets = [digits.train_x[i : i + 64] for i in range(0, 256, 64)] if "act_quant_dtype" in config else None
    algo.apply(net, datasets=datasets)
    assert isinstance(net.conv1, SimQuantConv2d) and isinstance(net.conv2, SimQuantConv2d)
    simulated = predict_logits(net, images)
    algo.convert(net)
    deployed = predict_logits(net, images)
    if "act_quant_dtype" in config:  # integer matmuls of the dense layers: float summation order differs
        assert rel_err(deployed, simulated) < 1e-3
    elif kernel_path == "portable":
        np.testing.assert_array_equal(deployed, simulated)  # the same ops in the same order
    else:
        np.testing.assert_allclose(deployed, simulated, rtol=1e-5, atol=1e-5)  # native kernels sum in another order
    assert rel_err(deployed, reference) < (0.02 if "act_quant_dtype" not in config else 0.05)
    assert top1_accuracy(deployed, digits.test_y[:500]) >= accuracy - 0.02

    for name in ("conv1", "conv2"):
        cell, w = getattr(net, name), trained[f"{name}.weight"]
        assert isinstance(cell, QuantConv2d) and cell.weight.dtype == ms.int8 and cell.weight.shape == w.shape
        scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0).astype(np.float32)
        np.testing.assert_array_equal(cell._weight_quantizer.scale.asnumpy(), scale)
        codes = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
        np.testing.assert_array_equal(cell.weight.asnumpy(), codes)
    description = algo.describe(net)
    assert description["layers"]["conv1"]["kind"] == "conv2d weight"

    path = save_checkpoint(net, tmp_path / "lenet.ckpt", description=description)
    fresh = LeNet5()
    deploy = gscore.get(algorithm)(PTQConfig(mode="deploy", **{k: v for k, v in config.items() if k != "algo_args"}))
    deploy.convert(deploy.apply(fresh))
    assert isinstance(fresh.conv1, QuantConv2d)
    load_checkpoint(path, fresh)
    np.testing.assert_array_equal(predict_logits(fresh, images), deployed)


def test_a_per_group_config_names_the_convolution_it_cannot_quantize(trained):
    config = PTQConfig(weight_quant_dtype="int4", weight_quant_granularity="per_group", group_size=64, algo_args=QUIET)
    with pytest.raises(ConfigError, match=r"Conv2d layers \['conv1', 'conv2'\]: .*int8 per output channel only.*opname_blacklist"):
        gscore.get("ptq")(config).apply(lenet(trained))
    net = lenet(trained)
    blacklisted = PTQConfig(weight_quant_dtype="int4", weight_quant_granularity="per_group", group_size=64, opname_blacklist=["conv"], algo_args=QUIET)
    gscore.get("ptq")(blacklisted).apply(net)
    assert not isinstance(net.conv1, SimQuantConv2d)
