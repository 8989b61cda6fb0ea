"""Perplexity of a causal LM over fixed token windows.

Each window starts a fresh sequence (KV caches reset) and predicts tokens 1..T-1 from their
prefixes; perplexity is ``exp`` of the mean negative log-likelihood over all predicted tokens
of all windows. Log-softmax runs in float64 numpy so the metric adds no error of its own.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from tqdm import tqdm


def token_nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``ids[1:]`` under ``logits[:-1]`` (``[T, vocab]``, ``[T]``)."""
    z = logits[:-1].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return log_norm - z[np.arange(len(ids) - 1), ids[1:]]


def perplexity(forward: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, progress: bool = False) -> float:
    """``exp(mean NLL)`` where ``forward(ids [T]) -> logits [T, vocab]`` runs one fresh sequence."""
    nll = [token_nll(forward(ids), ids) for ids in tqdm(windows, desc="perplexity", disable=not progress, leave=False)]
    return float(np.exp(np.concatenate(nll).mean()))


def llama_forward(net: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``forward`` for :func:`perplexity` over a :class:`~gscore.models.llama.LlamaForCausalLM`."""
    from mindspore import Tensor

    def forward(ids: np.ndarray) -> np.ndarray:
        net.reset_cache()
        logits = net(Tensor(ids[None].astype(np.int32)), 0).asnumpy()[0]
        net.reset_cache()
        return logits

    return forward
