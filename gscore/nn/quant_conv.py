"""Deployed low-bit Conv2d / Dense parts: real integer weights and fixed activation quantizers.

These plug into :class:`gscore.nn.quant_layer.QuantLayer` as its ``weight_source`` and
``input_quant``. They hold integer data and dequantise it at run time (the portable CPU path:
dequantise, then the float convolution / matmul); a layer with both an :class:`Int8Weight` and
an :class:`ActivationQuantizer` runs on the native integer kernel instead when kernels are on
(:func:`int8_kernel`), from the same parameters:

* :class:`Int8Weight` — int8 codes ``[oc, ...]`` with one float32 scale and zero point per
  output channel (per-tensor schemes repeat their single value): ``w = (q - zero_point) * scale``.
* :class:`PackedWeight` — 1/2/4-bit indices packed several per byte
  (:mod:`gscore.quant.bitpack`) into a table of ``2**bits`` values, times a per-channel scale:
  ``w = levels[code] * scale``. Weights take exactly ``2**bits`` values per channel.
* :class:`ActivationQuantizer` — fixed ``scale`` / ``zero_point`` (from a trained observer),
  quantizes the input to codes in ``[qmin, qmax]`` and dequantises them.

Weight builders take numpy arrays and compute parameters with :mod:`gscore.quant`. Activation
parameters come from :func:`gscore.nn.fake_quant.graph_params`, the same compiled function
the simulated network evaluates with, so deployed and simulated activations agree bit
for bit.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from gscore.kernels.ops import int8_layer_primitive, unpack_levels_primitive
from gscore.nn.fake_quant import ActivationFakeQuant, FakeQuantSTE, graph_params
from gscore.quant import QuantParams, QuantScheme, quantize
from gscore.quant.bitpack import pack_bits


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (-1,) + (1,) * (ndim - 1)


class Int8Weight(nn.Cell):
    """int8 ``weight`` codes, float32 per-output-channel ``scale`` and ``zero_point`` (integers;
    0 for symmetric schemes): returns ``(q - zero_point) * scale``."""

    def __init__(self, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> None:
        super().__init__()
        if q.dtype != np.int8:
            raise TypeError(f"Int8Weight holds int8 codes, got {q.dtype}")
        for name, value in (("scale", scale), ("zero_point", zero_point)):
            if value.shape != (q.shape[0],):
                raise ValueError(f"{name} must have one value per output channel {(q.shape[0],)}, got {value.shape}")
        self.weight = Parameter(Tensor.from_numpy(np.ascontiguousarray(q)), name="weight", requires_grad=False)
        self.scale = Parameter(Tensor(scale.astype(np.float32)), name="scale", requires_grad=False)
        self.zero_point = Parameter(Tensor(zero_point.astype(np.float32)), name="zero_point", requires_grad=False)
        self.channel_shape = _channel_shape(q.ndim)

    def construct(self) -> Tensor:
        q = ops.cast(self.weight, ms.float32) - ops.reshape(self.zero_point, self.channel_shape)
        return q * ops.reshape(self.scale, self.channel_shape)

    def kernel_parts(self) -> tuple[Tensor, Tensor, Tensor]:
        """The native kernel's weight inputs: int8 codes, per-channel scale and zero point (its Parameters)."""
        return self.weight, self.scale, self.zero_point

    @classmethod
    def from_params(cls, w: np.ndarray, params: QuantParams) -> "Int8Weight":
        """Quantize float ``w`` with signed ``params`` (per tensor, or per channel on axis 0)."""
        if not params.scheme.signed:
            raise ValueError("Int8Weight stores signed int8 codes; got an unsigned scheme")
        oc = (w.shape[0],)
        scale = np.broadcast_to(params.scale.reshape(-1), oc) if params.scale.size == 1 else params.scale.reshape(-1)
        zero = np.broadcast_to(params.zero_point.reshape(-1), oc) if params.zero_point.size == 1 else params.zero_point.reshape(-1)
        return cls(quantize(w, params).astype(np.int8), np.ascontiguousarray(scale), np.ascontiguousarray(zero))


