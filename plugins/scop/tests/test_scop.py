"""SCOP end to end on real MNIST digits and the real digit networks (CPU)."""

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import CalibrationDataError, ConfigError, PTQConfig
from gscore.data.mnist import load_mnist_5k
from gscore.eval.classification import mean_cross_entropy, predict_logits, top1_accuracy
from gscore.io import read_description, save_checkpoint
from gscore.models.convnets import DigitsResNet, LeNet5
from gscore.nn.cost import count_parameters
from gscore.nn.quant_linear import QuantLinear
from gscore.nn.trace import UnsupportedStructureError
from gscore.nn.walk import get_cell
from gscore.testing.conformance import AlgorithmConformance
from gscore.train.classifier import train_classifier
from gscore_scop import KnockoffSCOPConfig, Ranking, SCOPConfig, Selection, load_pruned
from gscore_scop.knockoff import KnockoffConv2d, knockoff_params, new_coefficients, train_knockoff
from gscore_scop.scoring import channel_scale, channel_scores, select_channels

ms.runtime.launch_blocking()  # synchronous dispatch: several times faster for small networks on 2 cores

SCOP = gscore.get("scop")


class TestConformance(AlgorithmConformance):
    algorithm_name = "scop"


class TestKnockoffConformance(AlgorithmConformance):
    algorithm_name = "scop-knockoff"


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k()


def accuracy(net, data, n=500):
    return top1_accuracy(predict_logits(net, data.test_x[:n]), data.test_y[:n])


# ---------------------------------------------------------------------- config and scoring (no MindSpore run)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"prune_rate": 1.0}, r"prune_rate must be a number in \[0, 1\)"),
        ({"prune_rate": -0.1}, r"prune_rate must be a number in \[0, 1\)"),
        ({"prune_rate": "0.5"}, r"prune_rate must be a number"),
        ({"selection": "network"}, "selection: 'network' is not valid; choose one of 'layer', 'global'"),
        ({"min_channels": 0}, "min_channels must be an int >= 1"),
        ({"knockoff_learning_rate": 0}, "knockoff_learning_rate must be a number > 0"),
        ({"layers": "conv1"}, "layers must be a list of non-empty strings"),
        ({"ranking": "magnitude"}, "ranking: 'magnitude' is not valid; choose one of 'knockoff', 'reconstruction'"),
        ({"selection": "global", "prune_rate": 0.5}, r"ranking='reconstruction' .* needs selection='layer' \(selection='global' works with ranking='knockoff'\)"),
        ({"reconstruct_images": 0, "prune_rate": 0.5}, r"ranking='reconstruction' .* needs reconstruct_images > 0 \(to prune without the refit, use ranking='knockoff'\)"),
        ({"knockoff_epochs": 0}, "knockoff_epochs=0: options of the knockoff stage, which ranking='reconstruction' .* does not run; set ranking='knockoff'"),
        ({"knockoff_separation": 0.5, "knockoff_learning_rate": 0.1}, "knockoff_learning_rate=0.1, knockoff_separation=0.5: options of the knockoff stage"),
    ],
)
def test_config_rejects_bad_values_and_says_what_is_allowed(cfg, message):
    with pytest.raises(ConfigError, match=message):
        SCOPConfig(**cfg)


def test_config_accepts_its_dict_form_and_strings():
    cfg = SCOPConfig(prune_rate=0.5, ranking="KNOCKOFF", selection="GLOBAL", layers=("a",))
    assert cfg.selection is Selection.GLOBAL and cfg.ranking is Ranking.KNOCKOFF and cfg.layers == ["a"]
    assert SCOP({"prune_rate": 0.5, "ranking": "knockoff", "selection": "global", "layers": ["a"]}).config == cfg


