"""Classification metrics computed batch by batch in MindSpore, reduced in numpy."""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn

from gscore.eval.perplexity import log_softmax


def predict_logits(net: nn.Cell, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits ``[n, classes]`` (float32) of ``net`` in eval mode over ``x``."""
    net.set_train(False)
    chunks = [net(Tensor(x[i : i + batch_size])).asnumpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks).astype(np.float32)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def example_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Negative log-likelihood (nats) of each label under the softmax of its row of ``logits``
    ``[n, classes]``: float64 ``[n]``. Per example, so two classifiers can be compared paired
    (:func:`paired_difference`), which separates them where accuracy ties."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    if logits.ndim != 2 or labels.shape != (len(logits),) or (labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1])):
        raise ValueError(f"need logits [n, classes] and n labels in [0, classes), got logits of shape {logits.shape} and labels of shape {labels.shape} in [{labels.min(initial=0)}, {labels.max(initial=0)}]")
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the labels under the softmax of ``logits`` ``[n, classes]``."""
    return float(example_cross_entropy(logits, labels).mean())


def paired_difference(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean of ``values - reference`` over examples and its standard error: two per-example
    results (accuracy as 0/1, a loss, ...) of two models on the same examples, in the same order."""
    if np.ndim(values) != 1 or np.shape(values) != np.shape(reference) or len(values) < 2:
        raise ValueError(f"need two equal-length 1-D arrays of at least 2 per-example results, got shapes {np.shape(values)} and {np.shape(reference)}")
    d = np.asarray(values, np.float64) - np.asarray(reference, np.float64)
    return float(d.mean()), float(d.std(ddof=1)) / float(np.sqrt(len(d)))


def paired_accuracy_difference(correct: np.ndarray, reference_correct: np.ndarray) -> tuple[float, float]:
    """Accuracy of one classifier minus another's on the same examples, and the standard error of
    that difference over the examples, both in percentage points.

    ``correct`` / ``reference_correct`` are per-example booleans in the same order. Pairing
    cancels what the two share (the easy and the impossible examples), so the error is that of
    the examples on which they disagree: a 0.3-point lead on 1000 test images can be noise.
    """
    difference, stderr = paired_difference(correct, reference_correct)
    return 100.0 * difference, 100.0 * stderr
