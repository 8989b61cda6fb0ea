"""SCOP's knockoff stage: bounded per-channel control coefficients that choose between real and
knockoff features (Tang et al., "SCOP: Scientific Control for Reliable Neural Network Pruning",
NeurIPS 2020).

Every step sees a doubled batch ``concat[x, x_knockoff]``: ``x_knockoff`` are *other* training
images drawn at random, so their features follow the data distribution but carry no information
about the real images' labels (the paper draws knockoff images from a generator trained on the
data; images of the training set itself are exact samples of that distribution). Each prunable
channel group (:class:`~gscore.nn.trace.ChannelGroup`) owns one coefficient ``k`` per channel in
``[0, 1]``, shared by every convolution of the group, and each of those convolutions is wrapped in
:class:`KnockoffConv2d`, which in training mode mixes

    real half  <-  k * real + (1 - k) * knockoff        knockoff half unchanged

before the layers that follow (the paper's selection layer with ``beta = k``, ``beta~ = 1 - k``).
Sharing ``k`` across a residual group mixes the *sum* of its channels, which is exactly what
removing them removes. Only the coefficients train, on the cross-entropy of the real half
(the knockoff half's logits do not depend on ``k``); after every optimizer step they are
projected back onto ``[0, 1]`` (clipped), as the paper's constraint requires. BatchNorm layers
stay in inference mode (per-channel affine maps, so mixing before or after them is the same), so
the network's weights *and* statistics are exactly as before the stage.

What separates real from knockoff features: a channel the network needs is pushed to ``k = 1``
by the task loss alone, but a redundant one has no gradient and sits at its start value, and
every channel the network uses at all ends at the bound 1, so the ranking among them is left to
the channel scale. A ramped cost ``lambda(t) * mean(k)`` (``separation``; ``lambda`` rises
linearly from 0 to ``separation`` over the run) charges every channel for using its real
feature, so channels whose real feature is not worth the charge slide to ``k = 0`` (their
knockoff serves as well), and the ones that stay at 1 are those the task needs even when their
neighbours are already knockoffs. ``separation=0`` is the paper's plain objective.

In eval mode the wrapper is the plain convolution, so the accuracy after the knockoff stage
equals the float accuracy. The permutations and draws are numpy (MindSpore's ``Randperm`` has
no CPU kernel).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from tqdm import tqdm

from gscore.train.classifier import TrainResult

KFSCALE = "kfscale"


class KnockoffConv2d(nn.Cell):
    """A ``Conv2d`` and its group's knockoff coefficients ``kfscale`` (``[1, C, 1, 1]``, shared).

    In training mode its batch must be ``[real; knockoff]`` halves, as :func:`train_knockoff`
    builds it; in eval mode it is the plain convolution.
    """

    def __init__(self, conv: nn.Conv2d, kfscale: Parameter) -> None:
        super().__init__()
        if tuple(kfscale.shape) != (1, conv.out_channels, 1, 1):
            raise ValueError(f"kfscale must have shape (1, {conv.out_channels}, 1, 1), got {tuple(kfscale.shape)}")
        self.conv = conv
        self.kfscale = kfscale

    def construct(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if not self.training:
            return out
        if out.shape[0] % 2:
            raise ValueError(f"knockoff training needs a doubled batch [real; knockoff], got an odd batch of {out.shape[0]}; use train_knockoff")
        half = out.shape[0] // 2
        real, knockoff = out[:half], out[half:]
        return ops.concat((self.kfscale * real + (1 - self.kfscale) * knockoff, knockoff), 0)


def new_coefficients(group: str, channels: int, start: float = 0.5) -> Parameter:
    """The ``[1, channels, 1, 1]`` coefficients of one channel group, all at ``start``."""
    return Parameter(Tensor(np.full((1, channels, 1, 1), start, np.float32)), name=f"{group}.{KFSCALE}")


def knockoff_params(network: nn.Cell) -> list[Parameter]:
    """The distinct ``kfscale`` parameters of the :class:`KnockoffConv2d` cells in ``network``."""
    seen: dict[int, Parameter] = {}
    for _, cell in network.cells_and_names():
        if isinstance(cell, KnockoffConv2d):
            seen.setdefault(id(cell.kfscale), cell.kfscale)
    return list(seen.values())


def _set_mode(network: nn.Cell, training: bool) -> None:
    """Whole network in ``training`` mode, but every BatchNorm in inference mode."""
    network.set_train(training)
    for _, cell in network.cells_and_names():
        if isinstance(cell, (nn.BatchNorm2d, nn.BatchNorm1d)):
            cell.set_train(False)


def _project(params: list[Parameter]) -> None:
    """Clip every coefficient back onto [0, 1] (the projection step of projected gradient descent).

    In place (``ops.assign``): ``Parameter.set_data`` would detach the parameter from the
    optimizer, whose later updates then no longer reach it.
    """
    for param in params:
        ops.assign(param, ops.clamp(param, 0.0, 1.0))


def train_knockoff(
    network: nn.Cell,
    coefficients: Mapping[str, Parameter],
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    separation: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train the knockoff ``coefficients`` (group name -> ``kfscale``) of ``network`` on images
    ``x`` / int labels ``y``.

    Adam (``betas = (0.5, 0.9)``, the paper's) on the coefficients only; loss = cross-entropy of
    the real half + ``separation * t * mean(k)`` with ``t`` rising linearly from 0 to 1 over the
    run; after every step the coefficients are clipped to [0, 1]. Batch order and knockoff draws
    come from ``numpy.random.default_rng(seed)``. Leaves the network in eval mode.
    """
    params = list(coefficients.values())
    if not params:
        raise ValueError("no knockoff coefficients to train; run SCOP.apply on the network first")
    if len(x) < batch_size:
        raise ValueError(f"knockoff training needs at least one full batch: {len(x)} images < batch size {batch_size}")
    loss_fn = nn.CrossEntropyLoss()
    optimizer = nn.Adam(params, learning_rate=learning_rate, beta1=0.5, beta2=0.9)
    channels = float(sum(int(np.prod(p.shape)) for p in params))

    def objective(images: Tensor, labels: Tensor, pressure: Tensor) -> Tensor:
        logits = network(images)[: labels.shape[0]]
        cost = sum(ops.reduce_sum(p) for p in params) / channels
        return loss_fn(logits, labels) + pressure * cost

    grad_fn = ms.value_and_grad(objective, None, params)
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(x) // batch_size
    total = epochs * steps_per_epoch
    _set_mode(network, True)
    steps, epoch_loss = 0, float("nan")
    try:
        for _ in tqdm(range(epochs), desc="knockoff", disable=not progress, leave=False):
            order = rng.permutation(len(x))
            losses = []
            for start in range(0, steps_per_epoch * batch_size, batch_size):
                idx = order[start : start + batch_size]
                knockoff = rng.choice(len(x), batch_size)
                pressure = Tensor(np.float32(separation * steps / max(total - 1, 1)))
                loss, grads = grad_fn(Tensor(np.concatenate([x[idx], x[knockoff]])), Tensor(y[idx]), pressure)
                optimizer(grads)
                steps += 1
                _project(params)
                losses.append(float(loss.asnumpy()))
            epoch_loss = float(np.mean(losses))
    finally:
        network.set_train(False)
    return TrainResult(final_loss=epoch_loss, steps=steps)
