"""Weight-scale distillation (gscore.calib.distill) and the ops path it trains on (gscore.nn.ops_path).

The ops path must compute exactly what a network built without kernels computes (same cells,
same ops, same parameters) and give every kernel back afterwards, also after an error. The
tuning must lower the KL to the teacher on its own samples while touching nothing but the
weight scales, and keep the untuned scales when it diverges.
"""

from __future__ import annotations

import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from gscore import kernels
from gscore.calib.distill import PROMPT_TOKENS, SAMPLE_BATCH, sampled_windows, teacher_log_probs, tune_weight_scales, weight_scales
from gscore.eval.perplexity import log_softmax
from gscore.errors import ConfigError, GscoreWarning
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.linear_view import linear_view
from gscore.nn.ops_path import ops_path
from gscore.nn.passes import WeightSpec, quantize_network, simulated_linear
from gscore.nn.quantizers import DynamicInputQuantizer, StaticInputQuantizer
from gscore.testing.tiny_llama import random_llama

CASES = {
    "w8": (WeightSpec(), lambda: None, False),
    "w4-g32": (WeightSpec(bits=4, group_size=32, symmetric=False), lambda: None, False),
    "a8w8-static-smooth": (WeightSpec(), lambda: StaticInputQuantizer(0.02, 5.0), True),
    "a8w4-g32-dynamic-smooth": (WeightSpec(bits=4, group_size=32, symmetric=False), DynamicInputQuantizer, True),
}
LEVEL = kernels.supported_levels()[0]


