"""Precision recovery on real SmolLM2 layers: GPTQ, AWQ, rotation, the float prefix, A8W4.

Each method is checked to be the real algorithm, not round-to-nearest renamed: on the same
layer and the same calibration inputs its output error is compared with RTN's.
"""

import numpy as np
import pytest
from mindspore import Tensor

import gscore
from gscore import PTQConfig
from gscore.calib.observers import Collect, InputObserver
from gscore.eval.perplexity import llama_forward, window_nll
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.quant_linear import SimQuantLinear
from gscore.nn.rotation import OnlineHadamard, rotate_residual_stream
from gscore.nn.walk import replace_cell
from gscore.quant import hadamard, randomized_hadamard

PTQ = gscore.get("ptq")
QUIET = {"progress": False}
W4 = {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128}


def layer_inputs(net, windows, name):
    """The float inputs of layer ``name`` on the calibration windows, float64 ``[rows, in]``."""
    from gscore.nn.walk import get_cell

    layer = get_cell(net, name)
    observer = InputObserver(layer, collect=Collect(sample_rows=10**9))
    replace_cell(net, name, observer)
    for window in windows:
        net.reset_cache()
        net(Tensor(window[None]), 0)
    net.reset_cache()
    replace_cell(net, name, layer)
    return observer.sample.astype(np.float64)


FEEDING_NORM = {"model.layers.0.self_attn.q_proj": "model.layers.0.input_layernorm"}


def effective_weight(net, float_net, name):
    """The simulated weight as the float layer's input sees it: migration scales ``s`` (AWQ)
    divide the input, either through the feeding norm or the layer's explicit ``smooth_scale``."""
    from gscore.nn.walk import get_cell

    cell = get_cell(net, name)
    assert isinstance(cell, SimQuantLinear)
    weight = cell._weight_quantizer.fake_quantize(cell.weight).asnumpy().astype(np.float64)
    if cell.has_smooth:
        return weight * cell.smooth_scale.asnumpy()[None, :]
    if name in FEEDING_NORM:
        norm = FEEDING_NORM[name]
        return weight * (get_cell(net, norm).weight.asnumpy() / get_cell(float_net, norm).weight.asnumpy())[None, :]
    return weight


def output_error(x, w_float, w_quant):
    return float(np.sum((x @ (w_quant - w_float).T) ** 2))


@pytest.mark.parametrize("layer", ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"])
@pytest.mark.parametrize(
    "method",
    [
        {"precision_recovery": "gptq", **W4, "algo_args": {"desc_act": True, "static_groups": True}},
        {"precision_recovery": "gptq"},
        {"outliers_suppression": "awq", "weight_clip": True, **W4},
        {"precision_recovery": "gptq", "weight_clip": True, **W4, "algo_args": {"desc_act": True, "static_groups": True}},
        {"precision_recovery": "gptq", "weight_clip": True, **W4, "algo_args": {"desc_act": True, "static_groups": True, "refit_scales": True}},
    ],
    ids=["gptq-w4-act-order", "gptq-w8", "awq-clip-w4", "clip-gptq-w4", "clip-gptq-refit-w4"],
)
def test_method_beats_round_to_nearest_on_the_layers_own_inputs(method, layer, make_llama, windows):
    calibration, _ = windows
    float_net = make_llama(layers=1)
    x = layer_inputs(float_net, calibration, layer)
    w_float = float_net.parameters_dict()[f"{layer}.weight"].asnumpy().astype(np.float64)
    base = {k: v for k, v in method.items() if k in ("weight_quant_dtype", "weight_quant_granularity", "group_size")}
    errors = {}
    for name, kwargs in (("rtn", base), ("method", method)):
        net = make_llama(layers=1)
        PTQ(PTQConfig(**{**kwargs, "algo_args": {**kwargs.get("algo_args", {}), **QUIET}})).apply(net, LlamaHelper(), datasets=calibration)
        errors[name] = output_error(x, w_float, effective_weight(net, float_net, layer))
    assert errors["method"] < 0.9 * errors["rtn"], errors


def test_rotated_float_model_keeps_its_perplexity(make_llama, windows):
    _, evaluation = windows
    net = make_llama(layers=2)
    before = window_nll(llama_forward(net), evaluation)
    helper = LlamaHelper()
    stream = helper.residual_stream(net)
    rotation = randomized_hadamard(stream.size, seed=3)
    helper.prepare_rotation(net, rotation)
    rotate_residual_stream(net, stream, rotation)
    after = window_nll(llama_forward(net), evaluation)
    assert abs(np.exp(after.mean()) / np.exp(before.mean()) - 1) < 1e-4
    assert np.allclose(net.model.layers[0].input_layernorm.weight.asnumpy(), 1.0)


def test_rotation_with_value_heads_and_biases_keeps_the_logits():
    """A GQA model with q/k/v and o biases and an untied head (Qwen2-like, random weights):
    the full rotation, value heads included, leaves the logits as they were."""
    from gscore.models.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_layers=2, num_heads=6, num_kv_heads=2,
                         tie_word_embeddings=False, qkv_bias=True, o_proj_bias=True, max_positions=64)
    net = LlamaForCausalLM(config)
    rng = np.random.default_rng(0)
    for _, param in net.parameters_and_names():
        param.set_data(Tensor(rng.standard_normal(param.shape).astype(np.float32) * 0.3))
    tokens = Tensor(rng.integers(0, 64, (1, 12)).astype(np.int32))
    before = net(tokens, 0).asnumpy()
    layer = net.model.layers[1]
    v_folded = layer.self_attn.v_proj.weight.asnumpy().astype(np.float64) * layer.input_layernorm.weight.asnumpy()[None, :]
    helper = LlamaHelper()
    stream = helper.residual_stream(net)
    assert len(stream.value_heads) == 2 and stream.head_dim == 8
    rotation = randomized_hadamard(stream.size, seed=1)
    helper.prepare_rotation(net, rotation)
    rotate_residual_stream(net, stream, rotation)
    net.reset_cache()
    np.testing.assert_allclose(net(tokens, 0).asnumpy(), before, rtol=1e-4, atol=1e-4)
    heads = np.einsum("ji,kjc->kic", hadamard(8), v_folded.reshape(2, 8, 48)).reshape(16, 48)
    np.testing.assert_allclose(layer.self_attn.v_proj.weight.asnumpy(), heads @ rotation, rtol=1e-5, atol=1e-5)


