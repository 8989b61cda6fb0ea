"""Fake quantization for training, built from ordinary MindSpore ops so it trains on CPU.

Golden Stick's fake-quant kernels (``MinMaxUpdatePerLayer`` and friends) have no CPU version;
these cells compute the same thing with element-wise ops:

* :class:`FakeQuantSTE` — ``(clip(round(x / scale + zp), qmin, qmax) - zp) * scale`` forward,
  exactly the dequantised code the deployed network uses, with a straight-through gradient
  inside the representable range and 0 outside.
* :class:`WeightFakeQuant` — scales observed from the current weight on every forward
  (per tensor or per output channel), with an optional quantization delay.
* :class:`ActivationFakeQuant` — a per-tensor EMA min/max observer (``minimum``/``maximum``
  parameters, saved in checkpoints) followed by fake quantization.

Scales follow :func:`gscore.quant.compute_params` exactly (symmetric ``max|x| / qmax``;
asymmetric range widened to include 0 and a rounded zero point), re-expressed in MindSpore
ops because they change every step; :func:`graph_params` is tested against it. Converting to
a deployed network uses the numpy function itself on the stored ranges.

With native kernels (:mod:`gscore.kernels`) the range observation and the fake quantization
itself each run as one fused operator, the latter with its own straight-through backward (one
pass over the tensor each way instead of about ten): same values forward, bit for bit, and
the gradient is the incoming gradient where the value quantizes without clipping.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from gscore import kernels
from gscore.errors import ConfigError
from gscore.kernels.ops import primitive
from gscore.quant import Granularity, QuantScheme

_SCALE_FLOOR = float(np.finfo(np.float32).tiny)


def _params(lo: Tensor, hi: Tensor, qmin: float, qmax: float, symmetric: bool) -> tuple[Tensor, Tensor]:
    if symmetric:
        span = ops.maximum(ops.abs(lo), ops.abs(hi)) / qmax
    else:
        lo = ops.clamp(lo, None, 0.0)
        steps = qmax - qmin
        span = ops.clamp(hi, 0.0, None) / steps - lo / steps
    scale = ops.clamp(span, _SCALE_FLOOR, None)  # ops.maximum(tensor, float) fails to compile at random
    scale = ops.where(span == 0, ops.ones_like(span), scale)
    if symmetric:
        zero = ops.zeros_like(scale)
    else:
        zero = ops.clamp(ops.round(qmin - lo / scale), qmin, qmax)
    return ops.stop_gradient(scale), ops.stop_gradient(zero)


def graph_params(lo: Tensor, hi: Tensor, scheme: QuantScheme) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` float32 tensors shaped like ``lo``/``hi``: the in-graph twin of
    :func:`gscore.quant.compute_params` (same formulas, computed in float32).

    One known difference: for ranges below ~1e-36, whose scale would be a subnormal float32,
    MindSpore's CPU kernels may flush the scale to zero (so it becomes 1.0 here) where numpy
    floors it at the smallest normal float32. Either way such values quantize to within 1e-36 of 0.
    """
    return _params(lo, hi, float(scheme.qmin), float(scheme.qmax), scheme.symmetric)


def _ste(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: float, qmax: float, symmetric: bool) -> Tensor:
    u = x / scale
    if not symmetric:
        u = u + zero_point
    codes = ops.stop_gradient(ops.clamp(ops.round(u), qmin, qmax))
    u = ops.clamp(u, qmin - 0.5, qmax + 0.5)
    codes = codes + (u - ops.stop_gradient(u))
    if not symmetric:
        codes = codes - zero_point
    return codes * scale


# Fused kernels, resolved once by _load_fused() before any graph using them is compiled (a
# compiled function reads module globals when it is compiled).
_FAKE_QUANT = None
_MINMAX = None
_CHANNEL_MINMAX = None


def _load_fused() -> bool:
    """True when native kernels are on (their level when first asked is kept for the process)."""
    global _FAKE_QUANT, _MINMAX, _CHANNEL_MINMAX
    if not kernels.enabled():
        return False
    if _FAKE_QUANT is None:
        _FAKE_QUANT, _MINMAX, _CHANNEL_MINMAX = primitive("fake_quant"), primitive("minmax"), primitive("channel_minmax")
    return True


def _quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: float, qmax: float, symmetric: bool, fused: bool) -> Tensor:
    """:func:`_ste`, as one fused operator when ``fused`` (a symmetric scheme's zero point is 0)."""
    if fused:
        zero_point = ops.zeros_like(scale) if symmetric else zero_point
        return _FAKE_QUANT(x, scale, zero_point, Tensor([qmin, qmax], ms.float32))
    return _ste(x, scale, zero_point, qmin, qmax, symmetric)