def test_scop_ranks_for_the_refit_by_default_and_the_golden_stick_names_keep_knockoff():
    """``scop`` defaults to the ranking that beat the baselines (bench/results/scop_*_runs.md);
    Golden Stick's names stand for its knockoff algorithm and keep it, knockoff options included."""
    assert SCOP().config.ranking is Ranking.RECONSTRUCTION
    for name in ("scop-knockoff", "PrunerKfCompressAlgo", "PrunerFtCompressAlgo"):
        algo = gscore.get(name)({"prune_rate": 0.5, "knockoff_epochs": 2})
        assert isinstance(algo, SCOP) and isinstance(algo.config, KnockoffSCOPConfig)
        assert (algo.config.ranking, algo.config.knockoff_epochs) == (Ranking.KNOCKOFF, 2)
    with pytest.raises(ConfigError, match="KnockoffSCOP takes a KnockoffSCOPConfig"):
        gscore.get("PrunerKfCompressAlgo")(SCOPConfig(prune_rate=0.5))


def test_scores_are_the_channel_scale_times_2k_minus_1():
    np.testing.assert_allclose(channel_scores(np.array([0.5, 1.0, 0.25]), np.array([3.0, 2.0, 4.0])), [0.0, 2.0, -2.0])


def test_channel_scale_is_abs_gamma_or_the_filter_norm_summed_over_a_group():
    weight = np.zeros((2, 1, 2, 2))
    weight[0, 0, 0, 0], weight[1, 0] = 3.0, [[1.0, 1.0], [1.0, 1.0]]  # L2 norms 3 and 2
    np.testing.assert_allclose(channel_scale([None], [weight]), [3.0, 2.0])
    np.testing.assert_allclose(channel_scale([np.array([-0.5, 0.25])], [weight]), [0.5, 0.25])
    np.testing.assert_allclose(channel_scale([np.array([-0.5, 0.25]), None], [weight, weight]), [3.5, 2.25])


def test_layer_selection_drops_int_rate_times_c_lowest_of_each_layer():
    scores = {"a": np.array([0.3, -1.0, 0.9, 0.1, 0.5]), "b": np.array([5.0, 4.0])}
    kept = select_channels(scores, 0.5, Selection.LAYER, min_channels=1)
    np.testing.assert_array_equal(kept["a"], [0, 2, 4])  # int(2.5) = 2 lowest (-1.0, 0.1) go
    np.testing.assert_array_equal(kept["b"], [0])


def test_global_selection_drops_the_lowest_over_all_layers_but_keeps_min_channels():
    scores = {"a": np.array([0.1, 0.2, 0.3, 0.4]), "b": np.array([5.0, 6.0, 7.0, 8.0])}
    kept = select_channels(scores, 0.5, Selection.GLOBAL, min_channels=1)
    np.testing.assert_array_equal(kept["a"], [3])  # 4 of 8 go; all from "a" but one stays
    np.testing.assert_array_equal(kept["b"], [0, 1, 2, 3])
    kept = select_channels(scores, 0.25, Selection.GLOBAL, min_channels=1)
    np.testing.assert_array_equal(kept["a"], [2, 3])


# ---------------------------------------------------------------------- knockoff cell


def test_knockoff_mixes_the_real_half_in_training_and_is_the_plain_conv_in_eval():
    ms.set_seed(0)
    conv = nn.Conv2d(1, 3, 3)
    cell = KnockoffConv2d(conv, new_coefficients("conv", 3))
    k = np.array([0.0, 0.5, 1.0], np.float32)
    cell.kfscale.set_data(Tensor(k.reshape(1, 3, 1, 1)))
    x = np.random.default_rng(0).random((4, 1, 6, 6)).astype(np.float32)
    plain = conv(Tensor(x)).asnumpy()
    cell.set_train(False)
    np.testing.assert_array_equal(cell(Tensor(x)).asnumpy(), plain)
    cell.set_train(True)
    mixed = cell(Tensor(x)).asnumpy()
    kk = k.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(mixed[:2], kk * plain[:2] + (1 - kk) * plain[2:], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mixed[2:], plain[2:])


def test_knockoff_coefficients_stay_in_zero_one_and_separation_drives_them_apart(digits):
    """Unbounded, Adam walked every coefficient up by the same 0.01 per step (issue 14); projected
    onto [0, 1] they stop at the bounds, and the ramped cost sends the useless ones to 0."""
    ms.set_seed(0)
    net = LeNet5()
    train_classifier(net, digits.train_x[:1024], digits.train_y[:1024], epochs=1, batch_size=32, progress=False)
    algo = SCOP(SCOPConfig(ranking="knockoff", knockoff_epochs=0))
    algo.apply(net, datasets=(digits.train_x[:512], digits.train_y[:512]))
    train_knockoff(net, algo.coefficients, digits.train_x[:512], digits.train_y[:512], epochs=3, batch_size=32, learning_rate=0.05, separation=1.0, progress=False)
    k = np.concatenate([p.asnumpy().ravel() for p in knockoff_params(net)])
    assert k.min() >= 0.0 and k.max() <= 1.0
    assert np.sum(k == 1.0) >= 3 and np.sum(k == 0.0) >= 1, np.round(k, 3)


