"""One cell shape for every quantized Conv2d / Dense, in training and in deploy form.

A quantized layer is ``activation(op(input_quant(x), weight_source()) + bias)``:

* ``op`` (:class:`LayerOp`) is the layer's own computation: the original ``Conv2d``'s
  convolution primitive (stride, padding, dilation, groups kept) or a Dense matmul;
* ``weight_source`` is a cell returning the weight tensor to use: a fake-quantized float
  weight (SimQAT), a soft/hard choice among discrete values (SLB), or int8 / bit-packed
  codes dequantised at run time (deploy, :mod:`gscore.nn.quant_conv`);
* ``input_quant`` optionally quantizes the layer's input (8-bit activations).

Algorithms differ only in the weight source and input quantizer they plug in, so training
and deploy cells share this forward and a deployed network computes what training simulated.

A deployed layer with integer weights (:class:`~gscore.nn.quant_conv.Int8Weight`, or SLB's
bit-packed :class:`~gscore.nn.quant_conv.PackedWeight` on its odd grid) and an input
quantizer of at most 8 bits (:class:`~gscore.nn.quant_conv.ActivationQuantizer`), a Dense or a one-group
Conv2d, runs as one native operator instead (:func:`~gscore.nn.quant_conv.int8_kernel`): the
same activation and weight codes, multiplied exactly in int32. It agrees with the simulated
network within float32 rounding, not bit for bit (the simulated float sums round, the integer
sums do not); with ``GSCORE_KERNELS=portable`` the deployed network dequantises the codes and
equals the simulated one bit for bit.
"""

from __future__ import annotations

from typing import Callable, Iterator

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from gscore.errors import NoQuantizableLayerError
from gscore.nn.quant_conv import int8_kernel
from gscore.nn.walk import iter_cells, matches_blacklist, warn_unmatched_blacklist


class LayerOp(nn.Cell):
    """The linear computation of a Conv2d (NCHW, OIHW weight) or Dense (``[out, in]`` weight)."""

    def __init__(self, cell: nn.Conv2d | nn.Dense) -> None:
        super().__init__()
        self.is_conv = isinstance(cell, nn.Conv2d)
        if self.is_conv:
            if cell.data_format != "NCHW":
                raise ValueError(f"only NCHW Conv2d layers can be quantized, got data_format={cell.data_format!r}")
            self.conv2d = cell.conv2d
        else:
            self.matmul = ops.MatMul(transpose_b=True)
        self.out_channels = cell.out_channels
        self.group, self.geometry = _geometry(cell) if self.is_conv else (1, (1, 1, 1, 1, 0, 0, 0, 0, 0))

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.is_conv:
            return self.conv2d(x, weight)
        shape = x.shape
        y = self.matmul(ops.reshape(x, (-1, shape[-1])), weight)
        return ops.reshape(y, shape[:-1] + (self.out_channels,))


class QuantLayer(nn.Cell):
    """``activation(op(input_quant(x), weight_source()) + bias)``; see the module docstring.

    ``bias`` is the original layer's bias parameter (or None), ``activation`` a Dense's fused
    activation cell (or None). Sub-cells keep fixed names (``weight_source``, ``input_quant``)
    so checkpoints of the same form of the same network always line up.
    """

    def __init__(
        self,
        op: LayerOp,
        weight_source: nn.Cell,
        bias: Parameter | None = None,
        input_quant: nn.Cell | None = None,
        activation: nn.Cell | None = None,
    ) -> None:
        super().__init__()
        self.op = op
        self.weight_source = weight_source
        self.has_bias = bias is not None
        if self.has_bias:
            self.bias = bias
        self.has_input_quant = input_quant is not None
        if self.has_input_quant:
            self.input_quant = input_quant
        self.has_activation = activation is not None
        if self.has_activation:
            self.activation = activation
        self.native, self.native_meta = int8_kernel(op, weight_source, input_quant)

    def construct(self, x: Tensor) -> Tensor:
        if self.native is not None and x.dtype == ms.float32:
            codes, scale, zero_point = self.weight_source.kernel_parts()
            y = self.native(x, codes, scale, zero_point, self.input_quant.scale, self.input_quant.zero_point, self.native_meta)
        else:
            if self.has_input_quant:
                x = self.input_quant(x)
            y = self.op(x, self.weight_source())
        if self.has_bias:  # BiasAdd takes channels on axis 1: a Dense output [.., out] of rank 3+ adds instead
            y = ops.bias_add(y, self.bias) if self.op.is_conv or y.ndim == 2 else y + self.bias
        if self.has_activation:
            y = self.activation(y)
        return y


def _geometry(conv: nn.Conv2d) -> tuple[int, tuple[int, ...]]:
    """``(group, geometry)`` of a Conv2d: geometry is (stride h, w, dilation h, w, 'same' flag,
    pads top, bottom, left, right), the tail of :data:`gscore.kernels.ops.INT8_LAYER_META`."""
    padding = conv.padding if conv.pad_mode == "pad" else 0
    pads = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    return conv.group, (*conv.stride, *conv.dilation, int(conv.pad_mode == "same"), *pads)


def float_parts(cell: nn.Conv2d | nn.Dense) -> tuple[LayerOp, Parameter | None, nn.Cell | None]:
    """``(op, bias, activation)`` of a float Conv2d / Dense, to build a :class:`QuantLayer`."""
    bias = cell.bias if cell.has_bias else None
    activation = getattr(cell, "activation", None) if getattr(cell, "activation_flag", False) else None
    return LayerOp(cell), bias, activation


def find_layers(network: nn.Cell, include_dense: bool = True, blacklist: list[str] | None = None, algorithm: str = "gscore") -> list[tuple[str, nn.Cell]]:
    """``(full_name, cell)`` of every float ``nn.Conv2d`` (and ``nn.Dense`` if asked) to quantize,
    skipping names that contain a ``blacklist`` entry (Golden Stick's substring rule).

    Finding none is an error (naming ``algorithm``), never a silent no-op."""
    kinds: tuple[type, ...] = (nn.Conv2d, nn.Dense) if include_dense else (nn.Conv2d,)
    found = list(iter_cells(network, lambda c: isinstance(c, kinds)))
    warn_unmatched_blacklist([name for name, _ in found], blacklist or [])
    layers = [(name, cell) for name, cell in found if not matches_blacklist(name, blacklist or [])]
    if not layers:
        what = "nn.Conv2d or nn.Dense" if include_dense else "nn.Conv2d (set include_dense=True for Dense)"
        raise NoQuantizableLayerError(f"{algorithm} found no {what} layer to quantize (opname_blacklist={blacklist or []})")
    return layers


def iter_quant_layers(network: nn.Cell, source_type: type | tuple[type, ...] = nn.Cell) -> Iterator[tuple[str, QuantLayer]]:
    """``(full_name, layer)`` of every :class:`QuantLayer` whose weight source is a ``source_type``."""
    predicate: Callable[[nn.Cell], bool] = lambda c: isinstance(c, QuantLayer) and isinstance(c.weight_source, source_type)
    return iter_cells(network, predicate)
