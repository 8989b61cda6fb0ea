import dataclasses

import pytest

from gscore import (
    BackendTarget,
    ConfigError,
    OutliersSuppressionType,
    PrecisionRecovery,
    PTQConfig,
    PTQMode,
    QuantDtype,
    QuantGranularity,
)


def test_defaults_are_a16w8_per_channel_on_cpu():
    cfg = PTQConfig()
    assert (cfg.mode, cfg.backend, cfg.weight_quant_dtype) == (PTQMode.QUANTIZE, BackendTarget.CPU, QuantDtype.INT8)
    assert cfg.weight_quant_granularity is QuantGranularity.PER_CHANNEL


def test_mindspore_dtypes_and_strings_are_accepted():
    import mindspore as ms

    cfg = PTQConfig(weight_quant_dtype=ms.qint4x2, weight_quant_granularity="per_group", group_size=128)
    assert cfg.weight_quant_dtype is QuantDtype.INT4
    assert PTQConfig(weight_quant_dtype=ms.int8, act_quant_dtype="INT8").act_quant_dtype is QuantDtype.INT8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "quantise"}, "mode: 'quantise' is not valid; choose one of 'quantize', 'deploy'"),
        ({"backend": "gpu"}, "choose one of 'none', 'cpu', 'ascend'"),
        ({"outliers_suppression": "smoth"}, "outliers_suppression: 'smoth' is not valid"),
        ({"weight_quant_dtype": "float16"}, "weight_quant_dtype: 'float16' is not supported; allowed: int8"),
        ({"kvcache_quant_dtype": "int4"}, "kvcache_quant_dtype"),
        ({"weight_quant_granularity": "per_token"}, "choose one of 'per_channel', 'per_group'"),
        ({"act_quant_dtype": "int8", "weight_quant_granularity": "per_group", "group_size": 64}, "A8W8 needs weight_quant_granularity=per_channel"),
        ({"act_quant_granularity": "per_token"}, "needs act_quant_dtype=int8"),
        ({"kvcache_quant_granularity": "per_token"}, "needs kvcache_quant_dtype=int8"),
        ({"weight_quant_granularity": "per_group", "group_size": 100}, r"group_size in \(64, 128, 256\)"),
        ({"group_size": 64}, "only applies to weight_quant_granularity=per_group"),
        ({"weight_quant_dtype": "int4", "act_quant_dtype": "int8"}, "A8W4"),
        ({"outliers_suppression": "smooth"}, "needs act_quant_dtype=int8"),
        ({"weight_quant_dtype": None}, "nothing to quantize"),
        ({"opname_blacklist": "lm_head"}, "opname_blacklist must be a list of strings"),
        ({"algo_args": 0.5}, "algo_args must be a dict or a dataclass"),
        ({"weight_clip": 1}, "weight_clip must be a bool"),
    ],
)
def test_invalid_values_and_combinations_say_what_is_allowed(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PTQConfig(**kwargs)


def test_enum_from_str_is_strict():
    assert OutliersSuppressionType.from_str("SMOOTH") is OutliersSuppressionType.SMOOTH
    assert PrecisionRecovery.from_str("gptq") is PrecisionRecovery.GPTQ
    with pytest.raises(ConfigError, match="choose one of"):
        OutliersSuppressionType.from_str("smoothquant")


def test_dataclass_algo_args_become_a_dict():
    @dataclasses.dataclass
    class SmoothArgs:
        alpha: float = 0.75

    cfg = PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args=SmoothArgs())
    assert cfg.algo_args == {"alpha": 0.75}


def test_round_trip_through_dict_and_yaml():
    cfg = PTQConfig(
        mode="deploy", act_quant_dtype="int8", kvcache_quant_dtype="int8", outliers_suppression="smooth",
        act_quant_granularity="per_token", kvcache_quant_granularity="per_token", opname_blacklist=["lm_head"],
        algo_args={"alpha": 0.6},
    )
    data = cfg.to_dict()
    assert data["type"] == "PTQConfig" and data["version"] == 1 and data["act_quant_granularity"] == "per_token"
    assert PTQConfig.from_dict(data) == cfg
    assert PTQConfig.from_yaml(cfg.to_yaml()) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"version": 2}, "config format version 2 is not supported"),
        ({"type": "QATConfig"}, "is a 'QATConfig' description"),
        ({"act_per_tensor": True}, r"unknown PTQConfig field\(s\) \['act_per_tensor'\]"),
    ],
)
def test_from_dict_rejects_foreign_input(data, message):
    with pytest.raises(ConfigError, match=message):
        PTQConfig.from_dict(data)


def test_yaml_must_be_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        PTQConfig.from_yaml("- a\n- b\n")
