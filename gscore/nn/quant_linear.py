"""Weight-quantized linear cells: the simulated (fake-quant) form and the deployed int8 form.

Both hold a ``_weight_quantizer`` sub-cell with ``scale`` and ``zp_neg`` parameters (one per
output channel, in the layer's compute dtype), so checkpoints use the Golden Stick names
``<linear>.weight``, ``<linear>._weight_quantizer.scale`` and ``<linear>._weight_quantizer.zp_neg``.
The dequantised weight is ``(q + zp_neg) * scale``; ``zp_neg`` is minus the zero point.

* :class:`SimQuantLinear` keeps the float weight and fake-quantizes it on each forward.
* :class:`QuantLinear` holds the int8 weight and dequantises it before the matmul (the
  portable CPU path). The scale multiply happens in the compute dtype; the simulated cell
  computes ``q`` in float32 and the same product, so both produce the same weight bit for bit
  when ``q`` rounds the same way (``ops.round`` and ``np.rint`` both round half to even).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
import mindspore as ms

from gscore.nn.linear_view import LinearView


class WeightQuantizer(nn.Cell):
    """Per-output-channel ``scale`` and ``zp_neg`` and the dequantisation that uses them.

    ``scale``/``zp_neg`` have shape ``[out]``; ``out_axis`` says which weight axis they index.
    """

    def __init__(self, scale: np.ndarray, zp_neg: np.ndarray, dtype: Any, out_axis: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.scale = Parameter(Tensor(scale, dtype), name="scale", requires_grad=False)
        self.zp_neg = Parameter(Tensor(zp_neg, dtype), name="zp_neg", requires_grad=False)
        self.dtype = dtype
        self.qmin, self.qmax = qmin, qmax
        self.param_shape = (-1, 1) if out_axis == 0 else (1, -1)

    def dequantize(self, q: Tensor) -> Tensor:
        """``(q + zp_neg) * scale`` in the compute dtype; ``q`` holds integers (int8 or float)."""
        scale = ops.reshape(self.scale, self.param_shape)
        zp_neg = ops.reshape(self.zp_neg, self.param_shape)
        return (ops.cast(q, self.dtype) + zp_neg) * scale

    def fake_quantize(self, w: Tensor) -> Tensor:
        """Round ``w`` onto the integer grid in float32 and dequantise: the simulated weight."""
        scale = ops.cast(ops.reshape(self.scale, self.param_shape), ms.float32)
        zp_neg = ops.cast(ops.reshape(self.zp_neg, self.param_shape), ms.float32)
        q = ops.clamp(ops.round(ops.cast(w, ms.float32) / scale - zp_neg), self.qmin, self.qmax)
        return self.dequantize(q)


class _QuantLinearBase(nn.Cell):
    """The linear forward shared by both forms: reshape to 2-D, matmul, bias, activation."""

    def __init__(self, view: LinearView, quantizer: WeightQuantizer) -> None:
        super().__init__()
        self.in_channels, self.out_channels = view.in_channels, view.out_channels
        self.compute_dtype = view.compute_dtype
        self.transpose_b = view.transpose_b
        self.matmul = ops.MatMul(transpose_b=view.transpose_b)
        self.has_bias = view.bias is not None
        if self.has_bias:
            self.bias = view.bias
        self.activation = view.activation
        self._weight_quantizer = quantizer

    def effective_weight(self) -> Tensor:
        raise NotImplementedError

    def construct(self, x: Tensor) -> Tensor:
        out_shape = x.shape[:-1] + (self.out_channels,)
        ori_dtype = x.dtype
        x = ops.cast(ops.reshape(x, (-1, self.in_channels)), self.compute_dtype)
        y = self.matmul(x, self.effective_weight())
        if self.has_bias:
            y = ops.bias_add(y, ops.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            y = self.activation(y)
        return ops.reshape(ops.cast(y, ori_dtype), out_shape)


class SimQuantLinear(_QuantLinearBase):
    """Simulated quantization: float ``weight`` kept, fake-quantized in every forward."""

    def __init__(self, view: LinearView, quantizer: WeightQuantizer) -> None:
        super().__init__(view, quantizer)
        self.weight = view.weight

    def effective_weight(self) -> Tensor:
        return self._weight_quantizer.fake_quantize(self.weight)


class QuantLinear(_QuantLinearBase):
    """Deployed form: ``weight`` is real int8 data, dequantised before the matmul."""

    def __init__(self, view: LinearView, quantizer: WeightQuantizer, q: np.ndarray) -> None:
        super().__init__(view, quantizer)
        if q.dtype != np.int8:
            raise TypeError(f"QuantLinear expects an int8 weight, got {q.dtype}")
        self.weight = Parameter(Tensor.from_numpy(q), name="weight", requires_grad=False)

    def effective_weight(self) -> Tensor:
        return self._weight_quantizer.dequantize(self.weight)


def view_of(cell: _QuantLinearBase) -> LinearView:
    """The :class:`LinearView` of a quantized linear cell (to rebuild it in another form)."""
    return LinearView(
        cell=cell,
        weight=cell.weight,
        bias=cell.bias if cell.has_bias else None,
        transpose_b=cell.transpose_b,
        compute_dtype=cell.compute_dtype,
        activation=cell.activation,
        in_channels=cell.in_channels,
        out_channels=cell.out_channels,
    )
