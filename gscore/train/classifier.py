"""Mini-batch training of a classifier with ``value_and_grad`` (no ``Model`` wrapper needed).

Under ``msrun`` it trains data-parallel (:mod:`gscore.dist.training`): every worker draws the
same global batches, runs its share of each, and applies the mean gradient, so the run equals
one process training on the same global batches up to float summation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from gscore import dist
from gscore.dist.training import gradient_mean, local_rows, refuse_batch_statistics


@dataclass(frozen=True)
class TrainResult:
    """Loss of the last epoch (mean cross-entropy over its global batches) and the number of optimizer steps taken."""

    final_loss: float
    steps: int


def train_classifier(
    net: nn.Cell,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    before_step: Callable[[], Any] | None = None,
    compiled: bool = False,
) -> TrainResult:
    """Train ``net`` on images ``x`` / int labels ``y`` with Adam and cross-entropy.

    Batches are drawn from a numpy permutation per epoch (``seed`` fixes the order), so the
    loop needs no CPU-unsupported random op and is reproducible. ``before_step`` runs before
    every optimizer step (e.g. SLB's ``schedule.step(net)``). ``batch_size`` is the global
    batch: in a data-parallel job each of ``n`` workers runs ``batch_size / n`` rows of it.

    ``compiled=True`` runs each training step (forward, backward and the Adam update) as one
    compiled MindSpore graph instead of op by op. A fake-quant network gains most: op by op,
    its quantizers' many small operators cost more to dispatch than to compute (a SimQAT A8W8
    step on the digit ResNet: 1.64x the float step op by op, 1.13x compiled, and the compiled
    float step 1.9x faster than op by op; bench/results/qat_step.md).
    Float and SimQAT networks compute the same step either way
    (plugins/simqat/tests/test_compiled_step.py). Not for SLB: its schedule switches the
    network from soft to hard weights between steps, a Python attribute a compiled graph does
    not see change. Data-parallel jobs (``msrun``) compile it too: the gradient mean and the
    observers' global ranges are collective operators inside the graph.
    """
    refuse_batch_statistics(net)
    loss_fn = nn.CrossEntropyLoss()
    params = net.trainable_params()
    optimizer = nn.Adam(params, learning_rate=learning_rate)
    reduce_gradients = gradient_mean(optimizer.parameters)

    def forward(images: Tensor, labels: Tensor) -> Tensor:
        return loss_fn(net(images), labels)

    grad_fn = ms.value_and_grad(forward, None, params)

    def train_step(images: Tensor, labels: Tensor) -> Tensor:
        loss, grads = grad_fn(images, labels)
        optimizer(reduce_gradients(grads))
        return loss

    step = ms.jit(train_step) if compiled else train_step
    rng = np.random.default_rng(seed)
    net.set_train(True)
    steps, epoch_loss = 0, float("nan")
    for _ in tqdm(range(epochs), desc="train", disable=not progress or not dist.is_root(), leave=False):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = local_rows(order[start : start + batch_size])
            if before_step is not None:
                before_step()
            loss = step(Tensor(x[idx]), Tensor(y[idx]))
            losses.append(float(loss.asnumpy()))
            steps += 1
        epoch_loss = float(dist.all_sum(np.mean(losses))) / dist.size()  # equal shares: the mean over the global batches
    net.set_train(False)
    return TrainResult(final_loss=epoch_loss, steps=steps)