def test_rotate_values_turns_every_value_head_and_keeps_the_function(make_llama, windows):
    """``rotate_values`` adds the value-head Hadamard to the residual rotation (v_proj rows per
    head; without it they are only rotated on their input side) and the float function stays."""
    _, evaluation = windows
    nets, logits = {}, {}
    for flag in (False, True):
        net = make_llama(layers=1)
        PTQ(PTQConfig(act_quant_dtype="int8", outliers_suppression="rotation", algo_args={"rotate_values": flag, **QUIET})).prepare_reference(net, LlamaHelper())
        nets[flag] = net
        logits[flag] = net(Tensor(evaluation[0][None]), 0).asnumpy()
    v_plain = nets[False].model.layers[0].self_attn.v_proj.weight.asnumpy().astype(np.float64)
    heads = np.einsum("ji,kjc->kic", hadamard(64), v_plain.reshape(3, 64, -1)).reshape(v_plain.shape)
    np.testing.assert_allclose(nets[True].model.layers[0].self_attn.v_proj.weight.asnumpy(), heads, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits[True], logits[False], rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("size", [576, 1536, 48])
def test_online_hadamard_equals_the_dense_matrix(size):
    x = np.random.default_rng(size).standard_normal((5, size)).astype(np.float32)
    np.testing.assert_allclose(OnlineHadamard(size)(Tensor(x)).asnumpy(), x @ hadamard(size), rtol=1e-4, atol=1e-5)


def test_prefix_is_the_same_as_prepending_the_tokens(make_llama, windows):
    _, evaluation = windows
    prefix = np.array([1, 198], np.int32)
    plain = make_llama(layers=2)
    together = plain(Tensor(np.concatenate([prefix, evaluation[0]])[None]), 0).asnumpy()[0, len(prefix) :]
    plain.reset_cache()
    prefixed = make_llama(layers=2)
    prefixed.set_prefix(prefix)
    assert prefixed.prefix_length == 2
    np.testing.assert_allclose(prefixed(Tensor(evaluation[:1]), 0).asnumpy()[0], together, rtol=1e-4, atol=1e-4)
    step = LlamaHelper().generate(prefixed, evaluation[:1, :8], max_new_tokens=3)
    reference = LlamaHelper().generate(plain, np.concatenate([prefix, evaluation[0, :8]])[None], max_new_tokens=3)
    np.testing.assert_array_equal(step, reference)


def test_prefix_keeps_static_ranges_free_of_the_sink_token(make_llama, windows):
    """Without a prefix, position 0 sets layer 11's down_proj static input range (|x| ~3000 against
    ~7 elsewhere); with a float prefix the sink lives in the prefix and the range shrinks."""
    calibration, _ = windows
    scales = {}
    for name, args in (("plain", {}), ("prefix", {"prefix": [1]})):
        net = make_llama(layers=12)
        algo = PTQ(PTQConfig(act_quant_dtype="int8", algo_args={**args, **QUIET}))
        algo.apply(net, LlamaHelper(), datasets=calibration)
        scales[name] = float(net.model.layers[11].mlp.down_proj._input_quantizer.scale.asnumpy()[0])
    assert scales["prefix"] < 0.05 * scales["plain"], scales


def test_smoothquant_search_keeps_the_best_block_output(make_llama, windows):
    """A list of strengths is scored on each block's output: the chosen one is never worse than
    the fixed candidates on the first block's output. A search observes the float block in a
    pass of its own (``true_sequential`` cannot apply), so the fixed candidates are calibrated
    that way too."""
    calibration, _ = windows
    float_net = make_llama(layers=1)
    helper = LlamaHelper()
    state = helper.block_inputs(float_net, calibration)
    reference = helper.block_output(helper.run_block(float_net.model.layers[0], state))
    errors = {}
    for alpha in (0.3, 0.9, [0.3, 0.9]):
        net = make_llama(layers=1)
        PTQ(PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"alpha": alpha, "search_windows": 2, "true_sequential": False, **QUIET})).apply(net, helper, datasets=calibration)
        out = helper.block_output(helper.run_block(net.model.layers[0], helper.block_inputs(net, calibration)))
        errors[str(alpha)] = float(np.sum((out - reference) ** 2))
    assert errors[str([0.3, 0.9])] <= min(errors["0.3"], errors["0.9"]) * (1 + 1e-6), errors
