"""SCOP's knockoff stage: per-channel coefficients that choose between real and knockoff features.

Every step of knockoff training sees a doubled batch ``concat[x, x[perm]]`` with labels
``concat[y, y[perm]]``; the second half is the *knockoff*: the same images in another order,
so its features have the same distribution as the real ones but carry the wrong content for
each position. Each prunable convolution is wrapped in :class:`KnockoffConv2d`, whose learnable
coefficient ``k`` (shape ``[1, C, 1, 1]``, initial 0.5) mixes, in training mode only,

    real half  <-  k * real + (1 - k) * knockoff        knockoff half unchanged

before the layers that follow. Training ``k`` with the task loss drives it up where the real
feature matters and leaves it low where a knockoff does as well.

Differences from Golden Stick, on purpose: the permutation is drawn with numpy (MindSpore's
``Randperm`` has no CPU kernel); only the coefficients receive gradients and BatchNorm layers
stay in inference mode, so the network's weights *and* its BN statistics are exactly as before
the stage (Golden Stick updates the statistics with mixed features). In eval mode the wrapper
is the plain convolution, so the accuracy after the knockoff stage equals the float accuracy.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from tqdm import tqdm

from gscore.train.classifier import TrainResult

KFSCALE = "kfscale"


class KnockoffConv2d(nn.Cell):
    """A ``Conv2d`` plus one knockoff coefficient per output channel (``kfscale``, ``[1, C, 1, 1]``).

    In training mode its batch must be ``[real; knockoff]`` halves, as :func:`train_knockoff`
    builds it; in eval mode it is the plain convolution.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.kfscale = Parameter(Tensor(np.full((1, conv.out_channels, 1, 1), 0.5, np.float32)), name=KFSCALE)

    def construct(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if not self.training:
            return out
        if out.shape[0] % 2:
            raise ValueError(f"knockoff training needs a doubled batch [real; knockoff], got an odd batch of {out.shape[0]}; use train_knockoff")
        half = out.shape[0] // 2
        real, knockoff = out[:half], out[half:]
        return ops.concat((self.kfscale * real + (1 - self.kfscale) * knockoff, knockoff), 0)


def knockoff_params(network: nn.Cell) -> list[Parameter]:
    """The ``kfscale`` parameters of every :class:`KnockoffConv2d` in ``network``."""
    return [cell.kfscale for _, cell in network.cells_and_names() if isinstance(cell, KnockoffConv2d)]


def _set_mode(network: nn.Cell, training: bool) -> None:
    """Whole network in ``training`` mode, but every BatchNorm in inference mode."""
    network.set_train(training)
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.set_train(False)


def train_knockoff(
    network: nn.Cell,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train the knockoff coefficients of ``network`` on images ``x`` / int labels ``y``.

    Adam on the coefficients only, cross-entropy over the doubled batch. Batch order and
    knockoff permutations come from ``numpy.random.default_rng(seed)``. Leaves the network in
    eval mode.
    """
    params = knockoff_params(network)
    if not params:
        raise ValueError("the network holds no KnockoffConv2d; run SCOP.apply on it first")
    if len(x) < batch_size:
        raise ValueError(f"knockoff training needs at least one full batch: {len(x)} images < batch size {batch_size}")
    loss_fn = nn.CrossEntropyLoss()
    optimizer = nn.Adam(params, learning_rate=learning_rate)
    grad_fn = ms.value_and_grad(lambda images, labels: loss_fn(network(images), labels), None, params)
    rng = np.random.default_rng(seed)
    _set_mode(network, True)
    steps, epoch_loss = 0, float("nan")
    try:
        for _ in tqdm(range(epochs), desc="knockoff", disable=not progress, leave=False):
            order = rng.permutation(len(x))
            losses = []
            for start in range(0, len(x) - batch_size + 1, batch_size):
                idx = order[start : start + batch_size]
                both = np.concatenate([idx, idx[rng.permutation(batch_size)]])
                loss, grads = grad_fn(Tensor(x[both]), Tensor(y[both]))
                optimizer(grads)
                losses.append(float(loss.asnumpy()))
                steps += 1
            epoch_loss = float(np.mean(losses))
    finally:
        network.set_train(False)
    return TrainResult(final_loss=epoch_loss, steps=steps)
