"""Data-parallel training pieces: each worker's share of a global batch, and the gradient mean.

A step of data-parallel training on ``n`` workers equals a step of one process on the global
batch: every worker takes ``1/n`` of the batch's rows (:func:`local_rows`), computes the mean
loss and its gradients on them, and MindSpore's :class:`~mindspore.nn.DistributedGradReducer`
(an ``AllReduce`` SUM divided by ``n``, in the data-parallel mode :func:`gscore.dist.init` sets)
averages the gradients, which is the gradient of the mean loss over the global batch. Every
worker then applies the same update to the same parameters. Activation ranges that fake
quantization observes are taken over the global batch too (:func:`gscore.nn.fake_quant.batch_range`).
Both are operators, so a compiled training step holds them too.

BatchNorm in training mode normalises with its own batch's statistics; MindSpore's
``SyncBatchNorm`` does not build on CPU here, so a worker's BatchNorm would see other numbers
than one process on the global batch, and workers' running statistics would drift apart:
:func:`refuse_batch_statistics` says so instead.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from mindspore import nn

from gscore.dist.runtime import active, rank, size
from gscore.errors import ConfigError


def local_rows(batch: np.ndarray) -> np.ndarray:
    """This worker's rows (indices) of a global batch: every ``size``-th from ``rank``.

    The global batch must split evenly, so that the mean of the workers' mean losses is the
    mean over the global batch.
    """
    if not active():
        return batch
    if len(batch) % size():
        raise ConfigError(f"a global batch of {len(batch)} rows does not split evenly over {size()} data-parallel workers; use a multiple of {size()}")
    return batch[rank() :: size()]


def gradient_mean(parameters: list[Any]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A function of the gradients of ``parameters``: their mean over workers (identity in one process)."""
    if not active():
        return lambda grads: grads
    return nn.DistributedGradReducer(parameters, mean=True, degree=size())


def refuse_batch_statistics(network: nn.Cell) -> None:
    """Raise :class:`~gscore.errors.ConfigError` in a data-parallel job if ``network`` holds a
    BatchNorm that normalises with batch statistics in training (module docstring)."""
    if not active():
        return
    found = [name for name, cell in network.cells_and_names() if isinstance(cell, nn.BatchNorm2d | nn.BatchNorm1d) and cell.use_batch_statistics is not False]
    if found:
        raise ConfigError(
            f"data-parallel training needs BatchNorm statistics synchronised across workers, which MindSpore's CPU backend does not "
            f"provide (SyncBatchNorm); {type(network).__name__} trains BatchNorm {found[:3]}{' ...' if len(found) > 3 else ''} "
            "with batch statistics: train it in one process, or fold/freeze the BatchNorm first"
        )
