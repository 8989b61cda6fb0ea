"""Post-training quantized ``nn.Conv2d``: int8 weights per output channel, simulated and deployed.

The counterpart of :mod:`gscore.nn.quant_linear` for convolutions (weight-only: activations stay
float). Both forms hold a :class:`~gscore.nn.quantizers.WeightQuantizer` whose scale and
``zp_neg`` are ``[out]`` (``_weight_quantizer.scale``, as for linear layers), and run the
original layer's own convolution primitive (stride, padding, dilation, groups, data format
unchanged) on the dequantised weight ``(q + zp_neg) * scale``:

* :class:`SimQuantConv2d` keeps the float ``weight`` and computes its codes on each forward;
* :class:`QuantConv2d` stores the codes as int8 ``weight`` ``[out, in / group, kh, kw]``.

Both dequantise the same codes with the same ops, so their outputs are bit-identical.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from gscore.nn.quantizers import WeightQuantizer


class _QuantConv2dBase(nn.Cell):
    """What both forms share: the convolution primitive, its bias and the weight quantizer."""

    def __init__(self, conv: nn.Cell, weight_quantizer: WeightQuantizer) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size
        self.conv2d = conv.conv2d
        self.has_bias = bool(conv.has_bias)
        if self.has_bias:
            self.bias = conv.bias
            self.bias_add = conv.bias_add
        self._weight_quantizer = weight_quantizer

    def codes(self) -> Tensor:
        """The weight's integer codes (float32 values): computed (simulated) or stored (deployed)."""
        raise NotImplementedError

    def construct(self, x: Tensor) -> Tensor:
        w = self._weight_quantizer.dequantize(self.codes())
        out = self.conv2d(x, ops.cast(w, x.dtype))
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out


class SimQuantConv2d(_QuantConv2dBase):
    """Simulated form: the float ``weight`` is kept and rounded onto the int8 grid each forward."""

    def __init__(self, conv: nn.Cell, weight_quantizer: WeightQuantizer, weight: Parameter | None = None) -> None:
        super().__init__(conv, weight_quantizer)
        self.weight = conv.weight if weight is None else weight

    def codes(self) -> Tensor:
        return self._weight_quantizer.codes_of(self.weight)


class QuantConv2d(_QuantConv2dBase):
    """Deployed form: ``weight`` is real int8 storage ``[out, in / group, kh, kw]``."""

    def __init__(self, conv: nn.Cell, weight_quantizer: WeightQuantizer, stored: np.ndarray) -> None:
        super().__init__(conv, weight_quantizer)
        if stored.dtype != np.int8:
            raise TypeError(f"QuantConv2d stores its weight as int8, got {stored.dtype}")
        self.weight = Parameter(Tensor.from_numpy(np.ascontiguousarray(stored)), name="weight", requires_grad=False)

    def codes(self) -> Tensor:
        return ops.cast(self.weight, ms.float32)
