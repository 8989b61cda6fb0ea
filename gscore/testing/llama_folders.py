"""Synthetic Hugging Face-format Llama folders: random weights of any size, for tests and benchmarks
that need a model of a chosen depth (memory, streaming) rather than a real one.

Weights are drawn N(0, 0.02) like a freshly initialised model, norms are ones, and the
tokenizer is a word-level one over ``w0 .. w{vocab-1}``; calibration windows are random token
ids. The folder is written with :func:`gscore.models.hf_folder.save_llama_folder` (float32,
checked on write), so it loads like any downloaded model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gscore.models.hf_folder import expected_shapes, save_llama_folder
from gscore.models.llama import LlamaConfig


def word_tokenizer_json(vocab: int) -> str:
    """A ``tokenizers`` JSON of a word-level tokenizer over ``w0 .. w{vocab-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def write_random_llama_folder(folder: str | os.PathLike[str], config: LlamaConfig, seed: int = 0) -> Path:
    """A folder holding ``config`` with random weights (module docstring); returns its path."""
    rng = np.random.default_rng(seed)
    weights = {
        name: np.ones(shape, np.float32) if name.endswith("norm.weight") else (rng.standard_normal(shape) * 0.02).astype(np.float32)
        for name, shape in expected_shapes(config).items()
    }
    return save_llama_folder(folder, config, weights, word_tokenizer_json(config.vocab_size))


def random_windows(config: LlamaConfig, count: int, tokens: int, seed: int = 0) -> np.ndarray:
    """``count`` windows of ``tokens`` random token ids, int32 ``[count, tokens]``."""
    return np.random.default_rng(seed).integers(0, config.vocab_size, (count, tokens)).astype(np.int32)


def float_block_bytes(config: LlamaConfig) -> int:
    """Bytes of one decoder layer's float32 weights."""
    shapes = expected_shapes(config)
    return 4 * sum(int(np.prod(shape)) for name, shape in shapes.items() if name.startswith("model.layers.0."))