class PackedWeight(nn.Cell):
    """Weights that take one of ``2**bits`` values per output channel, stored bit-packed.

    ``packed``: uint8 ``[oc, ceil(k / (8 // bits))]`` where ``k`` is the number of weights per
    output channel; ``levels``: float32 ``[2**bits]``; ``scale``: float32 ``[oc]``. The forward
    unpacks with integer floor-division and modulo (no CPU-unsupported bit op), looks the codes
    up in ``levels`` and multiplies by ``scale``.
    """

    def __init__(self, codes: np.ndarray, levels: np.ndarray, scale: np.ndarray, bits: int) -> None:
        super().__init__()
        if levels.shape != (1 << bits,):
            raise ValueError(f"{bits}-bit weights need {1 << bits} levels, got shape {levels.shape}")
        if scale.shape != (codes.shape[0],):
            raise ValueError(f"scale must have one value per output channel {(codes.shape[0],)}, got {scale.shape}")
        self.bits = bits
        self.shape = tuple(int(d) for d in codes.shape)
        self.row_length = int(np.prod(self.shape[1:]))  # weights per output channel
        flat = codes.reshape(self.shape[0], -1)
        self.packed = Parameter(Tensor.from_numpy(pack_bits(flat, bits)), name="packed", requires_grad=False)
        self.levels = Parameter(Tensor(levels.astype(np.float32)), name="levels", requires_grad=False)
        self.scale = Parameter(Tensor(scale.astype(np.float32)), name="scale", requires_grad=False)
        per_byte = 8 // bits
        self.divisors = Tensor(np.left_shift(1, bits * np.arange(per_byte)).astype(np.int32))
        self.steps = float((1 << bits) - 1)  # odd-grid levels times this are odd integers
        self.no_zero_point = Tensor(np.zeros(self.shape[0], np.float32))
        self.unpack = unpack_levels_primitive(self.shape)  # None on the portable path

    def on_odd_grid(self) -> bool:
        """Whether ``levels`` are SLB's grid ``(2c - (2**bits - 1)) / (2**bits - 1)`` for code ``c``
        (:func:`gscore_slb.search.levels`), the case :meth:`kernel_parts` can express in int8."""
        odd = 2 * np.arange(1 << self.bits) - self.steps
        return bool(np.all(np.abs(self.levels.asnumpy().astype(np.float64) * self.steps - odd) <= 1e-4))

    def codes(self) -> Tensor:
        """int32 codes ``[oc, k]`` unpacked from ``packed`` (bit-pack layout of gscore.quant.bitpack)."""
        b = ops.expand_dims(ops.cast(self.packed, ms.int32), -1)
        codes = ops.floor_divide(b, self.divisors) % (1 << self.bits)
        return ops.reshape(codes, (self.shape[0], -1))[:, : self.row_length]

    def construct(self) -> Tensor:
        w = ops.gather(self.levels, self.codes(), 0)
        return ops.reshape(w * ops.reshape(self.scale, (-1, 1)), self.shape)

    def kernel_parts(self) -> tuple[Tensor, Tensor, Tensor]:
        """The native kernel's weight inputs for levels on the odd grid (:meth:`on_odd_grid`):
        int8 codes ``levels[code] * (2**bits - 1)`` (odd integers in ``[-(2**bits - 1), 2**bits - 1]``),
        scale ``scale / (2**bits - 1)`` and zero point 0, so ``(q - 0) * scale'`` is the weight.

        Computed from the Parameters at every call, so a checkpoint loaded later is what runs,
        by one native operator (``gsk_unpack_levels``; in MindSpore ops the unpacking is about
        ten small operators a layer, each one more PyNative dispatch). Levels off
        the grid (a checkpoint not made by SLB) would be rounded to it here; the layer checks
        the grid when it is built (:func:`int8_kernel`). Native kernels only."""
        return self.unpack(self.packed, self.levels), self.scale / self.steps, self.no_zero_point


class ActivationQuantizer(nn.Cell):
    """Fixed per-tensor quantization of a layer input: ``(clip(round(x/s + z)) - z) * s``.

    ``scale`` / ``zero_point`` are float32 scalar tensors as :func:`graph_params` returns them.
    """

    def __init__(self, scale: Tensor, zero_point: Tensor, scheme: QuantScheme) -> None:
        super().__init__()
        if scale.size != 1 or zero_point.size != 1:
            raise ValueError(f"activations are quantized per tensor; got {scale.size} scales and {zero_point.size} zero points")
        self.scale = Parameter(ops.reshape(ops.cast(scale, ms.float32), ()), name="scale", requires_grad=False)
        self.zero_point = Parameter(ops.reshape(ops.cast(zero_point, ms.float32), ()), name="zero_point", requires_grad=False)
        self.quant = FakeQuantSTE(scheme.qmin, scheme.qmax, scheme.symmetric)
        self.scheme = scheme
        self.bits = scheme.bits

    def construct(self, x: Tensor) -> Tensor:
        return self.quant(x, self.scale + 0, self.zero_point + 0)

    @classmethod
    def from_range(cls, minimum: float, maximum: float, scheme: QuantScheme) -> "ActivationQuantizer":
        """The fixed quantizer of an activation range ``[minimum, maximum]``."""
        lo, hi = Tensor(np.float32(minimum)), Tensor(np.float32(maximum))
        return cls(*graph_params(lo, hi, scheme), scheme)

    @classmethod
    def from_observer(cls, observer: ActivationFakeQuant) -> "ActivationQuantizer":
        """The fixed quantizer a trained :class:`ActivationFakeQuant` stands for: its stored range,
        turned into a scale by the very function the observer evaluates with (bit-identical outputs)."""
        return cls(*observer.params(), observer.scheme)


def int8_kernel(op: nn.Cell, weight: nn.Cell, input_quant: nn.Cell | None) -> tuple[ops.Custom | None, Tensor | None]:
    """``(operator, meta)`` of the native integer kernel (``gsk_int8_layer``) that computes a
    deployed layer in one call, or ``(None, None)`` when it does not apply: native kernels off,
    weights neither :class:`Int8Weight` nor a :class:`PackedWeight` whose levels are on the odd
    grid, no :class:`ActivationQuantizer`, a grouped convolution, or activation codes that do
    not fit a byte. ``op`` is the layer's
    :class:`~gscore.nn.quant_layer.LayerOp`. The operator takes the parameters the dequantising
    path reads, so checkpoints are the same either way."""
    integer_weight = isinstance(weight, Int8Weight) or (isinstance(weight, PackedWeight) and weight.unpack is not None and weight.on_odd_grid())
    if not integer_weight or not isinstance(input_quant, ActivationQuantizer) or op.group != 1:
        return None, None
    scheme = input_quant.scheme
    offset = 128 if scheme.qmax > 127 else 0  # unsigned codes are stored minus 128
    if scheme.qmin - offset < -128 or scheme.qmax - offset > 127:
        return None, None
    meta = (int(op.is_conv), int(scheme.qmin), int(scheme.qmax), *op.geometry)
    primitive = int8_layer_primitive(meta)
    if primitive is None:
        return None, None
    return primitive, Tensor(np.array(meta, np.int32))
