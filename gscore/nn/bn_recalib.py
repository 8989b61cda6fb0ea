"""Re-estimating BatchNorm statistics after a network changed under them (e.g. after pruning).

Removing channels changes what the layers after them compute: the BatchNorm that follows the
consumer still normalises with the mean and variance of the unpruned network, which can cost
far more accuracy than the removed channels themselves. Running training data through the
network with only the BatchNorm layers in training mode re-estimates those statistics (no
gradient, no weight changes). MindSpore's BatchNorm keeps an exponential moving average
(``new = momentum * old + (1 - momentum) * batch``, momentum 0.9 by default), so after ``n``
batches the old statistics weigh ``momentum ** n`` (0.9 ** 50 = 0.5 %).
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn


def recalibrate_batchnorm(network: nn.Cell, images: np.ndarray, batch_size: int = 64, batches: int = 50, seed: int = 0) -> int:
    """Update every ``BatchNorm2d``'s moving statistics from ``batches`` random batches of ``images``.

    Other layers stay in inference mode (dropout off). Leaves the network in eval mode and
    returns the number of batches run. Batches are drawn with numpy (``seed``), with
    replacement across batches when ``images`` holds fewer than ``batches * batch_size``.
    """
    norms = [cell for _, cell in network.cells_and_names() if isinstance(cell, nn.BatchNorm2d)]
    if not norms:
        raise ValueError(f"{type(network).__name__} has no BatchNorm2d to recalibrate")
    if batch_size < 2 or len(images) < batch_size:
        raise ValueError(f"need batch_size >= 2 and at least one batch of images, got batch_size={batch_size} and {len(images)} images")
    rng = np.random.default_rng(seed)
    network.set_train(False)
    for norm in norms:
        norm.set_train(True)
    try:
        for _ in range(batches):
            network(Tensor(images[rng.choice(len(images), batch_size, replace=False)]))
    finally:
        network.set_train(False)
    return batches