# The two training-time paths run as compiled graphs: op-by-op PYNATIVE dispatch made a
# quantizer cost several times a small layer's own forward and backward. Module-level
# functions with constant scheme arguments share MindSpore's compile cache across cells; a
# compiled method, or a Parameter passed in, would be recompiled for every cell instance, so
# parameters enter as ``param + 0`` (a new plain tensor, gradient intact; ``ops.identity``
# returns the parameter itself).


@ms.jit
def _fake_quant_observed(w: Tensor, qmin: float, qmax: float, symmetric: bool, per_channel: bool, fused: bool) -> Tensor:
    """Fake-quantize ``w`` with the range of ``w`` itself, per output channel (axis 0) or per tensor."""
    observed = ops.stop_gradient(w)
    if per_channel:
        if fused:
            lo_hi = _CHANNEL_MINMAX(observed)
            keep_dims = (-1,) + (1,) * (w.ndim - 1)
            lo, hi = ops.reshape(lo_hi[:, 0], keep_dims), ops.reshape(lo_hi[:, 1], keep_dims)
        else:
            axes = tuple(range(1, w.ndim))
            lo, hi = ops.amin(observed, axes, True), ops.amax(observed, axes, True)
    elif fused:
        lo_hi = _MINMAX(observed)
        lo, hi = lo_hi[0], lo_hi[1]
    else:
        lo, hi = observed.min(), observed.max()
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _quantize(w, scale, zero, qmin, qmax, symmetric, fused)


