"""Frozen, validated configs (issue 9, items 4 and 5): no silent wrong results from options.

A config is validated as a whole when built, so it must not change afterwards; every number
is finite; every option an algorithm does not implement is refused; every option that has no
effect warns; malformed input (None, a list, bad YAML) is a ConfigError, never a traceback.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import warnings

import mindspore as ms
import numpy as np
import pytest

import gscore
from gscore import ConfigError, ConfigFrozenError, GscoreWarning, NoQuantizableLayerError, PTQConfig, PTQMode
from gscore.testing.fuzz import FuzzMLP
from gscore_scop import SCOPConfig
from gscore_simqat.config import SimQATConfig
from gscore_slb.config import SLBConfig

ms.runtime.launch_blocking()

NAN, INF = float("nan"), float("inf")
CONFIGS = [PTQConfig, SimQATConfig, SLBConfig, SCOPConfig]


@pytest.mark.parametrize("cls", CONFIGS)
def test_a_config_cannot_change_after_it_was_validated(cls):
    cfg = cls(opname_blacklist=["head"])
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(ConfigFrozenError, match=rf"immutable once built .* dataclasses.replace\(config, {name}=...\)"):
        setattr(cfg, name, getattr(cfg, name))
    with pytest.raises(ConfigFrozenError):
        cfg.opname_blacklist.append("body")
    with pytest.raises(ConfigFrozenError):
        del cfg.opname_blacklist
    assert cfg.opname_blacklist == ["head"]
    for twin in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg)), cls.from_yaml(cfg.to_yaml())):
        assert twin == cfg
        with pytest.raises(ConfigFrozenError):
            setattr(twin, name, getattr(cfg, name))


def test_setting_the_mode_later_no_longer_runs_deploy_on_a_quantize_network():
    cfg = PTQConfig(mode="deploy")
    with pytest.raises(ConfigFrozenError):
        cfg.mode = "quantize"  # before: a str, so `is PTQMode.QUANTIZE` was False and apply ran DEPLOY
    quantize = dataclasses.replace(cfg, mode="quantize")
    assert quantize.mode is PTQMode.QUANTIZE and cfg.mode is PTQMode.DEPLOY
    with pytest.raises(ConfigError, match="needs act_quant_dtype=int8"):
        dataclasses.replace(cfg, outliers_suppression="smooth")  # replace validates again


def test_algo_args_are_frozen_to_the_bottom():
    cfg = PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"alpha": [0.3, 0.5]})
    with pytest.raises(ConfigFrozenError):
        cfg.algo_args["alpha"] = 5.0
    with pytest.raises(ConfigFrozenError):
        cfg.algo_args["alpha"].append(5.0)
    assert cfg.to_dict()["algo_args"] == {"alpha": [0.3, 0.5]} and type(cfg.to_dict()["algo_args"]["alpha"]) is list


@pytest.mark.parametrize(
    "cls, field, bad",
    [
        (SLBConfig, "t_start", NAN),
        (SLBConfig, "t_end", INF),
        (SLBConfig, "t_start_time", NAN),
        (SLBConfig, "t_end_time", NAN),
        (SLBConfig, "ema_decay", NAN),
        (SimQATConfig, "ema_decay", NAN),
        (SCOPConfig, "prune_rate", NAN),
        (SCOPConfig, "knockoff_learning_rate", INF),
        (SCOPConfig, "knockoff_learning_rate", NAN),
    ],
)
def test_non_finite_numbers_are_config_errors(cls, field, bad):
    with pytest.raises(ConfigError, match=rf"{field} must be a finite number"):
        cls(**{field: bad})


@pytest.mark.parametrize("algo_args", [{"alpha": NAN}, {"alpha": [0.5, INF]}, {"alpha": -INF}, {"skip_leading_tokens": NAN}])
def test_non_finite_algo_args_are_config_errors(algo_args):
    with pytest.raises(ConfigError, match="must be finite"):
        PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args=algo_args)


@pytest.mark.parametrize("algo_args", [{"alpha": np.float32(0.5)}, {"alpha": object()}, {1: 0.5}])
def test_algo_args_must_be_plain_data_that_a_checkpoint_can_hold(algo_args):
    with pytest.raises(ConfigError, match="algo_args"):
        PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args=algo_args)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_clip": True}, r"RoundToNearest does not implement weight_clip=True; it implements weight_clip in \(False\)"),
        ({"precision_recovery": "gptq"}, r"does not implement precision_recovery='gptq'"),
        ({"outliers_suppression": "awq"}, r"does not implement outliers_suppression='awq'"),
        ({"act_quant_dtype": "int8", "outliers_suppression": "smooth"}, r"does not implement act_quant_dtype='int8'"),
        ({"algo_args": {"alpha": 0.5}}, r"unknown algo_args \['alpha'\] for RoundToNearest; RoundToNearest takes no algo_args"),
        ({"algo_args": {"bogus": 1}}, r"unknown algo_args \['bogus'\]"),
    ],
)
def test_rtn_refuses_what_it_does_not_implement(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        gscore.get("rtn")(PTQConfig(**kwargs))


@pytest.mark.parametrize(
    "algo_args, message",
    [
        ({"bogus": 1}, r"unknown algo_args \['bogus'\] for PTQ; known: \['alpha', 'block_size', .*'weight_clip_ratio'\]"),
        ({"skip_leading_tokens": -1}, r"algo_args\['skip_leading_tokens'\] must be an int >= 0"),
        ({"skip_leading_tokens": "2"}, r"algo_args\['skip_leading_tokens'\] must be an int"),
        ({"progress": "no"}, r"algo_args\['progress'\] must be True or False"),
    ],
)
def test_ptq_refuses_bad_algo_args(algo_args, message):
    with pytest.raises(ConfigError, match=message):
        gscore.get("ptq")(PTQConfig(algo_args=algo_args))


def test_ptq_warns_that_alpha_does_nothing_without_smoothquant():
    with pytest.warns(GscoreWarning, match=r"algo_args\['alpha'\] has no effect"):
        gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", algo_args={"alpha": 0.7}))


def test_ptq_warns_about_policies_and_blacklist_entries_that_match_no_layer():
    policies = {r"mlp\.down_proj$": PTQConfig(), r"^body": PTQConfig(weight_quant_granularity="per_group", group_size=64)}
    algo = gscore.get("ptq")(PTQConfig(opname_blacklist=["lm_head"], algo_args={"progress": False}), layer_policies=policies)
    with pytest.warns(GscoreWarning) as record:
        algo.apply(FuzzMLP((8, 8, 4)))
    messages = [str(w.message) for w in record]
    assert any(r"layer_policies patterns ['mlp\\.down_proj$'] match no linear layer" in m for m in messages), messages
    assert any("opname_blacklist entries ['lm_head'] match no layer" in m for m in messages), messages


@pytest.mark.parametrize("name", ["rtn", "simqat", "slb"])
def test_a_blacklist_entry_that_matches_nothing_warns(name):
    from gscore.testing.fuzz import FuzzConvNet

    net = FuzzMLP((8, 8, 4)) if name == "rtn" else FuzzConvNet(1, (2, 2), 4, 2, batchnorm=False)
    with pytest.warns(GscoreWarning, match=r"opname_blacklist entries \['lm_haed'\] match no layer"):
        gscore.get(name)({"opname_blacklist": ["lm_haed"]}).apply(net)


@pytest.mark.parametrize("name", ["ptq", "rtn"])
def test_a_kv_cache_config_on_a_network_without_a_kv_cache_is_an_error(name):
    cfg = PTQConfig(weight_quant_dtype=None, kvcache_quant_dtype="int8", kvcache_quant_granularity="per_token", algo_args={} if name == "rtn" else {"progress": False})
    with pytest.raises(NoQuantizableLayerError, match="has no gscore KV cache"):
        gscore.get(name)(cfg).apply(FuzzMLP((8, 4)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SimQATConfig(act_bits=None, ema_decay=0.5), r"SimQATConfig.ema_decay=0.5 has no effect: act_bits is None"),
        (lambda: SLBConfig(act_quant_delay=3), r"SLBConfig.act_quant_delay=3 has no effect: act_bits is None"),
        (lambda: SCOPConfig(min_channels=4), r"SCOPConfig.min_channels=4 has no effect: prune_rate is 0"),
    ],
)
def test_options_without_effect_warn(make, message):
    with pytest.warns(GscoreWarning, match=message):
        make()


def test_default_configs_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", GscoreWarning)
        for cls in CONFIGS:
            cls()


def test_layer_policies_given_as_a_list_is_a_config_error():
    with pytest.raises(ConfigError, match="layer_policies must be a mapping of regex -> PTQConfig"):
        gscore.get("ptq")(PTQConfig(), layer_policies=[(r"down_proj", PTQConfig())])
    with pytest.raises(ConfigError, match="layer_policies keys must be regular expressions"):
        gscore.get("ptq")(PTQConfig(), layer_policies={3: PTQConfig()})


@pytest.mark.parametrize("cls", CONFIGS)
@pytest.mark.parametrize("data", [None, ["mode", "deploy"], "mode: deploy", 3])
def test_from_dict_of_something_else_than_a_mapping_is_a_config_error(cls, data):
    with pytest.raises(ConfigError, match="from_dict needs a mapping"):
        cls.from_dict(data)


@pytest.mark.parametrize("text", ["mode: [deploy", "a: b: c", "\t- x", None, b"\xff\xfe"])
def test_bad_yaml_is_a_config_error(text):
    with pytest.raises(ConfigError):
        PTQConfig.from_yaml(text)


@pytest.mark.parametrize("config", [42, "ptq", ["mode", "deploy"], None.__class__])
def test_an_algorithm_given_something_else_than_a_config_says_what_it_takes(config):
    with pytest.raises(ConfigError, match="takes a PTQConfig"):
        gscore.get("ptq")(config)
