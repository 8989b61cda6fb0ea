"""Mini-batch training of a classifier with ``value_and_grad`` (no ``Model`` wrapper needed)."""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm


@dataclass(frozen=True)
class TrainResult:
    """Loss of the last epoch (mean cross-entropy) and the number of optimizer steps taken."""

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
) -> TrainResult:
    """Train ``net`` on images ``x`` / int labels ``y`` with Adam and cross-entropy.

    Batches are drawn from a numpy permutation per epoch (``seed`` fixes the order), so the
    loop needs no CPU-unsupported random op and is reproducible.
    """
    loss_fn = nn.CrossEntropyLoss()
    params = net.trainable_params()
    optimizer = nn.Adam(params, learning_rate=learning_rate)

    def forward(images: Tensor, labels: Tensor) -> Tensor:
        return loss_fn(net(images), labels)

    grad_fn = ms.value_and_grad(forward, None, params)
    rng = np.random.default_rng(seed)
    net.set_train(True)
    steps, epoch_loss = 0, float("nan")
    for _ in tqdm(range(epochs), desc="train", disable=not progress, leave=False):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            loss, grads = grad_fn(Tensor(x[idx]), Tensor(y[idx]))
            optimizer(grads)
            losses.append(float(loss.asnumpy()))
            steps += 1
        epoch_loss = float(np.mean(losses))
    net.set_train(False)
    return TrainResult(final_loss=epoch_loss, steps=steps)