@ms.jit
def _observe_fake_quant(
    x: Tensor, lo: Tensor, hi: Tensor, keep: Tensor, qmin: float, qmax: float, symmetric: bool, fused: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """EMA range update ``keep * old + (1 - keep) * batch``, then fake quantization with it."""
    observed = ops.stop_gradient(x)
    if fused:
        lo_hi = _MINMAX(observed)
        batch_lo, batch_hi = lo_hi[0], lo_hi[1]
    else:
        batch_lo, batch_hi = ops.cast(observed.min(), ms.float32), ops.cast(observed.max(), ms.float32)
    lo = keep * lo + (1.0 - keep) * batch_lo
    hi = keep * hi + (1.0 - keep) * batch_hi
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _quantize(x, scale, zero, qmin, qmax, symmetric, fused), lo, hi


@ms.jit
def _fake_quant_range(x: Tensor, lo: Tensor, hi: Tensor, qmin: float, qmax: float, symmetric: bool, fused: bool) -> Tensor:
    """Fake-quantize ``x`` with a stored range (evaluation)."""
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _quantize(x, scale, zero, qmin, qmax, symmetric, fused)


class FakeQuantSTE(nn.Cell):
    """Fake quantization with a straight-through estimator (STE).

    ``construct(x, scale, zero_point)``: ``scale``/``zero_point`` broadcast against ``x``
    (``zero_point`` is ignored for symmetric schemes). The forward value is exactly
    ``(clip(round(x / scale + zp), qmin, qmax) - zp) * scale``, the deployed dequantisation:
    the STE adds ``u - stop_gradient(u)`` (exactly 0) to the rounded codes rather than
    ``stop_gradient(fq - x)`` to ``x`` (which would be off by float rounding). The gradient
    w.r.t. ``x`` is 1 where ``x / scale + zp`` lies within ``[qmin - 0.5, qmax + 0.5]`` (the
    values that quantize without clipping) and 0 outside; scale and zero point get none.
    With native kernels and float32 per-tensor parameters this is one fused operator (the same
    values); otherwise element-wise MindSpore ops (a Python ``bprop`` cost more than the whole
    float layer on CPU).
    """

    def __init__(self, qmin: int, qmax: int, symmetric: bool) -> None:
        super().__init__()
        self.qmin, self.qmax = float(qmin), float(qmax)
        self.symmetric = symmetric
        self.fused = _load_fused()

    def construct(self, x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
        fused = self.fused and scale.size == 1 and all(t.dtype == ms.float32 for t in (x, scale, zero_point))
        return _quantize(x, scale, zero_point, self.qmin, self.qmax, self.symmetric, fused)


def _check_non_negative_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0 (training steps), got {value!r}")
    return value


class _DelayedFakeQuant(nn.Cell):
    """Shared by both quantizers: a training-step counter and the quantization delay.

    ``step`` counts training forwards of this quantizer (a parameter, so it is saved and
    restored with the network: a resumed run keeps its delay). The first ``quant_delay``
    training forwards pass the input through unchanged; evaluation always quantizes.
    """

    def __init__(self, scheme: QuantScheme, quant_delay: int) -> None:
        super().__init__()
        self.scheme = scheme
        self.quant_delay = _check_non_negative_int(quant_delay, "quant_delay")
        self.fused = _load_fused()
        self.step = Parameter(Tensor(0, ms.int32), name="step", requires_grad=False)

    def _count_and_check_delay(self) -> bool:
        """In training: count this step; True while the delay still holds (pass through)."""
        if not self.training:
            return False
        ops.assign_add(self.step, Tensor(1, ms.int32))
        return self.quant_delay > 0 and int(self.step.asnumpy()) <= self.quant_delay


class WeightFakeQuant(_DelayedFakeQuant):
    """Fake-quantize a weight with scales observed from the weight itself on every forward.

    ``scheme``: PER_TENSOR, or PER_CHANNEL with ``axis`` 0 (output channel of a Conv2d OIHW or
    Dense ``[out, in]`` weight). The scale is recomputed each step, so it follows training.
    """

    def __init__(self, scheme: QuantScheme, quant_delay: int = 0) -> None:
        if scheme.granularity not in (Granularity.PER_TENSOR, Granularity.PER_CHANNEL) or (
            scheme.granularity is Granularity.PER_CHANNEL and scheme.axis != 0
        ):
            raise ConfigError(
                f"weight fake quantization supports per_tensor or per_channel with axis 0, got {scheme.granularity.value} axis {scheme.axis}"
            )
        super().__init__(scheme, quant_delay)
        self.per_channel = scheme.granularity is Granularity.PER_CHANNEL

    def construct(self, w: Tensor) -> Tensor:
        if self._count_and_check_delay():
            return w
        scheme = self.scheme
        return _fake_quant_observed(w + 0, float(scheme.qmin), float(scheme.qmax), scheme.symmetric, self.per_channel, self.fused and w.dtype == ms.float32)


class ActivationFakeQuant(_DelayedFakeQuant):
    """Per-tensor activation fake quantization with an EMA min/max observer.

    In training each forward updates ``minimum``/``maximum`` from the batch: the first step
    takes the batch range, later ones ``new = decay * old + (1 - decay) * batch`` (the usual
    EMA; Golden Stick's kernel weights the *batch* by ``decay``, its known issue 18). With
    ``ema_decay=0`` the range is the current batch's, as in Golden Stick's default. The updated
    range then quantizes the batch. Evaluation uses the stored range.
    """

    def __init__(self, scheme: QuantScheme, ema_decay: float = 0.999, quant_delay: int = 0) -> None:
        if scheme.granularity is not Granularity.PER_TENSOR:
            raise ConfigError(f"activations are quantized per_tensor here, got {scheme.granularity.value}")
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be a float in [0, 1), got {ema_decay!r}")
        super().__init__(scheme, quant_delay)
        self.ema_decay = float(ema_decay)
        self.minimum = Parameter(Tensor(0.0, ms.float32), name="minimum", requires_grad=False)
        self.maximum = Parameter(Tensor(0.0, ms.float32), name="maximum", requires_grad=False)

    def construct(self, x: Tensor) -> Tensor:
        scheme = self.scheme
        qmin, qmax = float(scheme.qmin), float(scheme.qmax)
        if not self.training:
            return _fake_quant_range(x, self.minimum + 0, self.maximum + 0, qmin, qmax, scheme.symmetric, self.fused and x.dtype == ms.float32)
        delayed = self._count_and_check_delay()
        keep = self.ema_decay * ops.cast(self.step > 1, ms.float32)  # the first step takes the batch range
        out, lo, hi = _observe_fake_quant(x, self.minimum + 0, self.maximum + 0, keep, qmin, qmax, scheme.symmetric, self.fused and x.dtype == ms.float32)
        ops.assign(self.minimum, lo)
        ops.assign(self.maximum, hi)
        return x if delayed else out


class FakeQuantizedWeight(nn.Cell):
    """A float ``weight`` parameter and its :class:`WeightFakeQuant`: the weight source of a
    SimQAT :class:`~gscore.nn.quant_layer.QuantLayer` (returns the fake-quantized weight)."""

    def __init__(self, weight: Parameter, quantizer: WeightFakeQuant) -> None:
        super().__init__()
        self.weight = weight
        self.quantizer = quantizer

    def construct(self) -> Tensor:
        return self.quantizer(self.weight)
