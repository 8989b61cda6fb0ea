"""Hugging Face-format Llama-family folders written to disk (as HF writes them) load and match the numpy reference.

Each test writes a tiny random model: ``config.json`` with HF's field names, weights with
``safetensors.numpy.save_file`` (one file, or shards plus ``model.safetensors.index.json``,
in float32, float16 or bfloat16) and a ``tokenizer.json`` built with the ``tokenizers``
library. The reference is :mod:`gscore.testing.llama_reference`, fed the same values upcast
to float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from gscore.errors import GscoreError, ModelFolderError, UnsupportedModelError
from gscore.models import hf_folder
from gscore.models.hf_folder import hf_config, load_llama, open_llama_folder, read_config, save_llama_folder
from gscore.models.llama import LlamaConfig
from gscore.models.smollm2 import smollm2_folder
from gscore.testing.llama_reference import reference_logits

VOCAB = 40
STORE_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}

LLAMA_GQA_UNTIED = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": False,
    "hidden_act": "silu", "rope_scaling": None, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
}
QWEN2_TIED = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 32,
    "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 128, "tie_word_embeddings": True,
    "hidden_act": "silu", "use_sliding_window": False, "sliding_window": 16, "max_window_layers": 2,
    "bos_token_id": None, "eos_token_id": 3,
}
MISTRAL = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": VOCAB, "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256, "sliding_window": 24,
    "tie_word_embeddings": False,
}
LLAMA_BIAS_HEAD_DIM = {**LLAMA_GQA_UNTIED, "attention_bias": True, "head_dim": 12, "tie_word_embeddings": True}


def hf_shapes(cfg: dict[str, Any], qkv_bias: bool, o_bias: bool) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes of a config, written out here from the HF layout."""
    h, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or h // heads
    shapes = {"model.embed_tokens.weight": (VOCAB, h), "model.norm.weight": (h,)}
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (VOCAB, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (heads * hd, h), p + "self_attn.k_proj.weight": (kv * hd, h),
            p + "self_attn.v_proj.weight": (kv * hd, h), p + "self_attn.o_proj.weight": (h, heads * hd),
            p + "mlp.gate_proj.weight": (cfg["intermediate_size"], h), p + "mlp.up_proj.weight": (cfg["intermediate_size"], h),
            p + "mlp.down_proj.weight": (h, cfg["intermediate_size"]),
        })
        if qkv_bias:
            shapes.update({p + f"self_attn.{n}_proj.bias": (shapes[p + f"self_attn.{n}_proj.weight"][0],) for n in "qkv"})
        if o_bias:
            shapes[p + "self_attn.o_proj.bias"] = (h,)
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return weights


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def write_folder(folder: Path, cfg: dict[str, Any], weights: dict[str, np.ndarray], dtype: str = "F32", shards: int = 1) -> dict[str, np.ndarray]:
    """Write an HF folder; returns the float32 values the folder really holds (after the dtype round)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(folder / "tokenizer.json")
    stored = {name: w.astype(STORE_DTYPES[dtype]) for name, w in weights.items()}
    names = list(stored)
    if shards == 1:
        save_file(stored, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for k, part in enumerate(np.array_split(np.arange(len(names)), shards)):
            file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            save_file({names[i]: stored[names[i]] for i in part}, str(folder / file), metadata={"format": "pt"})
            weight_map.update({names[i]: file for i in part})
        index = {"metadata": {"total_size": int(sum(v.nbytes for v in stored.values()))}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return {name: v.astype(np.float32) for name, v in stored.items()}


def reference_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The reference's config keys, from the HF fields."""
    return {
        "hidden_size": cfg["hidden_size"], "num_heads": cfg["num_attention_heads"],
        "num_kv_heads": cfg.get("num_key_value_heads", cfg["num_attention_heads"]), "head_dim": cfg.get("head_dim"),
        "rms_norm_eps": cfg["rms_norm_eps"], "rope_theta": cfg["rope_theta"], "num_layers": cfg["num_hidden_layers"],
        "tie_word_embeddings": cfg["tie_word_embeddings"],
    }


