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
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from gscore import dist
from gscore.errors import ConfigError
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


# The two training-time paths run as compiled graphs: op-by-op PYNATIVE dispatch made a
# quantizer cost several times a small layer's own forward and backward. Module-level
# functions with constant scheme arguments share MindSpore's compile cache across cells; a
# compiled method, or a Parameter passed in, would be recompiled for every cell instance, so
# parameters enter as ``param + 0`` (a new plain tensor, gradient intact; ``ops.identity``
# returns the parameter itself).


@ms.jit
def _fake_quant_observed(w: Tensor, qmin: float, qmax: float, symmetric: bool, per_channel: bool) -> Tensor:
    """Fake-quantize ``w`` with the range of ``w`` itself, per output channel (axis 0) or per tensor."""
    observed = ops.stop_gradient(w)
    if per_channel:
        axes = tuple(range(1, w.ndim))
        lo, hi = ops.amin(observed, axes, True), ops.amax(observed, axes, True)
    else:
        lo, hi = observed.min(), observed.max()
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _ste(w, scale, zero, qmin, qmax, symmetric)


@ms.jit
def _range(x: Tensor) -> tuple[Tensor, Tensor]:
    observed = ops.stop_gradient(x)
    return ops.cast(observed.min(), ms.float32), ops.cast(observed.max(), ms.float32)


def batch_range(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of the batch ``x`` as float32 scalars, without gradient.

    In a data-parallel job, of every worker's batch together: what one process training on
    the global batch observes, so the EMA ranges stay the same on every worker.
    """
    lo, hi = _range(x)
    if not dist.active():
        return lo, hi
    ranges = dist.gather(np.array([lo.asnumpy(), hi.asnumpy()], np.float32))
    return Tensor(ranges[:, 0].min()), Tensor(ranges[:, 1].max())


@ms.jit
def _observe_fake_quant(
    x: Tensor, batch_lo: Tensor, batch_hi: Tensor, lo: Tensor, hi: Tensor, keep: Tensor, qmin: float, qmax: float, symmetric: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """EMA range update ``keep * old + (1 - keep) * batch``, then fake quantization with it."""
    lo = keep * lo + (1.0 - keep) * batch_lo
    hi = keep * hi + (1.0 - keep) * batch_hi
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _ste(x, scale, zero, qmin, qmax, symmetric), lo, hi


@ms.jit
def _fake_quant_range(x: Tensor, lo: Tensor, hi: Tensor, qmin: float, qmax: float, symmetric: bool) -> Tensor:
    """Fake-quantize ``x`` with a stored range (evaluation)."""
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _ste(x, scale, zero, qmin, qmax, symmetric)


class FakeQuantSTE(nn.Cell):
    """Fake quantization with a straight-through estimator (STE).

    ``construct(x, scale, zero_point)``: ``scale``/``zero_point`` broadcast against ``x``
    (``zero_point`` is ignored for symmetric schemes). The forward value is exactly
    ``(clip(round(x / scale + zp), qmin, qmax) - zp) * scale``, the deployed dequantisation:
    the STE adds ``u - stop_gradient(u)`` (exactly 0) to the rounded codes rather than
    ``stop_gradient(fq - x)`` to ``x`` (which would be off by float rounding). The gradient
    w.r.t. ``x`` is 1 where ``x / scale + zp`` lies within ``[qmin - 0.5, qmax + 0.5]`` (the
    values that quantize without clipping) and 0 outside; scale and zero point get none.
    Element-wise ops only: a custom ``bprop`` cost more than the whole float layer on CPU.
    """

    def __init__(self, qmin: int, qmax: int, symmetric: bool) -> None:
        super().__init__()
        self.qmin, self.qmax = float(qmin), float(qmax)
        self.symmetric = symmetric

    def construct(self, x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
        return _ste(x, scale, zero_point, self.qmin, self.qmax, self.symmetric)


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
        return _fake_quant_observed(w + 0, float(scheme.qmin), float(scheme.qmax), scheme.symmetric, self.per_channel)


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
            return _fake_quant_range(x, self.minimum + 0, self.maximum + 0, qmin, qmax, scheme.symmetric)
        delayed = self._count_and_check_delay()
        keep = self.ema_decay * ops.cast(self.step > 1, ms.float32)  # the first step takes the batch range
        batch_lo, batch_hi = batch_range(x)
        out, lo, hi = _observe_fake_quant(x, batch_lo, batch_hi, self.minimum + 0, self.maximum + 0, keep, qmin, qmax, scheme.symmetric)
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
