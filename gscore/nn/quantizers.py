"""Quantizer cells that a quantized linear layer holds: weights (per channel or per group) and
inputs (static per tensor, dynamic per token).

Every quantizer offers two forms of the same arithmetic:

* *simulate* — ``fake_quantize``: round onto the integer grid and back, in float; used by the
  calibrated (simulated) network and by QAT.
* *deploy* — the integers themselves (real int8 storage) plus the scales that rescale the
  matmul result; used by the converted network.

Parameters carry Golden Stick-style names: weights ``_weight_quantizer.scale`` / ``zp_neg``
(``zp_neg`` is minus the zero point, so ``w = (q + zp_neg) * scale``), inputs
``_input_quantizer.scale`` / ``zp`` (``x ≈ (q - zp) * scale``).
"""

from __future__ import annotations

from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from gscore import kernels
from gscore.kernels.ops import primitive


def _param(value: np.ndarray, dtype: Any, name: str) -> Parameter:
    return Parameter(Tensor(value, dtype), name=name, requires_grad=False)


class WeightQuantizer(nn.Cell):
    """Per-output-channel scale and ``zp_neg`` (shape ``[out]``) in the compute dtype, for a
    linear weight ``[out, in]``/``[in, out]`` or (``weight_ndim=4``) a Conv2d weight ``[out, in, kh, kw]``.

    ``symmetric`` is structural (known before any checkpoint is loaded): a symmetric
    quantizer never adds ``zp_neg``. In float32 compute the per-channel scale is applied to
    the matmul *output* (``(x @ q.T) * scale``): elementwise work on the weight is what
    costs on CPU (MindSpore's elementwise ops on a 4096x4096 weight take longer than the
    matmul itself), and the output is usually smaller. In float16 compute the weight is
    dequantised first, so the integer matmul cannot overflow float16.
    """

    def __init__(self, scale: np.ndarray, zp_neg: np.ndarray, dtype: Any, out_axis: int, qmin: int, qmax: int, symmetric: bool = True, weight_ndim: int = 2) -> None:
        super().__init__()
        self.scale = _param(scale, dtype, "scale")
        self.zp_neg = _param(zp_neg, dtype, "zp_neg")
        self.dtype = dtype
        self.qmin, self.qmax = qmin, qmax
        self.symmetric = symmetric
        # one value per output channel, broadcast over the weight's other axes ([out, in, kh, kw] for a Conv2d)
        self.param_shape = (-1,) + (1,) * (weight_ndim - 1) if out_axis == 0 else (1, -1)
        self.fused = primitive("fake_quant") if dtype == ms.float32 and out_axis == 0 and kernels.enabled() else None
        self.bounds = Tensor(np.array([qmin, qmax], np.float32))

    @property
    def rescales_output(self) -> bool:
        """True when the scale multiplies the matmul output instead of the weight."""
        return self.dtype == ms.float32

    def codes_of(self, w: Tensor) -> Tensor:
        """Integer codes (as float32) of the float weight ``w``: what :meth:`unpack` gives after convert."""
        scale = ops.cast(ops.reshape(self.scale, self.param_shape), ms.float32)
        zp_neg = ops.cast(ops.reshape(self.zp_neg, self.param_shape), ms.float32)
        return ops.clamp(ops.round(ops.cast(w, ms.float32) / scale - zp_neg), self.qmin, self.qmax)

    def shifted(self, codes: Tensor) -> Tensor:
        """``codes + zp_neg`` in the compute dtype (no add for a symmetric quantizer)."""
        codes = ops.cast(codes, self.dtype)
        return codes if self.symmetric else codes + ops.reshape(self.zp_neg, self.param_shape)

    def output_scale(self) -> Tensor:
        """The per-output-channel scale shaped ``[1, out]`` to multiply a matmul result."""
        return ops.reshape(self.scale, (1, -1))

    @property
    def bits(self) -> int:
        return int(np.log2(self.qmax - self.qmin + 1))

    def unpack(self, stored: Tensor) -> Tensor:
        """The integer weight from its storage (int8 here: nothing to unpack)."""
        return stored

    def dequantize(self, q: Tensor) -> Tensor:
        """``(q + zp_neg) * scale`` in the compute dtype; ``q`` holds integers (int8 or float)."""
        scale = ops.reshape(self.scale, self.param_shape)
        zp_neg = ops.reshape(self.zp_neg, self.param_shape)
        return (ops.cast(q, self.dtype) + zp_neg) * scale

    def fake_quantize(self, w: Tensor) -> Tensor:
        """Round ``w`` onto the integer grid in float32 and dequantise: the simulated weight.

        In float32 with native kernels on (``fused``), one fused operator instead of
        :meth:`codes_of` then :meth:`dequantize`, with the same values (see
        :meth:`_fused_fake_quantize`). Why: a simulated layer fake-quantizes its weight on every
        forward, and the MindSpore operations of the two steps (each a pass over the weight;
        per group also padding and regrouping) cost about as much as the layer's matmul in
        calibration's pass over 4096 rows. The gradients differ (nothing trains a simulated
        PTQ layer): the operator's backward is SimQAT's straight-through estimator (``w`` gets
        the output's gradient where it does not clip, the scales none), while the ops path
        passes nothing to ``w`` through its rounding and gives the scales theirs.
        """
        if self.fused is not None:
            return self._fused_fake_quantize(ops.cast(w, ms.float32))
        return self.dequantize(self.codes_of(w))

    def _fused_fake_quantize(self, rows: Tensor) -> Tensor:
        """``rows`` float32 with one parameter pair per leading index (``scale`` and ``zp_neg``
        flattened): the operator computes ``(clamp(rint(x / s + z)) - z) * s`` with
        ``z = -zp_neg``, float operation for float operation :meth:`codes_of`'s
        ``x / s - zp_neg`` and :meth:`dequantize`'s ``(q + zp_neg) * s``."""
        return self.fused(rows, ops.reshape(self.scale, (-1,)), ops.reshape(-self.zp_neg, (-1,)), self.bounds)