class TwoLayers(nn.Cell):
    """Two quantizable layers with a nonlinearity between them: the gradient into the first
    layer's scales passes through the second. The logits are sharpened (x 8) so that the
    quantization error, not the float16 rounding of the teacher, dominates the KL."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Dense(96, 64, has_bias=True)
        self.second = nn.Dense(64, 10, has_bias=True)

    def construct(self, x):
        return self.second(ms.ops.relu(self.first(x))) * 8.0


def deployed(name: str, choice: str, seed: int = 7) -> TwoLayers:
    """The two layers deployed under kernel level ``choice`` (``portable``: no kernels)."""
    spec, input_quantizer, smoothed = CASES[name]
    ms.set_seed(seed)
    net = TwoLayers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced(choice):
            for attr, width in (("first", 96), ("second", 64)):
                smooth = np.linspace(0.5, 2.0, width).astype(np.float32) if smoothed else None
                setattr(net, attr, simulated_linear(linear_view(getattr(net, attr)), spec, input_quantizer=input_quantizer(), smooth_scale=smooth))
            quantize_network(net)
    return net


@pytest.fixture(scope="module", autouse=True)
def _blocking():
    ms.runtime.launch_blocking()


def inputs(seed: int, rows: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 96)).astype(np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_ops_path_computes_what_a_kernel_free_network_computes_and_gives_the_kernels_back(name):
    x = Tensor(inputs(0))
    native, portable = deployed(name, LEVEL), deployed(name, "portable")
    kernels_before = [cell.native for cell in (native.first, native.second)]
    before = native(x).asnumpy()
    with ops_path(native):
        assert native.first.native is None and native.second.native is None and not native.first.smooths_in_kernel
        np.testing.assert_array_equal(native(x).asnumpy(), portable(x).asnumpy())
    assert [cell.native for cell in (native.first, native.second)] == kernels_before
    assert native.first.smooths_in_kernel == (CASES[name][2] and LEVEL != "portable")
    np.testing.assert_array_equal(native(x).asnumpy(), before)


@pytest.mark.parametrize("name", ["a8w8-static-smooth", "a8w4-g32-dynamic-smooth"])
def test_on_the_ops_path_gradients_pass_the_input_rounding_straight_through(name):
    """d sum(y) / dx of one deployed layer with a quantized input is, through the straight-through
    rounding, what the float matmul with the dequantized weight gives: ones @ (W * smooth)."""
    net = deployed(name, LEVEL)
    layer = net.first
    x = Tensor(inputs(1))
    weight = (layer._weight_quantizer.dequantize(layer.codes()).asnumpy() * layer.smooth_scale.asnumpy()[None, :]).astype(np.float64)
    with ops_path(net):
        grad = ms.grad(lambda t: layer(t).sum())(x).asnumpy()
    np.testing.assert_allclose(grad, np.ones((6, 64)) @ weight, rtol=1e-4, atol=1e-5 * np.abs(weight).max())
    assert not layer._input_quantizer.straight_through


def test_ops_path_gives_the_kernels_back_after_an_error():
    net = deployed("a8w8-static-smooth", LEVEL)
    kernel, level_before = net.first.native, kernels.level()
    with pytest.raises(RuntimeError, match="inside"):
        with ops_path(net):
            assert kernels.level() == kernels.PORTABLE  # cells built inside get no kernel either
            raise RuntimeError("inside")
    assert net.first.native is kernel and net.first.smooths_in_kernel
    assert kernels.level() == level_before


def kl(net: nn.Cell, samples: list[np.ndarray], teacher: list[np.ndarray]) -> float:
    """Mean KL(teacher || net) over samples, in float64."""
    values = []
    for x, t in zip(samples, teacher):
        p = np.exp(t.astype(np.float64))
        values.append(float((p * (t - log_softmax(net(Tensor(x)).asnumpy()))).sum(-1).mean()))
    return float(np.mean(values))


def float_teacher(samples: list[np.ndarray]) -> list[np.ndarray]:
    ms.set_seed(7)
    reference = TwoLayers()
    return teacher_log_probs(lambda x: reference(Tensor(x)), samples)


@pytest.mark.parametrize("name", ["w8", "w4-g32", "a8w4-g32-dynamic-smooth"])
def test_tuning_lowers_the_kl_and_changes_only_the_weight_scales(name):
    samples = [inputs(seed) for seed in range(4)]
    teacher = float_teacher(samples)
    net = deployed(name, LEVEL)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    kl_before = kl(net, samples, teacher)
    result = tune_weight_scales(net, lambda x: net(Tensor(x)), samples, teacher, epochs=6, learning_rate=0.002)
    assert not result.diverged and len(result.kl_per_epoch) == 6
    assert result.trained_scales == sum(p.size for p in weight_scales(net))
    assert kl(net, samples, teacher) < 0.95 * kl_before
    changed = {p.name for p in net.get_parameters() if not np.array_equal(p.asnumpy(), before[p.name])}
    assert changed == {p.name for p in weight_scales(net)}
    assert not any(p.requires_grad for p in weight_scales(net))
    assert net.first.native is not None or LEVEL == "portable"


def test_a_diverging_run_keeps_the_untuned_scales_and_says_so():
    samples = [inputs(seed) for seed in range(2)]
    teacher = float_teacher(samples)
    net = deployed("w4-g32", LEVEL)
    untuned = [p.asnumpy().copy() for p in weight_scales(net)]
    with pytest.warns(GscoreWarning, match="diverged"):
        result = tune_weight_scales(net, lambda x: net(Tensor(x)), samples, teacher, epochs=3, learning_rate=50.0)
    assert result.diverged
    for p, value in zip(weight_scales(net), untuned):
        np.testing.assert_array_equal(p.asnumpy(), value)


def test_tuning_refuses_a_network_without_quantized_layers_and_a_mismatched_teacher():
    samples = [inputs(0)]
    with pytest.raises(ValueError, match="no deployed quantized linear layer"):
        float_net = TwoLayers()
        tune_weight_scales(float_net, lambda x: float_net(Tensor(x)), samples, float_teacher(samples), 1, 1e-3)
    net = deployed("w8", LEVEL)
    with pytest.raises(ValueError, match="2 teacher outputs for 1 samples"):
        tune_weight_scales(net, lambda x: net(Tensor(x)), samples, float_teacher([inputs(0), inputs(1)]), 1, 1e-3)


def test_teacher_log_probs_are_normalised_float16_without_infinities():
    logits = np.array([[0.0, 1.0, 2.0], [1e5, 0.0, -1e5]], np.float32)
    (logp,) = teacher_log_probs(lambda x: Tensor(x), [logits])
    assert logp.dtype == np.float16 and np.isfinite(logp).all()
    np.testing.assert_allclose(np.exp(logp[0].astype(np.float64)).sum(), 1.0, atol=2e-3)
    assert logp[1, 0] == 0.0


def tiny_llama():
    """A one-block Llama with random weights: real decoding through its KV cache, in milliseconds."""
    return random_llama(np.random.default_rng(0), 0.3, vocab_size=48)


def test_sampling_is_seeded_tends_to_greedy_as_the_temperature_falls_and_refuses_a_negative_one():
    net, helper = tiny_llama(), LlamaHelper()
    prompts = np.random.default_rng(1).integers(0, 48, (3, 5)).astype(np.int32)
    sampled = helper.generate(net, prompts, 12, temperature=1.0, seed=4, stop_at_eos=False)
    assert sampled.shape == (3, 12)
    np.testing.assert_array_equal(helper.generate(net, prompts, 12, temperature=1.0, seed=4, stop_at_eos=False), sampled)
    assert not np.array_equal(helper.generate(net, prompts, 12, temperature=1.0, seed=5, stop_at_eos=False), sampled)
    greedy = helper.generate(net, prompts, 12, stop_at_eos=False)
    np.testing.assert_array_equal(helper.generate(net, prompts, 12, temperature=1e-4, seed=4, stop_at_eos=False), greedy)
    assert not np.array_equal(sampled, greedy)
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        helper.generate(net, prompts, 2, temperature=-1.0)


def test_sampled_windows_continue_prompts_taken_in_turn_from_the_calibration_windows():
    net, helper = tiny_llama(), LlamaHelper()
    windows = np.random.default_rng(2).integers(0, 48, (3, 40)).astype(np.int64)
    calls = []

    def sample(prompts, new_tokens, seed):
        calls.append((len(prompts), new_tokens, seed))
        return helper.generate(net, prompts, new_tokens, temperature=1.0, seed=seed, stop_at_eos=False)

    count = SAMPLE_BATCH + 4
    out = sampled_windows(sample, windows, count, seed=10)
    assert out.shape == (count, 40) and out.dtype == np.int32
    assert calls == [(SAMPLE_BATCH, 40 - PROMPT_TOKENS, 10), (4, 40 - PROMPT_TOKENS, 10 + SAMPLE_BATCH)]
    starts = [0, 20, 10, 30]
    for j, window in enumerate(out):
        start = starts[(j // 3) % 4]
        np.testing.assert_array_equal(window[:PROMPT_TOKENS], windows[j % 3, start : start + PROMPT_TOKENS])
    first = out[:SAMPLE_BATCH]  # the first batch, as one call of the float model's sampler
    np.testing.assert_array_equal(first[:, PROMPT_TOKENS:], helper.generate(net, first[:, :PROMPT_TOKENS], 40 - PROMPT_TOKENS, temperature=1.0, seed=10, stop_at_eos=False))
    assert sampled_windows(sample, windows, 0).shape == (0, 40)
    for bad in (windows[:, :PROMPT_TOKENS], windows.astype(np.float32), windows[0]):
        with pytest.raises(ValueError, match="continue calibration token windows"):
            sampled_windows(sample, bad, 2)
