"""BatchNorm folding for Conv2d + BatchNorm2d during quantization-aware training.

The folded layer quantizes the weight the deployed network will use, ``W * gamma / sigma``
(``sigma = sqrt(moving_variance + eps)``), as Golden Stick's one-conv fold does:

* training: ``y = conv(x, FQ(W * f) / f)`` with ``f = gamma / sigma`` per output channel,
  then the real BatchNorm on ``y`` (batch statistics, running averages updated). Since
  ``FQ(W * f) / f ~ W``, the BN sees the float conv's output up to quantization noise. A
  convolution is linear in each output channel's filter, so this is ``conv(x, FQ(W * f)) / f``
  (up to float rounding), with the division done on the weight instead of the activation: on
  CPU, MindSpore's broadcast multiply of a ``[64, 16, 28, 28]`` conv output by ``[1, 16, 1, 1]``
  took 5.9 ms forward, about as long as the convolution itself;
* evaluation: ``conv(x, FQ(W * f)) + (beta + (b - mean) * f)``, which is exactly the
  deployed folded layer (int8 ``W * f`` codes and a float bias).

No gradient flows back through the ``1 / f`` that rescales the conv output when the BatchNorm
normalizes with batch statistics: it then sees ``c · y`` for a per-channel ``c != 0`` and
divides the scale out again, so the derivative of its output with respect to ``c`` is
``eps / (var + eps)`` of the other terms (``eps`` = 1e-5 by default), not worth the backward
work it takes (when the rescale was applied to the conv output, a reduction over the whole
activation: a SimQAT step on DigitsResNet took about 1.4x the float step with it, about 1.05x
without). ``f`` still gets its gradient through the quantized weight ``W * f``. A BatchNorm that normalizes with its moving statistics while
training (``use_batch_statistics=False``, read at every call, so freezing it later counts) is
not scale-invariant and keeps that gradient.

Pairs are found structurally: inside one parent cell, a ``Conv2d`` immediately followed (in
definition order) by a ``BatchNorm2d`` over its output channels. That is how conv+BN is
written in ResNet-style code (``conv1``/``bn1``, ``SequentialCell([conv, bn])``); a network
that defines them in that order but does not apply them in sequence must use ``bn_fold=False``.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from gscore.nn.fake_quant import WeightFakeQuant, observed_fake_quant
from gscore.nn.quant_layer import LayerOp


def conv_bn_pairs(network: nn.Cell, conv_names: set[str]) -> dict[str, str]:
    """``{conv_full_name: bn_full_name}`` for every conv in ``conv_names`` directly followed by
    its BatchNorm2d in the parent's definition order (see the module docstring)."""
    pairs: dict[str, str] = {}
    for prefix, parent in network.cells_and_names():
        children = list(parent.name_cells().items())
        for (name, cell), (next_name, nxt) in zip(children, children[1:]):
            full = f"{prefix}.{name}" if prefix else name
            if (
                full in conv_names
                and isinstance(cell, nn.Conv2d)
                and isinstance(nxt, nn.BatchNorm2d)
                and nxt.num_features == cell.out_channels
            ):
                pairs[full] = f"{prefix}.{next_name}" if prefix else next_name
    return pairs


@ms.jit
def _folded_fake_quant(
    weight: Tensor, gamma: Tensor, moving_variance: Tensor, eps: float, rescale_grad: bool, qmin: float, qmax: float, symmetric: bool, per_channel: bool, fused: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(FQ(W * f), W * f, f, 1 / f)`` with ``f = gamma / sqrt(moving_variance + eps)`` per
    output channel ``[oc]`` (``1 / f`` shaped ``[oc, 1, 1, 1]`` to rescale the weight; without
    ``rescale_grad`` no gradient flows through it, see the module docstring); the constant
    arguments after ``rescale_grad`` are :meth:`WeightFakeQuant.compile_args`.

    One compiled call per fold and forward: op by op, the fold's seven operators and the
    quantizer's own call each cost about 0.2 ms per launch, several times their arithmetic on
    a small layer. Training, evaluation and the deployed weights
    (:meth:`ConvBnFold.folded`) all come from it.
    """
    factor = gamma / ops.sqrt(moving_variance + eps)
    folded = weight * ops.reshape(factor, (-1, 1, 1, 1))
    rescale = ops.reshape(1.0 / factor, (-1, 1, 1, 1))
    if not rescale_grad:
        rescale = ops.stop_gradient(rescale)
    return observed_fake_quant(folded, qmin, qmax, symmetric, per_channel, fused), folded, factor, rescale


class ConvBnFold(nn.Cell):
    """Conv2d + BatchNorm2d trained with the BN folded into the quantized weight."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, weight_quant: WeightFakeQuant, input_quant: nn.Cell | None) -> None:
        super().__init__()
        self.op = LayerOp(conv)
        self.weight = conv.weight
        self.has_conv_bias = conv.has_bias
        if self.has_conv_bias:
            self.conv_bias = conv.bias
        self.bn = bn
        self.eps = float(bn.eps)
        self.weight_quant = weight_quant
        self.has_input_quant = input_quant is not None
        if self.has_input_quant:
            self.input_quant = input_quant

    def _folded_parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:func:`_folded_fake_quant` of this layer (parameters enter as ``+ 0`` copies, see :mod:`gscore.nn.fake_quant`)."""
        return _folded_fake_quant(
            self.weight + 0, self.bn.gamma + 0, self.bn.moving_variance + 0, self.eps, self._keeps_rescale_gradient(),
            *self.weight_quant.compile_args(self.weight),
        )

    def _keeps_rescale_gradient(self) -> bool:
        """Whether the gradient flows through ``1 / f``: only where the BatchNorm normalizes with
        its moving statistics (see the module docstring)."""
        return self.bn.use_batch_statistics is False

    def _folded_bias(self, factor: Tensor) -> Tensor:
        shift = -self.bn.moving_mean
        if self.has_conv_bias:
            shift = shift + self.conv_bias
        return self.bn.beta + shift * factor

    def construct(self, x: Tensor) -> Tensor:
        if self.has_input_quant:
            x = self.input_quant(x)
        quantized, folded, factor, rescale = self._folded_parts()
        weight = self.weight_quant.finish(folded, quantized)
        if self.training:
            y = self.op(x, weight * rescale)  # conv(x, FQ(W * f)) / f, see the module docstring
            if self.has_conv_bias:
                y = ops.bias_add(y, self.conv_bias)
            return self.bn(y)
        return ops.bias_add(self.op(x, weight), self._folded_bias(factor))

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Float ``(W * f, beta + (b - mean) * f)``: the weight and bias the deployed layer uses."""
        _, weight, factor, _ = self._folded_parts()
        return weight.asnumpy(), self._folded_bias(factor).asnumpy()
