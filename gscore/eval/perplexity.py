"""Perplexity of a causal LM over fixed token windows, with a paired standard error.

Each window starts a fresh sequence (KV caches reset) and predicts tokens 1..T-1 from their
prefixes; perplexity is ``exp`` of the mean negative log-likelihood over all predicted tokens
of all windows. Log-softmax runs in float64 numpy so the metric adds no error of its own.

Two networks evaluated on the same windows are compared window by window
(:func:`paired_delta`): the per-window differences of mean NLL cancel most of the variation
between windows, so their standard error says how much of a perplexity change is noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from tqdm import tqdm


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis of ``logits``, float64 (same shape): shifted by the
    maximum, so huge logits neither overflow nor lose the small ones."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``ids[1:]`` under ``logits[:-1]`` (``[T, vocab]``, ``[T]``)."""
    z = logits[:-1].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return log_norm - z[np.arange(len(ids) - 1), ids[1:]]


def window_nll(forward: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, progress: bool = False) -> np.ndarray:
    """Mean NLL (nats per token) of every window, float64 ``[n]``; ``forward(ids [T]) -> logits [T, vocab]``."""
    return np.array([token_nll(forward(ids), ids).mean() for ids in tqdm(windows, desc="perplexity", disable=not progress, leave=False)])


def perplexity(forward: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, progress: bool = False) -> float:
    """``exp(mean NLL)`` over every predicted token of ``windows`` (all windows have the same length)."""
    return float(np.exp(window_nll(forward, windows, progress).mean()))


@dataclass(frozen=True)
class PairedDelta:
    """Relative perplexity change of a network against a reference on the same windows.

    ``percent`` = ``100 (exp(mean d) - 1)`` with ``d`` the per-window NLL differences;
    ``stderr`` is its standard error over windows (delta method), in percentage points.
    """

    percent: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.percent:+.2f} % ± {self.stderr:.2f}"


def paired_delta(nll: np.ndarray, reference_nll: np.ndarray) -> PairedDelta:
    """:class:`PairedDelta` of per-window NLLs ``nll`` against ``reference_nll`` (same windows, same order)."""
    d = np.asarray(nll, np.float64) - np.asarray(reference_nll, np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"paired_delta needs two equal-length 1-D arrays of per-window NLLs, got shapes {np.shape(nll)} and {np.shape(reference_nll)}")
    ratio = float(np.exp(d.mean()))
    stderr = ratio * float(d.std(ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return PairedDelta(100.0 * (ratio - 1.0), 100.0 * stderr)


def llama_forward(net: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``forward`` for :func:`perplexity` over a :class:`~gscore.models.llama.LlamaForCausalLM`."""
    from mindspore import Tensor

    def forward(ids: np.ndarray) -> np.ndarray:
        net.reset_cache()
        logits = net(Tensor(ids[None].astype(np.int32)), 0).asnumpy()[0]
        net.reset_cache()
        return logits

    return forward
