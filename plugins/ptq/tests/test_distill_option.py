"""``algo_args["distill_epochs"]`` on real SmolLM2 layers: convert tunes the deployed weight scales
toward the float model, the checkpoint carries them, and misuse is refused before anything runs."""

import numpy as np
import pytest
from mindspore import Tensor

import gscore
from gscore import PTQConfig
from gscore.calib.distill import weight_scales
from gscore.calib.network_helper import NetworkHelper
from gscore.errors import CalibrationDataError, ConfigError, GscoreWarning, MissingHelperMethodError
from gscore.eval.perplexity import log_softmax
from gscore.io import load_checkpoint, save_checkpoint
from gscore.models.llama_helper import LlamaHelper

PTQ = gscore.get("ptq")
W4 = {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128}


def mean_kl(net, windows, teacher_net) -> float:
    """KL(teacher_net || net) per token, averaged over the windows (float64 log-probabilities)."""
    helper = LlamaHelper()
    values = []
    for window in windows:
        t = log_softmax(helper.logits(teacher_net, window).asnumpy())
        s = log_softmax(helper.logits(net, window).asnumpy())
        values.append(float((np.exp(t) * (t - s)).sum(-1).mean()))
    return float(np.mean(values))


def quantized(make_llama, windows, **algo_args):
    net = make_llama(layers=1)
    algo = PTQ(PTQConfig(**W4, algo_args={"progress": False, **algo_args}))
    algo.apply(net, LlamaHelper(), datasets=windows)
    algo.convert(net)
    return net, algo


def test_distillation_lowers_the_kl_to_the_float_model_and_the_checkpoint_keeps_it(make_llama, windows, tmp_path):
    calibration, _ = windows
    float_net = make_llama(layers=1)
    plain, plain_algo = quantized(make_llama, calibration)
    tuned, algo = quantized(make_llama, calibration, distill_epochs=3, distill_learning_rate=5e-3)
    assert plain_algo.distillation is None
    record = algo.distillation
    assert record.epochs == 3 and len(record.kl_per_epoch) == 3 and not record.diverged
    assert record.trained_scales == sum(p.size for p in weight_scales(tuned))
    assert mean_kl(tuned, calibration, float_net) < 0.95 * mean_kl(plain, calibration, float_net)
    codes = {p.name: p.asnumpy() for p in plain.get_parameters() if p.name.endswith(".weight")}
    assert all(np.array_equal(p.asnumpy(), codes[p.name]) for p in tuned.get_parameters() if p.name in codes)  # RTN codes kept

    ckpt = save_checkpoint(tuned, tmp_path / "tuned.ckpt", description=algo.describe(tuned))
    deployed = make_llama(layers=1)
    deploy = PTQ(PTQConfig(mode="deploy", **W4))
    deploy.convert(deploy.apply(deployed, LlamaHelper()))
    load_checkpoint(ckpt, deployed)
    ids = Tensor(calibration[:1])
    np.testing.assert_array_equal(deployed(ids, 0).asnumpy(), tuned(ids, 0).asnumpy())


@pytest.mark.parametrize(
    ("algo_args", "error"),
    [
        ({"distill_epochs": -1}, "distill_epochs"),
        ({"distill_epochs": 1.5}, "distill_epochs"),
        ({"distill_epochs": 1, "distill_learning_rate": 0.0}, "distill_learning_rate"),
        ({"distill_epochs": 1, "distill_learning_rate": 2.0}, "distill_learning_rate"),
        ({"distill_epochs": 1, "distill_samples": -1}, "distill_samples"),
        ({"distill_epochs": 1, "distill_samples": 2.5}, "distill_samples"),
    ],
)
def test_bad_distillation_settings_are_refused(algo_args, error):
    with pytest.raises(ConfigError, match=error):
        PTQ(PTQConfig(**W4, algo_args=algo_args))


