"""PTQ on a real (truncated) SmolLM2: every option simulates, converts, deploys and reloads on CPU."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import gscore
from gscore import CalibrationDataError, ConfigError, PTQConfig
from gscore.io import load_checkpoint, read_description, save_checkpoint
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.kv_cache import DynamicInt8KVCache, StaticInt8KVCache
from gscore.nn.quant_linear import QuantLinear, SimQuantLinear

PTQ = gscore.get("ptq")

QUIET = {"progress": False}
CONFIGS = {
    # name: (config kwargs, bound on relative L2 error of logits vs float on 4 real layers)
    "a16w8": ({}, 0.02),
    "a16w4-g128": ({"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128}, 0.25),
    "a8w8-dynamic": ({"act_quant_dtype": "int8", "act_quant_granularity": "per_token"}, 0.05),
    "a8w8-static": ({"act_quant_dtype": "int8"}, 0.5),
    "a8w8-smooth": ({"act_quant_dtype": "int8", "outliers_suppression": "smooth"}, 0.5),
    "kv-static": ({"weight_quant_dtype": None, "kvcache_quant_dtype": "int8"}, 0.02),
    "kv-dynamic": ({"weight_quant_dtype": None, "kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"}, 0.02),
    "a8w8-smooth-kv": ({"act_quant_dtype": "int8", "outliers_suppression": "smooth", "kvcache_quant_dtype": "int8"}, 0.5),
    "a8w8-rotation-prefix": ({"act_quant_dtype": "int8", "outliers_suppression": "rotation", "algo_args": {"prefix": [1]}}, 0.15),
    "a8w8-dynamic-rotation": ({"act_quant_dtype": "int8", "act_quant_granularity": "per_token", "outliers_suppression": "rotation"}, 0.05),
    "a16w4-awq-gptq": ({"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "outliers_suppression": "awq",
                        "precision_recovery": "gptq", "algo_args": {"desc_act": True, "static_groups": True, "smooth_alpha": [0.0, 0.5]}}, 0.25),
    "a16w8-int8-head": ({"algo_args": {"head": "int8"}}, 0.02),
    "kv-static-int8-head": ({"weight_quant_dtype": None, "kvcache_quant_dtype": "int8", "algo_args": {"head": "int8"}}, 0.02),
    "a8w8-rotation-prefix-int8-head": ({"act_quant_dtype": "int8", "outliers_suppression": "rotation", "algo_args": {"prefix": [1], "head": "int8"}}, 0.15),
    "a8w4-gptq": ({"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "act_quant_dtype": "int8",
                   "act_quant_granularity": "per_token", "precision_recovery": "gptq"}, 0.25),
}


def logits(net, ids):
    net.reset_cache()
    out = net(Tensor(ids), 0).asnumpy()
    net.reset_cache()
    return out


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_quantize_convert_save_deploy_load(name, make_llama, windows, tmp_path, kernel_path):
    kwargs, bound = CONFIGS[name]
    calibration, evaluation = windows
    x = evaluation[:1]
    reference = logits(make_llama(), x)

    net = make_llama()
    algo = PTQ(PTQConfig(**{**kwargs, "algo_args": {**kwargs.get("algo_args", {}), **QUIET}}))
    algo.apply(net, LlamaHelper(), datasets=calibration)
    simulated = logits(net, x)
    sim_layer = net.model.layers[1].mlp.down_proj
    algo.convert(net)
    deployed = logits(net, x)
    assert rel_err(deployed, reference) < bound
    down = net.model.layers[1].mlp.down_proj
    if isinstance(down, QuantLinear):
        assert (down.kernel is not None) == (kernel_path != "portable")
    if not kwargs.get("act_quant_dtype") and kernel_path == "portable":
        np.testing.assert_array_equal(deployed, simulated)  # the same ops in the same order
    elif not kwargs.get("act_quant_dtype"):
        # native kernels sum in another order (float rounding)
        np.testing.assert_allclose(deployed, simulated, rtol=1e-5, atol=1e-4)
    else:
        # one layer on one input: equal up to float summation order (1e-5 of the output's scale;
        # per-group dequantization sums in another order than the simulated float weight) ...
        h = Tensor(np.random.default_rng(0).standard_normal((16, 1536)).astype(np.float32))
        expected = sim_layer(h).asnumpy()
        np.testing.assert_allclose(net.model.layers[1].mlp.down_proj(h).asnumpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        # ... which can flip a later activation's rounding by one step; with coarse static
        # per-tensor steps (down_proj's input range is set by outliers) that shows at the logits
        assert rel_err(deployed, simulated) < 5e-2

    params = {p.name: p for p in net.get_parameters()}
    if kwargs.get("weight_quant_dtype", "int8"):
        weight = params["model.layers.0.mlp.up_proj.weight"]
        assert weight.dtype == ms.int8
        assert weight.shape == ((1536, 288) if kwargs.get("group_size") else (1536, 576))
    path = save_checkpoint(net, tmp_path / f"{name}.ckpt", description=algo.describe(net))

    fresh = make_llama()
    deploy = PTQ(PTQConfig(mode="deploy", **kwargs))
    deploy.convert(deploy.apply(fresh, LlamaHelper()))
    load_checkpoint(path, fresh)
    np.testing.assert_array_equal(logits(fresh, x), deployed)


def test_int8_kv_cache_stores_int8_and_a_quarter_of_the_bytes(make_llama, windows):
    calibration, evaluation = windows
    float_net = make_llama(layers=2)
    logits(float_net, evaluation[:1])
    float_net(Tensor(evaluation[:1]), 0)
    float_bytes = float_net.cache_bytes()
    for kwargs, kind in (({}, StaticInt8KVCache), ({"kvcache_quant_granularity": "per_token"}, DynamicInt8KVCache)):
        net = make_llama(layers=2)
        PTQ(PTQConfig(weight_quant_dtype=None, kvcache_quant_dtype="int8", algo_args=QUIET, **kwargs)).apply(net, LlamaHelper(), datasets=calibration)
        cache = net.model.layers[1].self_attn.kv_cache
        assert isinstance(cache, kind)
        net(Tensor(evaluation[:1]), 0)
        assert cache.keys[0][0].dtype == ms.int8
        assert net.cache_bytes() <= 0.27 * float_bytes
        net.reset_cache()


def test_smoothquant_folds_into_norms_and_keeps_explicit_scales_elsewhere(make_llama, windows):
    calibration, _ = windows
    net = make_llama(layers=2)
    norm_before = net.model.layers[0].input_layernorm.weight.asnumpy().copy()
    PTQ(PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args=QUIET)).apply(net, LlamaHelper(), datasets=calibration)
    layer = net.model.layers[0]
    assert not np.allclose(layer.input_layernorm.weight.asnumpy(), norm_before)
    assert not layer.self_attn.q_proj.has_smooth and not layer.mlp.gate_proj.has_smooth
    assert layer.self_attn.o_proj.has_smooth and layer.mlp.down_proj.has_smooth


def test_layer_policies_and_blacklist(make_llama, windows):
    calibration, _ = windows
    net = make_llama(layers=2)
    policies = {r"mlp\.down_proj$": PTQConfig(algo_args=QUIET)}
    algo = PTQ(PTQConfig(act_quant_dtype="int8", opname_blacklist=["layers.1.self_attn"], algo_args=QUIET), layer_policies=policies)
    algo.convert(algo.apply(net, LlamaHelper(), datasets=calibration))
    first, second = net.model.layers
    assert isinstance(first.mlp.down_proj, QuantLinear) and not first.mlp.down_proj.has_input_quantizer
    assert first.mlp.up_proj.has_input_quantizer
    assert not isinstance(second.self_attn.q_proj, (QuantLinear, SimQuantLinear))
    assert isinstance(second.mlp.up_proj, QuantLinear)
    layers = algo.describe(net)["layers"]
    assert layers["model.layers.0.mlp.up_proj"]["input"] == "StaticInputQuantizer"


def test_static_activations_without_data_is_a_clear_error(make_llama):
    with pytest.raises(CalibrationDataError, match="pass calibration data"):
        PTQ(PTQConfig(act_quant_dtype="int8")).apply(make_llama(layers=1), LlamaHelper())


def test_weight_only_and_dynamic_options_need_no_data(make_llama, windows):
    _, evaluation = windows
    net = make_llama(layers=1)
    algo = PTQ(PTQConfig(act_quant_dtype="int8", act_quant_granularity="per_token", algo_args=QUIET))
    algo.convert(algo.apply(net))
    assert isinstance(net.model.layers[0].mlp.up_proj, QuantLinear)
    assert np.isfinite(logits(net, evaluation[:1])).all()


@pytest.mark.parametrize(
    "kwargs, layer_policies, message",
    [
        ({"act_quant_dtype": "int8", "outliers_suppression": "outlier-suppression-lite"}, None, "does not implement outliers_suppression=.outlier-suppression-lite."),
        ({"weight_quant_dtype": "int4"}, None, "int4 weights need weight_quant_granularity=per_group"),
        ({"algo_args": {"alfa": 0.5}}, None, r"unknown algo_args \['alfa'\]"),
        ({"act_quant_dtype": "int8", "outliers_suppression": "smooth", "algo_args": {"alpha": 1.5}}, None, r"alpha.\] must be a number in \[0, 1\]"),
        ({"act_quant_dtype": "int8", "outliers_suppression": "smooth", "algo_args": {"alpha": [0.5, "x"]}}, None, r"alpha'\] must be a number"),
        ({"precision_recovery": "gptq", "algo_args": {"damp_percent": float("nan")}}, None, "damp_percent"),
        ({"precision_recovery": "gptq", "weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "algo_args": {"desc_act": True}}, None, "needs algo_args static_groups=True"),
        ({"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "act_quant_dtype": "int8", "precision_recovery": "gptq"}, None, "A8W4 .* needs dynamic activations"),
        ({"algo_args": {"prefix": [1, -2]}}, None, "list of token ids"),
        ({}, {"(": PTQConfig()}, "not a valid regular expression"),
        ({}, {"down": PTQConfig(mode="deploy")}, "has mode deploy"),
    ],
)
def test_invalid_options_are_rejected_with_the_reason(kwargs, layer_policies, message):
    with pytest.raises(ConfigError, match=message):
        PTQ(PTQConfig(**kwargs), layer_policies=layer_policies)


def test_description_says_how_each_layer_is_quantized(make_llama, windows, tmp_path):
    calibration, _ = windows
    net = make_llama(layers=1)
    cfg = PTQConfig(weight_quant_dtype="int4", weight_quant_granularity="per_group", group_size=64, algo_args=QUIET)
    algo = PTQ(cfg)
    algo.convert(algo.apply(net, LlamaHelper(), datasets=calibration))
    path = save_checkpoint(net, tmp_path / "w4.ckpt", description=algo.describe(net))
    layer = read_description(path)["layers"]["model.layers.0.self_attn.q_proj"]
    assert layer["dtype"] == "int4" and layer["group_size"] == 64 and layer["packed"] and not layer["symmetric"]