def test_a_residual_group_shares_one_set_of_coefficients(digits):
    net = DigitsResNet((4, 8, 8))
    algo = SCOP(SCOPConfig(ranking="knockoff", knockoff_epochs=0))
    algo.apply(net, datasets=(digits.train_x[:4], digits.train_y[:4]))
    assert algo.groups["layers.1.conv2"].producers == ("layers.1.conv2", "layers.1.downsample.0")
    assert net.layers[1].conv2.kfscale is net.layers[1].downsample[0].kfscale
    assert len(knockoff_params(net)) == len(algo.groups) == 6


# ---------------------------------------------------------------------- structure errors


def test_naming_one_convolution_of_a_residual_group_prunes_the_whole_group(digits):
    algo = SCOP(SCOPConfig(prune_rate=0.5, layers=["layers.1.downsample.0"], recalibrate_batches=1))
    net = DigitsResNet((4, 8, 8))
    algo.apply(net, datasets=(digits.train_x[:8], digits.train_y[:8]))
    assert list(algo.groups) == ["layers.1.conv2"] and algo.skipped["layers.2.conv1"] == "not listed in layers"
    pruned = algo.convert(net)
    assert pruned.layers[1].conv2.out_channels == pruned.layers[1].downsample[0].out_channels == pruned.layers[2].conv1.in_channels == 4


class PReLUNet(nn.Cell):
    """conv -> PReLU (per-channel parameters the tracer cannot cut) -> conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.act = nn.PReLU(4)
        self.conv2 = nn.Conv2d(4, 2, 3)
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(2 * 28 * 28, 10)

    def construct(self, x):
        return self.fc(self.flatten(self.conv2(self.act(self.conv1(ms.ops.expand_dims(x, 1))))))


def test_naming_a_convolution_that_cannot_be_pruned_is_a_clear_error(digits):
    algo = SCOP(SCOPConfig(prune_rate=0.5, layers=["conv1"]))
    with pytest.raises(UnsupportedStructureError, match=r"cannot prune conv1: it feeds act \(PReLU\), which cannot be shrunk along channels"):
        algo.apply(PReLUNet(), datasets=(digits.train_x[:4], digits.train_y[:4]))


class ConvToOutput(nn.Cell):
    """A convolution whose channels are the network output: nothing can be pruned."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 28, pad_mode="valid")
        self.flatten = nn.Flatten()

    def construct(self, x):
        return self.flatten(self.conv(ms.ops.expand_dims(x, 1)))


def test_a_network_with_nothing_prunable_is_an_error_listing_every_reason(digits):
    with pytest.raises(UnsupportedStructureError, match=r"found no convolution to prune\. conv: its channels reach the network output"):
        SCOP().apply(ConvToOutput(), datasets=(digits.train_x[:4], digits.train_y[:4]))


def test_apply_without_data_and_convert_without_apply_say_what_to_do():
    with pytest.raises(CalibrationDataError, match=r"datasets=\(images, labels\)"):
        SCOP().apply(LeNet5())
    with pytest.raises(RuntimeError, match="run apply"):
        SCOP().convert(LeNet5())


# ---------------------------------------------------------------------- pruning, checkpoint, composition


def prune_lenet(digits, rate=0.5, **cfg):
    ms.set_seed(0)
    net = LeNet5()
    algo = SCOP(SCOPConfig(prune_rate=rate, **cfg))
    algo.apply(net, datasets=(digits.train_x[:8], digits.train_y[:8]))
    return algo, net, algo.convert(net)