@pytest.mark.parametrize(("key", "value"), [("distill_learning_rate", 1), ("distill_samples", 1), ("calibrate_on_samples", True)])
def test_a_distillation_setting_without_epochs_warns_that_it_does_nothing(key, value):
    with pytest.warns(GscoreWarning, match=f"{key}.*no effect"):
        PTQ(PTQConfig(**W4, algo_args={key: value}))


def test_calibrating_on_samples_without_sampled_windows_warns_that_it_does_nothing():
    with pytest.warns(GscoreWarning, match="calibrate_on_samples.*no effect.*distill_samples > 0"):
        PTQ(PTQConfig(**W4, algo_args={"distill_epochs": 1, "calibrate_on_samples": True}))


class CountingHelper(LlamaHelper):
    """Records how many windows each calibration pass starts from."""

    def __init__(self) -> None:
        super().__init__()
        self.calibrated_windows: list[int] = []

    def block_inputs(self, network, datasets):
        self.calibrated_windows.append(len(datasets))
        return super().block_inputs(network, datasets)


@pytest.mark.parametrize("on_samples", [False, True])
def test_the_sampled_windows_feed_the_calibration_statistics_only_when_asked(make_llama, windows, on_samples):
    calibration, _ = windows
    helper = CountingHelper()
    algo = PTQ(PTQConfig(**W4, precision_recovery="gptq", algo_args={"distill_epochs": 1, "distill_samples": 2, "calibrate_on_samples": on_samples, "progress": False}))
    algo.apply(make_llama(layers=1), helper, datasets=calibration)
    assert helper.calibrated_windows == [len(calibration) + 2 * on_samples]


def test_windows_the_float_model_samples_join_the_calibration_windows(make_llama, windows):
    calibration, _ = windows
    _, algo = quantized(make_llama, calibration, distill_epochs=1, distill_samples=3)
    record = algo.distillation
    assert record.samples == len(calibration) + 3 and not record.diverged and len(record.kl_per_epoch) == 1

    class NoGenerate(NetworkHelper):
        def blocks(self, network):
            return LlamaHelper().blocks(network)

        def logits(self, network, sample):
            return LlamaHelper().logits(network, sample)

    with pytest.raises(MissingHelperMethodError, match="generate"):
        PTQ(PTQConfig(**W4, algo_args={"distill_epochs": 1, "distill_samples": 1, "progress": False})).apply(make_llama(layers=1), NoGenerate(), datasets=calibration)

    net = make_llama(layers=1)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    with pytest.raises(CalibrationDataError, match="distill_samples.*tokens > 8"):  # too short to hold a prompt and its continuation
        PTQ(PTQConfig(**W4, algo_args={"distill_epochs": 1, "distill_samples": 1, "progress": False})).apply(net, LlamaHelper(), datasets=calibration[:, :8])
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in net.get_parameters())


def test_distillation_needs_data_and_a_helper_that_gives_logits(make_llama, windows):
    calibration, _ = windows
    algo = PTQ(PTQConfig(**W4, algo_args={"distill_epochs": 1, "progress": False}))
    with pytest.raises(CalibrationDataError, match="distillation"):
        algo.apply(make_llama(layers=1), LlamaHelper())

    class NoLogits(NetworkHelper):
        def blocks(self, network):
            return LlamaHelper().blocks(network)

    net = make_llama(layers=1)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    with pytest.raises(MissingHelperMethodError, match="logits"):
        PTQ(PTQConfig(**W4, algo_args={"distill_epochs": 1, "progress": False})).apply(net, NoLogits(), datasets=calibration)
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in net.get_parameters())


def test_a_config_without_quantized_weights_warns_and_does_not_distil(make_llama):
    with pytest.warns(GscoreWarning, match="distill_epochs.*no effect"):
        algo = PTQ(PTQConfig(weight_quant_dtype=None, kvcache_quant_dtype="int8", kvcache_quant_granularity="per_token",
                             algo_args={"distill_epochs": 1, "progress": False}))
    net = make_llama(layers=1)
    algo.apply(net, LlamaHelper())  # dynamic KV int8 needs no data, and nothing asks for it
    algo.convert(net)
    assert algo.distillation is None