def assert_matches_reference(net: Any, values: dict[str, np.ndarray], cfg: dict[str, Any], num_layers: int | None = None) -> None:
    ids = np.array([3, 17, 5, 39, 0, 11, 8, 2, 25, 6], np.int32)
    net.reset_cache()
    ours = net(Tensor(ids[None]), 0).asnumpy()[0]
    expected = reference_logits(values, reference_config(cfg), ids, num_layers)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.fixture(autouse=True)
def _fast_forwards():
    ms.runtime.launch_blocking()


@pytest.mark.parametrize(
    "cfg, qkv_bias, o_bias, dtype, shards",
    [
        (LLAMA_GQA_UNTIED, False, False, "F32", 1),
        (LLAMA_GQA_UNTIED, False, False, "BF16", 3),
        (QWEN2_TIED, True, False, "BF16", 1),
        (QWEN2_TIED, True, False, "F16", 2),
        (MISTRAL, False, False, "F16", 4),
        (LLAMA_BIAS_HEAD_DIM, True, True, "F32", 2),
    ],
    ids=["llama-gqa-untied-f32", "llama-gqa-untied-bf16-sharded", "qwen2-tied-bf16", "qwen2-tied-f16-sharded", "mistral-f16-sharded", "llama-attention-bias-head-dim"],
)
def test_folder_loads_and_matches_the_numpy_reference(tmp_path, cfg, qkv_bias, o_bias, dtype, shards):
    values = write_folder(tmp_path / "model", cfg, random_weights(hf_shapes(cfg, qkv_bias, o_bias), seed=shards), dtype, shards)
    net, tokenizer = load_llama(tmp_path / "model")
    assert net.config.qkv_bias == qkv_bias and net.config.o_proj_bias == o_bias
    assert net.config.tie_word_embeddings == cfg["tie_word_embeddings"]
    assert all(p.dtype == ms.float32 for p in net.get_parameters())
    assert_matches_reference(net, values, cfg)
    assert tokenizer.encode("w3 w17 w5").ids == [3, 17, 5]


def test_a_shallower_network_keeps_the_first_layers(tmp_path):
    values = write_folder(tmp_path / "m", LLAMA_GQA_UNTIED, random_weights(hf_shapes(LLAMA_GQA_UNTIED, False, False), 0))
    net, _ = load_llama(tmp_path / "m", num_layers=1)
    assert len(net.model.layers) == 1
    assert_matches_reference(net, values, LLAMA_GQA_UNTIED, num_layers=1)


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (QWEN2_TIED, {"bos_token_id": -1, "eos_token_id": 3, "max_positions": 128, "qkv_bias": True, "num_kv_heads": 1}),
        ({**QWEN2_TIED, "use_sliding_window": True}, {"max_positions": 16}),
        (MISTRAL, {"max_positions": 24, "rms_norm_eps": 1e-5, "bos_token_id": 1}),
        ({k: v for k, v in LLAMA_GQA_UNTIED.items() if k not in ("num_key_value_heads", "max_position_embeddings", "rope_theta", "tie_word_embeddings")},
         {"num_kv_heads": 4, "max_positions": 2048, "rope_theta": 10000.0, "tie_word_embeddings": False}),
        ({**LLAMA_GQA_UNTIED, "eos_token_id": [128001, 128009], "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
         {"eos_token_id": 128001, "rope_theta": 500000.0}),
        (LLAMA_BIAS_HEAD_DIM, {"head_dim": 12, "qkv_bias": True, "o_proj_bias": True}),
    ],
    ids=["qwen2", "qwen2-sliding-window", "mistral-window-caps-length", "hf-defaults", "eos-list-rope-parameters", "explicit-head-dim"],
)
def test_config_json_fields_and_defaults(tmp_path, cfg, expected):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    config = read_config(tmp_path)
    assert {k: getattr(config, k) for k in expected} == expected


def _without(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != key}


