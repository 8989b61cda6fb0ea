"""A real, small Llama-family folder for fast tests: SmolLM2-135M's embedding, tokenizer and
first decoder layers (real weights, real activation outliers), written as a Hugging
Face-format folder that ``gscore quantize`` reads like any user's model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gscore.models.hf_folder import open_llama_folder, save_llama_folder
from gscore.models.smollm2 import smollm2_folder


def write_truncated_smollm2(folder: str | Path, num_layers: int = 2) -> Path:
    """Write SmolLM2-135M cut to its first ``num_layers`` decoder layers into ``folder`` (new)."""
    source = open_llama_folder(smollm2_folder())
    tokenizer_json = (source.path / "tokenizer.json").read_text()
    return save_llama_folder(folder, replace(source.config, num_layers=num_layers), source.weights(), tokenizer_json)
