"""Classification metrics computed batch by batch in MindSpore, reduced in numpy."""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn


def predict_logits(net: nn.Cell, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits ``[n, classes]`` (float32) of ``net`` in eval mode over ``x``."""
    net.set_train(False)
    chunks = [net(Tensor(x[i : i + batch_size])).asnumpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks).astype(np.float32)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the labels under the softmax of ``logits`` ``[n, classes]``."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels, np.int64)].mean())