@pytest.mark.parametrize(
    "cfg, error, message",
    [
        (_without(LLAMA_GQA_UNTIED, "hidden_size"), ModelFolderError, r"config.json: field 'hidden_size' is required"),
        ({**LLAMA_GQA_UNTIED, "num_hidden_layers": "2"}, ModelFolderError, r"config.json: field 'num_hidden_layers' must be a positive integer, got '2'"),
        ({**LLAMA_GQA_UNTIED, "num_key_value_heads": 3}, ModelFolderError, r"field 'num_key_value_heads' \(3\) must divide num_attention_heads \(4\)"),
        ({**LLAMA_GQA_UNTIED, "tie_word_embeddings": "yes"}, ModelFolderError, r"field 'tie_word_embeddings' must be true or false"),
        ({**LLAMA_GQA_UNTIED, "model_type": "gemma", "architectures": ["GemmaForCausalLM"]}, UnsupportedModelError,
         r"model_type 'gemma' is not supported; supported: model_type llama, mistral, qwen2 \(architectures LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM\)"),
        ({**LLAMA_GQA_UNTIED, "architectures": ["LlamaForSequenceClassification"]}, UnsupportedModelError, r"architectures \['LlamaForSequenceClassification'\] is not supported"),
        ({**LLAMA_GQA_UNTIED, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, UnsupportedModelError, r"rope_scaling .* is not supported \(supported: null"),
        ({**LLAMA_GQA_UNTIED, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, UnsupportedModelError, r"rope_parameters .* rope_type 'default'"),
        ({**LLAMA_GQA_UNTIED, "hidden_act": "gelu"}, UnsupportedModelError, r"hidden_act 'gelu' is not supported \(supported: 'silu'\)"),
        ({**LLAMA_GQA_UNTIED, "mlp_bias": True}, UnsupportedModelError, r"mlp_bias true is not supported"),
        ({**LLAMA_GQA_UNTIED, "partial_rotary_factor": 0.5}, UnsupportedModelError, r"partial_rotary_factor 0.5 is not supported \(supported: 1.0\)"),
        ({**LLAMA_GQA_UNTIED, "quantization_config": {"quant_method": "gptq"}}, UnsupportedModelError, r"pre-quantized checkpoint"),
    ],
    ids=["missing-field", "string-int", "kv-heads", "bad-flag", "gemma", "classifier", "rope-scaling", "rope-parameters-yarn", "gelu", "mlp-bias", "partial-rotary", "gptq"],
)
def test_a_bad_or_unsupported_config_is_refused_naming_the_field(tmp_path, cfg, error, message):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(error, match=message):
        read_config(tmp_path)


def _drop(folder: Path, name: str) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors.pop(name)
    save_file(tensors, str(folder / "model.safetensors"))


def _replace(folder: Path, name: str, value: np.ndarray) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = value
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: _drop(f, "model.layers.1.mlp.up_proj.weight"), r"weights do not match config.json: missing model.layers.1.mlp.up_proj.weight"),
        (lambda f: _drop(f, "lm_head.weight"), r"missing lm_head.weight \(config.json: tie_word_embeddings is false\)"),
        (lambda f: _replace(f, "model.layers.0.self_attn.k_proj.weight", np.zeros((32, 32), np.float32)),
         r"model.layers.0.self_attn.k_proj.weight in model.safetensors: shape \(32, 32\), config.json implies \(16, 32\)"),
        (lambda f: _replace(f, "model.layers.0.self_attn.q_proj.bias", np.zeros(32, np.float32)), r"unexpected model.layers.0.self_attn.q_proj.bias in model.safetensors"),
        (lambda f: _replace(f, "model.norm.weight", np.ones(32, np.int8)), r"model.norm.weight in model.safetensors: dtype I8, readable are F32, F16, BF16"),
        (lambda f: (f / "tokenizer.json").unlink(), r"tokenizer.json not found"),
        (lambda f: (f / "model.safetensors").unlink(), r"no weights: expected model.safetensors or model.safetensors.index.json"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}"), r"model.safetensors: not a readable safetensors file"),
        (lambda f: (f / "config.json").write_text("{not json"), r"config.json: not readable JSON"),
    ],
    ids=["missing-tensor", "missing-untied-head", "mis-shaped", "unexpected-bias", "int8-tensor", "no-tokenizer", "no-weights", "corrupt-weights", "corrupt-config"],
)
def test_a_damaged_folder_is_refused_naming_the_file_and_tensor(tmp_path, damage, message):
    folder = tmp_path / "m"
    write_folder(folder, LLAMA_GQA_UNTIED, random_weights(hf_shapes(LLAMA_GQA_UNTIED, False, False), 0))
    damage(folder)
    with pytest.raises(ModelFolderError, match=message):
        open_llama_folder(folder)


