"""Local Hugging Face-format Llama-family folders: read into :class:`~gscore.models.llama.LlamaForCausalLM`, and write.

A folder holds ``config.json``, the weights (``model.safetensors``, or the shards that
``model.safetensors.index.json`` lists) and ``tokenizer.json``. Read: ``model_type`` ``llama``,
``mistral`` (grouped-query attention; a sliding window caps the usable length) and ``qwen2``
(q/k/v bias); tied or untied output head; float32, float16 and bfloat16 tensors (converted to
float32, the network's dtype). What would compute other numbers than the original model
(``rope_scaling``, another activation, an MLP bias, a pre-quantized checkpoint) is refused with
:class:`~gscore.errors.UnsupportedModelError` rather than run wrong.

Everything is checked before a tensor is read: the config fields, then each tensor's name,
shape and dtype from the safetensors headers, against the shapes ``config.json`` implies;
errors name the file and the field or tensor. Tensors are then read one at a time through a
memory map (safetensors' numpy API), converted and handed to the network, so loading holds
the network plus about one tensor (``bench/hf_folder_memory.py`` measures it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import ml_dtypes  # noqa: F401 - registers numpy's bfloat16, which safetensors' numpy API needs for BF16 tensors
import numpy as np

from gscore.errors import ModelFolderError, UnsupportedModelError
from gscore.io.atomic import atomic_folder
from gscore.models.llama import LlamaConfig, LlamaForCausalLM, build_llama

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"

# model_type -> the one ``architectures`` entry read for it
SUPPORTED_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# Hugging Face's defaults for fields a config.json may leave out
_DEFAULT_MAX_POSITIONS = {"llama": 2048, "mistral": 131072, "qwen2": 32768}
_DEFAULT_TOKEN_IDS = {"llama": (1, 2), "mistral": (1, 2), "qwen2": (None, None)}
READABLE_DTYPES = ("F32", "F16", "BF16")  # safetensors dtype codes
_SUPPORTED = "supported: model_type " + ", ".join(SUPPORTED_MODEL_TYPES) + " (architectures " + ", ".join(SUPPORTED_MODEL_TYPES.values()) + ")"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFolderError(f"{path}: file not found")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(content, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, got {type(content).__name__}")
    return content


_REQUIRED = object()


class _Fields:
    """Typed reads of ``config.json`` fields; every error names the file and the field."""

    def __init__(self, raw: dict[str, Any], path: Path) -> None:
        self.raw, self.path = raw, path

    def fail(self, key: str, why: str) -> NoReturn:
        raise ModelFolderError(f"{self.path}: field {key!r} {why}")

    def get(self, key: str, default: Any) -> Any:
        value = self.raw.get(key, default)
        if value is _REQUIRED:
            self.fail(key, "is required")
        return value

    def positive_int(self, key: str, default: Any = _REQUIRED) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(key, f"must be a positive integer, got {value!r}")
        return value

    def positive_float(self, key: str, default: Any = _REQUIRED, source: dict[str, Any] | None = None) -> float:
        value = (self.raw if source is None else source).get(key, default)
        if value is _REQUIRED:
            self.fail(key, "is required")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self.fail(key, f"must be a positive number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def token_id(self, key: str, default: int | None) -> int:
        """A token id, or -1 when there is none; of a list (Llama 3's eos), the first."""
        value = self.get(key, default)
        if isinstance(value, list) and value:
            value = value[0]
        if value is None:
            return -1
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(key, f"must be a token id (a non-negative integer, a list of them, or null), got {value!r}")
        return value


def _refuse_unsupported(fields: _Fields) -> None:
    """Raise for anything that would make the network compute other numbers than the model."""
    path, raw = fields.path, fields.raw
    why = "gscore's Llama would compute different numbers, so the folder is refused"
    if raw.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (supported: 'silu'); {why}")
    if raw.get("rope_scaling") is not None:
        raise UnsupportedModelError(f"{path}: rope_scaling {raw['rope_scaling']!r} is not supported (supported: null, plain RoPE); {why}")
    rope = raw.get("rope_parameters")
    if rope is not None and (not isinstance(rope, dict) or rope.get("rope_type", "default") != "default"):
        raise UnsupportedModelError(f"{path}: rope_parameters {rope!r} is not supported (supported: rope_type 'default'); {why}")
    partial = raw.get("partial_rotary_factor", (rope or {}).get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise UnsupportedModelError(f"{path}: partial_rotary_factor {partial!r} is not supported (supported: 1.0); {why}")
    if fields.flag("mlp_bias", False):
        raise UnsupportedModelError(f"{path}: mlp_bias true is not supported (supported: false); {why}")
    if raw.get("quantization_config") is not None:
        raise UnsupportedModelError(f"{path}: a pre-quantized checkpoint (quantization_config) is not supported; load the float model and quantize it with gscore")


def _max_positions(fields: _Fields, model_type: str) -> int:
    """``max_position_embeddings``, capped by a sliding attention window.

    Up to the window, sliding-window attention equals full causal attention, so capping the
    usable length keeps every computed number right (longer inputs are refused by the model).
    """
    limit = fields.positive_int("max_position_embeddings", _DEFAULT_MAX_POSITIONS[model_type])
    windowed = model_type == "mistral" or (model_type == "qwen2" and fields.flag("use_sliding_window", False))
    if windowed and fields.raw.get("sliding_window") is not None:
        limit = min(limit, fields.positive_int("sliding_window"))
    return limit


def read_config(folder: str | os.PathLike[str]) -> LlamaConfig:
    """The :class:`LlamaConfig` of ``folder/config.json``, validated (see the module doc)."""
    path = Path(folder) / CONFIG_FILE
    fields = _Fields(_read_json(path), path)
    raw = fields.raw
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(f"{path}: model_type {model_type!r} is not supported; {_SUPPORTED}")
    architectures = raw.get("architectures")
    if architectures is not None and architectures != [SUPPORTED_MODEL_TYPES[model_type]]:
        raise UnsupportedModelError(f"{path}: architectures {architectures!r} is not supported for model_type {model_type!r}; {_SUPPORTED}")
    _refuse_unsupported(fields)

    hidden = fields.positive_int("hidden_size")
    heads = fields.positive_int("num_attention_heads")
    kv_heads = fields.positive_int("num_key_value_heads", heads)
    if heads % kv_heads:
        fields.fail("num_key_value_heads", f"({kv_heads}) must divide num_attention_heads ({heads})")
    if raw.get("head_dim") is not None:
        head_dim = fields.positive_int("head_dim")
    elif hidden % heads:
        fields.fail("num_attention_heads", f"({heads}) must divide hidden_size ({hidden}) when head_dim is not given")
    else:
        head_dim = hidden // heads
    if head_dim % 2:
        fields.fail("head_dim", f"must be even for rotary embeddings, got {head_dim}")
    rope = raw.get("rope_parameters") or {}
    bos, eos = _DEFAULT_TOKEN_IDS[model_type]
    attention_bias = fields.flag("attention_bias", False) if model_type == "llama" else False
    return LlamaConfig(
        vocab_size=fields.positive_int("vocab_size"),
        hidden_size=hidden,
        intermediate_size=fields.positive_int("intermediate_size"),
        num_layers=fields.positive_int("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        rope_theta=fields.positive_float("rope_theta", 10000.0, source=rope if "rope_theta" in rope else None),
        rms_norm_eps=fields.positive_float("rms_norm_eps", 1e-6),
        max_positions=_max_positions(fields, model_type),
        bos_token_id=fields.token_id("bos_token_id", bos),
        eos_token_id=fields.token_id("eos_token_id", eos),
        tie_word_embeddings=fields.flag("tie_word_embeddings", False),
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_proj_bias=attention_bias,
        head_dim=head_dim,
    )


def hf_config(config: LlamaConfig) -> dict[str, Any]:
    """``config.json`` content for ``config``: model_type qwen2 when only q/k/v carry a bias, else llama."""
    qwen2 = config.qkv_bias and not config.o_proj_bias
    if config.o_proj_bias and not config.qkv_bias:
        raise ModelFolderError("a bias on o_proj alone has no Hugging Face model_type (llama's attention_bias covers q/k/v/o)")
    content = {
        "architectures": [SUPPORTED_MODEL_TYPES["qwen2" if qwen2 else "llama"]],
        "model_type": "qwen2" if qwen2 else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_positions,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id if config.bos_token_id >= 0 else None,
        "eos_token_id": config.eos_token_id if config.eos_token_id >= 0 else None,
        "torch_dtype": "float32",
    }
    if not qwen2:
        content["attention_bias"] = config.qkv_bias
    return content


def expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """HF name -> shape of every tensor a folder must hold for ``config`` (projections ``[out, in]``)."""
    h, hd, ffn = config.hidden_size, config.head_dim, config.intermediate_size
    q, kv = config.num_heads * hd, config.num_kv_heads * hd
    shapes = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    projections = {
        "self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q),
        "mlp.gate_proj": (ffn, h), "mlp.up_proj": (ffn, h), "mlp.down_proj": (h, ffn),
    }
    biased = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"} if config.qkv_bias else set()
    if config.o_proj_bias:
        biased.add("self_attn.o_proj")
    for layer in range(config.num_layers):
        prefix = f"model.layers.{layer}."
        shapes[prefix + "input_layernorm.weight"] = (h,)
        shapes[prefix + "post_attention_layernorm.weight"] = (h,)
        for name, shape in projections.items():
            shapes[prefix + name + ".weight"] = shape
            if name in biased:
                shapes[prefix + name + ".bias"] = shape[:1]
    return shapes


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor is and what its header says: ``dtype`` is a safetensors code (``F32``, ``BF16``...)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]


def _open_safetensors(path: Path) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="np")
    except (OSError, SafetensorError) as err:
        raise ModelFolderError(f"{path}: not a readable safetensors file ({err})") from err


def _shard_files(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """The weight files and the index's ``weight_map`` (empty for a single file)."""
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE], {}
    index = folder / INDEX_FILE
    if not index.is_file():
        raise ModelFolderError(f"{folder}: no weights: expected {WEIGHTS_FILE} or {INDEX_FILE} (only safetensors weights are read, not pytorch_model.bin)")
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) and Path(v).name == v for v in weight_map.values()):
        raise ModelFolderError(f"{index}: field 'weight_map' must map tensor names to file names in the folder, got {str(weight_map)[:200]}")
    files = [folder / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            raise ModelFolderError(f"{index}: lists shard {file.name}, which is not in {folder}")
    return files, weight_map


def read_tensor_index(folder: str | os.PathLike[str]) -> dict[str, TensorEntry]:
    """Every tensor of the folder's weights with its file, dtype and shape, from the headers only."""
    folder = Path(folder)
    files, weight_map = _shard_files(folder)
    entries: dict[str, TensorEntry] = {}
    for file in files:
        with _open_safetensors(file) as f:
            for name in f.keys():
                if name in entries:
                    raise ModelFolderError(f"{folder}: tensor {name} is in both {entries[name].file.name} and {file.name}")
                view = f.get_slice(name)
                entries[name] = TensorEntry(file, view.get_dtype(), tuple(view.get_shape()))
    for name, file_name in weight_map.items():
        if name not in entries or entries[name].file.name != file_name:
            raise ModelFolderError(f"{folder / INDEX_FILE}: lists {name} in {file_name}, which does not hold it")
    return entries


def _ignored(name: str, config: LlamaConfig) -> bool:
    """Tensors a folder may hold that the model does not use: RoPE tables some exports keep
    (recomputed here) and a tied model's copy of the embeddings as ``lm_head.weight``."""
    return name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and config.tie_word_embeddings)