class GroupWeightQuantizer(WeightQuantizer):
    """Per-group scales ``[out, ceil(in/group)]`` for a ``[out, in]`` weight; int4 stored packed.

    When ``group`` does not divide ``in`` (SmolLM2's 576 with groups of 128), the last group
    is shorter: the weight is padded with zeros to whole groups for the arithmetic and cut
    back afterwards, so no storage is spent on padding.

    Storage: int8 codes are stored as they are (``[out, in]``); int4 codes two per int8 along
    ``in`` (element ``2k`` in the low nibble, ``2k+1`` in the high one), so an int4 ``weight``
    parameter is ``[out, in/2]`` int8.
    """

    def __init__(self, scale: np.ndarray, zp_neg: np.ndarray, dtype: Any, group_size: int, qmin: int, qmax: int, symmetric: bool = False) -> None:
        super().__init__(scale, zp_neg, dtype, out_axis=0, qmin=qmin, qmax=qmax, symmetric=symmetric)
        self.group_size = group_size

    @property
    def rescales_output(self) -> bool:
        return False

    def _grouped(self, fn: Any, w: Tensor) -> Tensor:
        out, inp = w.shape
        groups = -(-inp // self.group_size)
        pad = groups * self.group_size - inp
        if pad:
            w = ops.cat([w, ops.zeros((out, pad), w.dtype)], axis=1)
        grouped = ops.reshape(w, (out, groups, self.group_size))
        return ops.reshape(fn(grouped), (out, groups * self.group_size))[:, :inp]

    def unpack(self, stored: Tensor) -> Tensor:
        """Stored codes -> integer-valued float32 ``[out, in]``: int8 codes as they are, int4
        from ``[out, in/2]`` packed bytes (sign-extended nibbles)."""
        if self.bits == 8:
            return ops.cast(stored, ms.float32)
        byte = ops.cast(stored, ms.float32)
        high = ops.floor(byte / 16.0)
        low = byte - 16.0 * high
        low = low - 16.0 * ops.cast(low >= 8.0, ms.float32)
        out, half = stored.shape
        return ops.reshape(ops.stack([low, high], axis=-1), (out, 2 * half))

    def dequantize(self, q: Tensor) -> Tensor:
        scale = ops.expand_dims(self.scale, -1)
        zp_neg = ops.expand_dims(self.zp_neg, -1)
        return self._grouped(lambda g: (ops.cast(g, self.dtype) + zp_neg) * scale, q)

    def codes_of(self, w: Tensor) -> Tensor:
        scale = ops.cast(ops.expand_dims(self.scale, -1), ms.float32)
        zp_neg = ops.cast(ops.expand_dims(self.zp_neg, -1), ms.float32)
        return self._grouped(lambda g: ops.clamp(ops.round(g / scale - zp_neg), self.qmin, self.qmax), ops.cast(w, ms.float32))

    def fake_quantize(self, w: Tensor) -> Tensor:
        """As :meth:`WeightQuantizer.fake_quantize`; fused, over rows of ``group_size`` values."""
        if self.fused is None:
            return super().fake_quantize(w)
        return self._grouped(lambda g: ops.reshape(self._fused_fake_quantize(ops.reshape(g, (-1, self.group_size))), g.shape), ops.cast(w, ms.float32))


def _straight_through(codes: Tensor, scaled: Tensor) -> Tensor:
    """``codes`` in the forward pass (bit for bit: ``scaled - scaled`` is 0), the gradient of
    ``scaled`` in the backward pass: the straight-through estimator of a rounding."""
    return codes + (scaled - ops.stop_gradient(scaled))


class StaticInputQuantizer(nn.Cell):
    """int8 activations with one calibrated scale and zero point for the whole tensor.

    ``straight_through`` (set by :func:`gscore.nn.ops_path.ops_path` while a deployed network
    trains): the rounding in :meth:`deploy` passes gradients as if it were absent, so layers
    before this one still learn; the forward values do not change.
    """

    straight_through = False

    def __init__(self, scale: float, zp: float) -> None:
        super().__init__()
        self.scale = _param(np.array([scale], np.float32), ms.float32, "scale")
        self.zp = _param(np.array([zp], np.float32), ms.float32, "zp")
        self.fused = primitive("static_act_fake_quant") if kernels.enabled() else None
        self.bounds = Tensor(np.array([-128, 127], np.float32))

    def integers(self, x: Tensor) -> Tensor:
        """Real int8 codes of ``x``."""
        return ops.cast(ops.clamp(ops.round(x / self.scale) + self.zp, -128, 127), ms.int8)

    def fake_quantize(self, x: Tensor) -> Tensor:
        """``(integers(x) - zp) * scale`` in float32; one native operator with the same values
        where kernels are on (a simulated layer's forward). No gradient reaches ``x`` either way:
        the ops path casts to int8, the operator's backward gives zeros."""
        if self.fused is not None and x.dtype == ms.float32:
            return self.fused(x, self.scale, self.zp, self.bounds)
        return (ops.cast(self.integers(x), ms.float32) - self.zp) * self.scale

    def deploy(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes - zp)`` as float32 and the row scale that multiplies the matmul result."""
        codes = ops.cast(self.integers(x), ms.float32) - self.zp
        return (_straight_through(codes, x / self.scale) if self.straight_through else codes), self.scale


class DynamicInputQuantizer(nn.Cell):
    """int8 activations with a symmetric scale per token (row), computed at run time.

    ``straight_through``: as :class:`StaticInputQuantizer`'s; the run-time scale then passes no
    gradient (it would reach only each row's largest input).
    """

    straight_through = False

    def _scale(self, x: Tensor) -> Tensor:
        return ops.maximum(ops.amax(ops.abs(x), axis=-1, keepdims=True) / 127.0, 1e-12)

    def fake_quantize(self, x: Tensor) -> Tensor:
        scale = self._scale(x)
        return ops.clamp(ops.round(x / scale), -127, 127) * scale

    def deploy(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scale = self._scale(x)
        if self.straight_through:
            scale = ops.stop_gradient(scale)
        codes = ops.cast(ops.cast(ops.clamp(ops.round(x / scale), -127, 127), ms.int8), ms.float32)
        return (_straight_through(codes, x / scale) if self.straight_through else codes), scale
