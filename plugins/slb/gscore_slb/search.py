"""The SLB weight: a softmax over ``2**bits`` candidate values per weight element.

Each weight element ``i`` of an output channel ``c`` holds logits ``A[i, k]`` over the levels
``v_k`` (1 bit: ``{-1, +1}``; 2 and 4 bits: ``linspace(-1, 1, 2**bits)``) and the layer has a
per-channel scale ``alpha[c]``. In soft mode the weight is
``alpha[c] * sum_k softmax(T * A[i])_k * v_k``; in hard mode (after the schedule's end and in
evaluation) it is ``alpha[c] * v[argmax_k A[i, k]]``, the value the deployed network stores.

Unlike Golden Stick (no scale; the following BatchNorm absorbs it) the scale ``alpha`` is
trainable and initialised from the weights, so networks without BatchNorm (LeNet) work too.
Initialisation from pretrained weights sets ``alpha`` (1 bit: ``mean|w|``, the L1-optimal
binary scale; else ``max|w|``) and logits ``A[i, k] = -((w_i / alpha - v_k) / step)**2``
(``step`` = level spacing), whose argmax is the nearest level (round-to-nearest) and whose
softmax is centred on ``w_i``. Re-initialisation (Golden Stick's behaviour) draws the logits
from N(0, 1) and sets ``alpha`` to the He-normal standard deviation ``sqrt(2 / fan_in)``.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


def levels(bits: int) -> np.ndarray:
    """The ``2**bits`` candidate values (float32, ascending, in [-1, 1])."""
    return np.array([-1.0, 1.0], np.float32) if bits == 1 else np.linspace(-1.0, 1.0, 1 << bits, dtype=np.float32)


def init_from_weights(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [*w.shape, 2**bits], alpha [oc])`` centred on the float weights ``w``."""
    values = levels(bits)
    flat = np.abs(w.reshape(w.shape[0], -1))
    alpha = flat.mean(axis=1) if bits == 1 else flat.max(axis=1)
    alpha = np.where(alpha > 0, alpha, 1.0).astype(np.float32)
    step = values[1] - values[0]
    u = w / alpha.reshape((-1,) + (1,) * (w.ndim - 1))
    logits = -np.square((u[..., None] - values) / step)
    return logits.astype(np.float32), alpha


def init_random(shape: tuple[int, ...], bits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, alpha)`` ignoring any pretrained weight (Golden Stick's re-initialisation)."""
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(shape[1:]))
    logits = rng.standard_normal((*shape, 1 << bits)).astype(np.float32)
    alpha = np.full(shape[0], np.sqrt(2.0 / fan_in), np.float32)
    return logits, alpha


@ms.jit
def _soft_weight(logits: Tensor, temperature: Tensor, values: Tensor) -> Tensor:
    """``sum_k softmax(T * logits)_k * v_k`` over the last axis, as one compiled graph (module
    level and fed plain tensors, so every layer of the same shape shares the compilation)."""
    return ops.reduce_sum(ops.softmax(logits * temperature, -1) * values, -1)


class SlbWeight(nn.Cell):
    """Weight source of an SLB layer: soft (temperature softmax) or hard (argmax) values.

    ``temperature`` is a non-trainable parameter (saved with the network); ``hard`` is set by
    the schedule (:mod:`gscore_slb.schedule`). Shapes: ``logits [*weight_shape, 2**bits]``,
    ``alpha [oc]``; the returned weight has ``weight_shape``.
    """

    def __init__(self, logits: np.ndarray, alpha: np.ndarray, bits: int, t_start: float) -> None:
        super().__init__()
        self.bits = bits
        self.logits = Parameter(Tensor(logits), name="logits")
        self.alpha = Parameter(Tensor(alpha), name="alpha")
        self.temperature = Parameter(Tensor(np.float32(t_start)), name="temperature", requires_grad=False)
        self.levels = Tensor(levels(bits))
        self.channel_shape = (-1,) + (1,) * (logits.ndim - 2)
        self.hard = False

    def codes(self) -> Tensor:
        """Index of the chosen level of every weight element (int32, weight shape)."""
        return ops.argmax(self.logits, -1)

    def construct(self) -> Tensor:
        if self.training and not self.hard:
            w = _soft_weight(self.logits + 0, self.temperature + 0, self.levels)
        else:
            w = ops.gather(self.levels, self.codes(), 0)
        return w * ops.reshape(self.alpha, self.channel_shape)

    def hard_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(codes, levels, alpha)`` as numpy: what the deployed packed weight stores."""
        return ops.cast(self.codes(), ms.int32).asnumpy(), self.levels.asnumpy(), self.alpha.asnumpy()