def test_a_shard_index_must_agree_with_its_shards(tmp_path):
    folder = tmp_path / "m"
    write_folder(folder, LLAMA_GQA_UNTIED, random_weights(hf_shapes(LLAMA_GQA_UNTIED, False, False), 0), shards=2)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first, second = sorted(set(index["weight_map"].values()))
    moved = next(name for name, file in index["weight_map"].items() if file == first)
    index["weight_map"][moved] = second
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match=rf"model.safetensors.index.json: lists {moved} in {second}, which does not hold it"):
        open_llama_folder(folder)
    (folder / second).unlink()
    with pytest.raises(ModelFolderError, match=rf"lists shard {second}, which is not in"):
        open_llama_folder(folder)


def test_a_malformed_tokenizer_is_named(tmp_path):
    folder = tmp_path / "m"
    write_folder(folder, QWEN2_TIED, random_weights(hf_shapes(QWEN2_TIED, True, False), 0))
    (folder / "tokenizer.json").write_text('{"model": 3}')
    with pytest.raises(ModelFolderError, match=r"tokenizer.json: not a readable tokenizers JSON file"):
        load_llama(folder)


def test_saved_folder_reads_back_with_the_same_config_and_weights(tmp_path):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_layers=2, num_heads=4, num_kv_heads=1,
                         max_positions=128, bos_token_id=-1, eos_token_id=3, tie_word_embeddings=True, qkv_bias=True)
    weights = random_weights(hf_shapes(QWEN2_TIED, True, False), 5)
    tokenizer_path = tmp_path / "tok.json"
    write_tokenizer(tokenizer_path)
    save_llama_folder(tmp_path / "out", config, weights, tokenizer_path.read_text())
    assert hf_config(config)["model_type"] == "qwen2"
    opened = open_llama_folder(tmp_path / "out")
    assert opened.config == config
    assert all(np.array_equal(opened.weights()[name], value) for name, value in weights.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tok.json"]
    with pytest.raises(FileExistsError):
        save_llama_folder(tmp_path / "out", config, weights, tokenizer_path.read_text())


def test_a_failed_save_leaves_no_folder(tmp_path, monkeypatch):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2, tie_word_embeddings=False)
    weights = random_weights(hf_shapes(LLAMA_GQA_UNTIED, False, False), 1)
    weights.pop("lm_head.weight")
    with pytest.raises(GscoreError, match="missing lm_head.weight"):
        save_llama_folder(tmp_path / "out", config, weights, "{}")
    assert list(tmp_path.iterdir()) == []


def test_the_embedded_smollm2_is_a_folder_the_same_loader_reads():
    opened = open_llama_folder(smollm2_folder())
    assert opened.config.num_layers == 30 and opened.config.tie_word_embeddings
    net, tokenizer = load_llama(smollm2_folder(), num_layers=2)
    ids = np.array(tokenizer.encode("The capital of France is").ids, np.int32)
    logits = net(Tensor(ids[None]), 0).asnumpy()[0]
    reference_cfg = {"hidden_size": 576, "num_heads": 9, "num_kv_heads": 3, "rms_norm_eps": opened.config.rms_norm_eps, "rope_theta": opened.config.rope_theta}
    expected = reference_logits(opened.weights(), reference_cfg, ids, num_layers=2)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_weights_are_read_lazily_one_tensor_per_access(tmp_path, monkeypatch):
    write_folder(tmp_path / "m", LLAMA_GQA_UNTIED, random_weights(hf_shapes(LLAMA_GQA_UNTIED, False, False), 0), "BF16")
    opened = open_llama_folder(tmp_path / "m")
    reads = []
    original = hf_folder._open_safetensors
    monkeypatch.setattr(hf_folder, "_open_safetensors", lambda path: reads.append(path) or original(path))
    weights = opened.weights()
    assert "model.norm.weight" in weights and len(weights) == len(opened.tensors) and reads == []
    value = weights["model.norm.weight"]
    assert value.dtype == np.float32 and value.shape == (32,) and len(reads) == 1