def test_convert_returns_a_physically_smaller_lenet_and_restores_the_original(digits):
    algo, net, pruned = prune_lenet(digits, 0.5)
    assert isinstance(net.conv1, nn.Conv2d) and net.conv1.out_channels == 6  # unwrapped, full size again
    assert (pruned.conv1.out_channels, pruned.conv2.in_channels, pruned.conv2.out_channels) == (3, 3, 8)
    assert pruned.fc1.in_channels == 8 * 16 and pruned.fc1.weight.shape == (120, 128)
    assert count_parameters(pruned) < count_parameters(net)
    assert pruned(Tensor(digits.test_x[:3])).shape == (3, 10)
    assert algo.describe()["kept_channels"] == {"conv1": 3, "conv2": 8}
    # of the layers that lost input channels, conv2 was refitted (8 images give 512 patch rows for
    # 76 unknowns), fc1 not (8 rows for 129); re-standardising every biased layer was then judged
    # on all 8 images (the refit used every one, none is held out)
    recalibration = algo.recalibration
    choice = recalibration.pop("statistics_choice")
    restandardised = {"restandardised_layers": ["conv1", "conv2", "fc1", "fc2", "fc3"]} if choice["kept"] else {}
    assert recalibration == {"reconstructed_layers": ["conv2"], "not_reconstructed": ["fc1"], **restandardised}
    assert (choice["judged_on_images"], choice["held_out"]) == (8, False)
    assert choice["kept"] == (choice["loss_with_statistics"] < choice["loss_after_refit"])


def test_convert_with_labels_outside_the_network_classes_is_a_calibration_data_error(digits):
    ms.set_seed(0)
    algo = SCOP(SCOPConfig(prune_rate=0.5))
    net = LeNet5()
    algo.apply(net, datasets=(digits.train_x[:8], np.full(8, 10)))  # LeNet5 has 10 classes: 0-9
    with pytest.raises(CalibrationDataError, match="class indices"):
        algo.convert(net)


@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_convert_keeps_the_statistics_repair_only_where_it_lowers_the_held_out_loss(digits, rate):
    """The returned network has the lower of the two cross-entropies on the images the refit did
    not use, and without the repair it is exactly the refitted network."""
    images, labels = digits.train_x[:96], digits.train_y[:96]
    networks = {}
    for batches in (0, 1):
        ms.set_seed(0)
        net = LeNet5()
        algo = SCOP(SCOPConfig(prune_rate=rate, reconstruct_images=64, recalibrate_batches=batches, knockoff_batch_size=32))
        algo.apply(net, datasets=(images, labels))
        networks[batches] = algo.convert(net)
    choice = algo.recalibration["statistics_choice"]
    assert (choice["judged_on_images"], choice["held_out"]) == (32, True)
    held_out = np.random.default_rng(0).permutation(96)[64:]
    loss = mean_cross_entropy(predict_logits(networks[1], images[held_out]), labels[held_out])
    assert loss == pytest.approx(min(choice["loss_after_refit"], choice["loss_with_statistics"]), rel=1e-6)
    if not choice["kept"]:
        x = Tensor(digits.test_x[:8])
        np.testing.assert_array_equal(networks[1](x).asnumpy(), networks[0](x).asnumpy())


class TwinChannels(nn.Cell):
    """conv1's channel 3 repeats channel 0 (same filter and bias), and those two have the largest
    filters: magnitude would keep both, though either one is redundant given the other."""

    def __init__(self) -> None:
        super().__init__()
        ms.set_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, pad_mode="valid", has_bias=True)
        self.conv2 = nn.Conv2d(4, 3, 3, pad_mode="valid", has_bias=True)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=4, stride=4)
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(3 * 6 * 6, 10)
        weight, bias = self.conv1.weight.asnumpy(), self.conv1.bias.asnumpy()
        weight[0] = 3.0 * weight[0] / np.abs(weight[0]).sum()
        weight[1:3] = weight[1:3] / np.abs(weight[1:3]).sum(axis=(1, 2, 3), keepdims=True)
        weight[3], bias[3] = weight[0], bias[0]
        self.conv1.weight.set_data(Tensor(weight))
        self.conv1.bias.set_data(Tensor(bias))

    def construct(self, x):
        x = ms.ops.expand_dims(x, 1) if x.ndim == 3 else x
        return self.fc(self.flatten(self.pool(self.relu(self.conv2(self.relu(self.conv1(x)))))))