def check_tensors(folder: Path, entries: dict[str, TensorEntry], config: LlamaConfig) -> None:
    """Raise :class:`ModelFolderError` naming every missing, unexpected, mis-shaped or unreadable tensor."""
    expected = expected_shapes(config)
    problems = []
    for name, shape in expected.items():
        entry = entries.get(name)
        if entry is None:
            hint = " (config.json: tie_word_embeddings is false)" if name == "lm_head.weight" else ""
            problems.append(f"missing {name}{hint}")
        elif entry.shape != shape:
            problems.append(f"{name} in {entry.file.name}: shape {entry.shape}, config.json implies {shape}")
        elif entry.dtype not in READABLE_DTYPES:
            problems.append(f"{name} in {entry.file.name}: dtype {entry.dtype}, readable are {', '.join(READABLE_DTYPES)}")
    problems += [f"unexpected {name} in {entry.file.name}" for name, entry in entries.items() if name not in expected and not _ignored(name, config)]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ModelFolderError(f"{folder}: weights do not match config.json: {shown}")


class FolderWeights(Mapping[str, np.ndarray]):
    """HF name -> float32 array, read from the memory-mapped safetensors file when asked.

    Nothing is cached: each access reads (and for float16/bfloat16 converts) one tensor, and
    the file is unmapped again, so a consumer that sets one parameter at a time never holds
    more than that tensor beside the network.
    """

    def __init__(self, entries: dict[str, TensorEntry]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        with _open_safetensors(entry.file) as f:
            return f.get_tensor(name).astype(np.float32, copy=False)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class LlamaFolder:
    """A checked Hugging Face-format folder: its config and where each tensor is."""

    path: Path
    config: LlamaConfig
    tensors: dict[str, TensorEntry]

    def weights(self) -> FolderWeights:
        """The folder's tensors as float32, read lazily."""
        return FolderWeights(self.tensors)

    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` of ``tokenizer.json``."""
        from tokenizers import Tokenizer

        path = self.path / TOKENIZER_FILE
        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for a malformed file
            raise ModelFolderError(f"{path}: not a readable tokenizers JSON file ({err})") from err

    def build(self, num_layers: int | None = None) -> LlamaForCausalLM:
        """The network with the folder's weights; ``num_layers`` keeps only the first layers."""
        config = self.config
        if num_layers is not None:
            if not 0 < num_layers <= config.num_layers:
                raise ModelFolderError(f"num_layers must be in 1..{config.num_layers} (the folder's num_hidden_layers), got {num_layers}")
            config = replace(config, num_layers=num_layers)
        return build_llama(config, self.weights())


def open_llama_folder(folder: str | os.PathLike[str]) -> LlamaFolder:
    """Check ``folder`` (config, tokenizer file, every tensor header) without reading a tensor."""
    path = Path(folder)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: no such folder (expected a Hugging Face-format model folder)")
    config = read_config(path)
    if not (path / TOKENIZER_FILE).is_file():
        raise ModelFolderError(f"{path}: {TOKENIZER_FILE} not found (a Hugging Face tokenizers file is required)")
    tensors = read_tensor_index(path)
    check_tensors(path, tensors, config)
    return LlamaFolder(path, config, tensors)


def load_llama(folder: str | os.PathLike[str], num_layers: int | None = None) -> tuple[LlamaForCausalLM, Any]:
    """``(network in eval mode, tokenizers.Tokenizer)`` of a Hugging Face-format Llama-family folder."""
    opened = open_llama_folder(folder)
    return opened.build(num_layers), opened.tokenizer()


def save_llama_folder(folder: str | os.PathLike[str], config: LlamaConfig, weights: Mapping[str, np.ndarray], tokenizer_json: str) -> Path:
    """Write a folder that :func:`open_llama_folder` reads (one float32 ``model.safetensors``
    holding the tensors ``config`` uses; others in ``weights`` are left out).

    Written atomically: into a temporary folder, checked by reading it back, then renamed to
    ``folder`` (which must not exist yet: ``FileExistsError``).
    """
    from safetensors.numpy import save_file

    names = expected_shapes(config)
    with atomic_folder(folder) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config(config), indent=2))
        (tmp / TOKENIZER_FILE).write_text(tokenizer_json)
        save_file({name: np.ascontiguousarray(weights[name], dtype=np.float32) for name in names if name in weights}, str(tmp / WEIGHTS_FILE), metadata={"format": "np"})
        open_llama_folder(tmp)
    return Path(folder)
