"""Small Llamas for fast tests: a real one (SmolLM2-135M's embedding, tokenizer and first decoder
layers, real weights and activation outliers) written as a Hugging Face-format folder that
``gscore quantize`` reads like any user's model, and a random one built in memory for tests of
mechanics (decoding, batching) that need no real weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor

from gscore.models.hf_folder import open_llama_folder, save_llama_folder
from gscore.models.llama import LlamaConfig, LlamaForCausalLM, build_llama
from gscore.models.smollm2 import smollm2_folder


def write_truncated_smollm2(folder: str | Path, num_layers: int = 2) -> Path:
    """Write SmolLM2-135M cut to its first ``num_layers`` decoder layers into ``folder`` (new)."""
    source = open_llama_folder(smollm2_folder())
    tokenizer_json = (source.path / "tokenizer.json").read_text()
    return save_llama_folder(folder, replace(source.config, num_layers=num_layers), source.weights(), tokenizer_json)


def random_llama(rng: np.random.Generator, scale: float, **config: Any) -> LlamaForCausalLM:
    """A Llama (by default one block of width 32, vocabulary 64; ``config`` overrides
    :class:`~gscore.models.llama.LlamaConfig` fields) whose every parameter is drawn from
    ``rng`` as standard normal times ``scale``, in parameter order."""
    defaults = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 4, "num_kv_heads": 2, "max_positions": 64}
    net = build_llama(LlamaConfig(**{**defaults, **config}))
    for p in net.get_parameters():
        p.set_data(Tensor((rng.standard_normal(p.shape) * scale).astype(np.float32)))
    return net