def test_reconstruction_ranking_removes_a_redundant_channel_that_magnitude_keeps(digits):
    """ranking="reconstruction" trains no knockoff coefficients, removes one of the twins (the refit
    moves its weight onto the other), and the pruned network computes what the float one did."""
    net = TwinChannels()
    x = Tensor(digits.test_x[:32])
    want = net(x).asnumpy()
    algo = SCOP(SCOPConfig(prune_rate=0.25, ranking="reconstruction", reconstruct_images=256, recalibrate_batches=0))
    algo.apply(net, datasets=(digits.train_x[:256], digits.train_y[:256]))
    np.testing.assert_array_equal(algo.coefficients["conv1"].asnumpy(), new_coefficients("conv1", 4).asnumpy())  # no knockoff stage
    pruned = algo.convert(net)
    assert len(algo.kept["conv1"]) == 3 and {0, 3} - set(algo.kept["conv1"].tolist()) and {1, 2} <= set(algo.kept["conv1"].tolist())
    assert len(algo.kept["conv2"]) == 3  # int(0.25 * 3) = 0 removed
    np.testing.assert_allclose(pruned(x).asnumpy(), want, rtol=0, atol=1e-3 * np.abs(want).max())


def test_reconstruction_ranking_keeps_the_largest_filters_where_no_reader_can_be_refitted(digits):
    """A Dense with a fused activation is not linear in its weights: no fit ranks the channels
    it reads, so the channel scale (filter norm) does."""

    class FusedHead(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            ms.set_seed(0)
            self.conv = nn.Conv2d(1, 4, 5, stride=4, pad_mode="valid", has_bias=True)
            self.flatten = nn.Flatten()
            self.fc = nn.Dense(4 * 6 * 6, 10, activation="relu")

        def construct(self, x):
            return self.fc(self.flatten(self.conv(ms.ops.expand_dims(x, 1))))

    net = FusedHead()
    weight = net.conv.weight.asnumpy() * np.array([3.0, 0.1, 2.0, 0.2], np.float32)[:, None, None, None]
    net.conv.weight.set_data(Tensor(weight))
    algo = SCOP(SCOPConfig(prune_rate=0.5, ranking="reconstruction", reconstruct_images=64, recalibrate_batches=0))
    algo.apply(net, datasets=(digits.train_x[:64], digits.train_y[:64]))
    algo.convert(net)
    np.testing.assert_array_equal(algo.kept["conv"], [0, 2])


def test_reconstruction_ranking_prunes_residual_groups_read_by_several_layers(digits):
    """Every group of the ResNet, the residual width too (read by convolutions and the Dense head):
    the promised counts, and the refit keeps an untrained network's outputs close."""
    ms.set_seed(0)
    net = DigitsResNet((8, 16, 32))
    x = Tensor(digits.test_x[:16])
    net.set_train(False)
    want = net(x).asnumpy()
    algo = SCOP(SCOPConfig(prune_rate=0.5, ranking="reconstruction", reconstruct_images=128, recalibrate_batches=0))
    algo.apply(net, datasets=(digits.train_x[:128], digits.train_y[:128]))
    pruned = algo.convert(net)
    assert {name: len(k) for name, k in algo.kept.items()} == {name: g.channels - int(0.5 * g.channels) for name, g in algo.groups.items()}
    assert any(len(g.producers) > 1 for g in algo.groups.values())
    got = pruned(x).asnumpy()
    assert np.isfinite(got).all() and np.abs(got - want).max() < 0.5 * np.abs(want).max()


def test_checkpoint_of_the_pruned_network_rebuilds_and_loads_into_the_original_definition(digits, tmp_path: Path):
    algo, _, pruned = prune_lenet(digits, 0.3, ranking="knockoff", knockoff_epochs=0, selection="global")
    expected = pruned(Tensor(digits.test_x[:5])).asnumpy()
    path = save_checkpoint(pruned, tmp_path / "pruned.ckpt", description=algo.describe())
    assert read_description(path)["kept_channels"] == algo.describe()["kept_channels"]
    ms.set_seed(7)
    rebuilt = load_pruned(path, LeNet5())
    np.testing.assert_array_equal(rebuilt(Tensor(digits.test_x[:5])).asnumpy(), expected)


def test_a_pruned_network_quantizes_with_rtn(digits):
    _, _, pruned = prune_lenet(digits, 0.5)
    pruned.set_train(False)
    x = Tensor(digits.test_x[:16])
    reference = pruned(x).asnumpy()
    rtn = gscore.get("rtn")(PTQConfig())
    rtn.convert(rtn.apply(pruned))
    assert isinstance(pruned.fc1, QuantLinear) and pruned.fc1.weight.shape == (120, 128) and pruned.fc1.weight.dtype == ms.int8
    out = pruned(x).asnumpy()
    assert np.linalg.norm(out - reference) / np.linalg.norm(reference) < 0.02


@pytest.mark.slow
def test_pruned_resnet_has_the_promised_channels_and_fine_tunes_well_above_chance(digits):
    """Train briefly, knockoff, prune half of every channel group (outer widths too), fine-tune."""
    ms.set_seed(0)
    net = DigitsResNet((8, 16, 32))
    train_classifier(net, digits.train_x, digits.train_y, epochs=1, batch_size=32, progress=False)
    algo = SCOP(SCOPConfig(prune_rate=0.5, ranking="knockoff", knockoff_epochs=1, knockoff_batch_size=32, knockoff_separation=1.0))
    algo.apply(net, datasets=(digits.train_x[:512], digits.train_y[:512]))
    kfscales = {name: get_cell(net, group.producers[0]).kfscale.asnumpy().ravel() for name, group in algo.groups.items()}
    assert all(not np.allclose(k, 0.5) and k.min() >= 0 and k.max() <= 1 for k in kfscales.values()), "knockoff coefficients did not train"
    pruned = algo.convert(net)
    # convert refitted the consumers (the intercept of a convolution without bias moves the mean
    # of the BN after it) and kept the BN re-measure only if it lowered the held-out loss
    assert not np.allclose(pruned.layers[1].bn2.moving_mean.asnumpy(), net.layers[1].bn2.moving_mean.asnumpy()[algo.kept["layers.1.conv2"]])
    assert "layers.1.conv2" in algo.recalibration["reconstructed_layers"]
    assert ("batchnorm_batches" in algo.recalibration) == algo.recalibration["statistics_choice"]["kept"]
    assert list(algo.groups) == ["conv1", "layers.0.conv1", "layers.1.conv1", "layers.1.conv2", "layers.2.conv1", "layers.2.conv2"]
    for i, width in enumerate((8, 16, 32)):
        block = pruned.layers[i]
        assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels == width - width // 2
        assert block.conv2.out_channels == block.bn2.num_features == width - width // 2  # the residual width too
    assert pruned.conv1.out_channels == pruned.layers[0].conv1.in_channels == 4 and pruned.fc.in_channels == 16
    # two epochs on all 4000 images: one epoch on 2000 passed on an AVX2 machine but ended at
    # 0.566 on an AVX-512 one (other float rounding, same seeds), too close to the bar; this
    # setting reaches 0.83 there
    train_classifier(pruned, digits.train_x, digits.train_y, epochs=2, batch_size=32, progress=False, seed=1)
    assert accuracy(pruned, digits) > 0.6  # chance is 0.1


@pytest.mark.slow
def test_a_pruned_network_quantizes_with_simqat(digits):
    try:
        simqat = gscore.get("simqat")
    except gscore.UnknownAlgorithmError:
        pytest.skip("the gscore-simqat plugin is not installed")
    _, _, pruned = prune_lenet(digits, 0.5)
    pruned.set_train(False)
    x = Tensor(digits.test_x[:64])
    reference = pruned(x).asnumpy()
    qat = simqat()
    qat.apply(pruned)
    pruned.set_train(True)
    pruned(x)  # one training-mode forward lets the activation observers see real ranges
    qat.convert(pruned)
    params = {p.name: p for p in pruned.get_parameters()}
    assert params["conv2.weight_source.weight"].shape == (8, 3, 5, 5) and params["conv2.weight_source.weight"].dtype == ms.int8
    pruned.set_train(False)
    out = pruned(x).asnumpy()
    assert np.linalg.norm(out - reference) / np.linalg.norm(reference) < 0.05
