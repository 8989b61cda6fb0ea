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

Scales follow :func:`gscore.quant.compute_params` (symmetric ``max|x| / qmax``; asymmetric
range widened to include 0 and a rounded zero point), re-expressed in MindSpore ops because
they change every step, with the same float64 intermediate arithmetic, so they equal numpy's
bit for bit. :func:`graph_params` is THE activation-scale computation: the simulated network in
evaluation, the deployed :class:`~gscore.nn.quant_conv.ActivationQuantizer` (built by
``convert`` from the stored range) and any fused fake-quant kernel call this one compiled
function, and quantize with the one compiled :func:`fake_quant_with`, so simulated and deployed
activations agree bit for bit. (In float32, ``hi/255 - lo/255`` for a range with a negative
minimum rounds differently from float64 in about a quarter of cases, a 1-ulp scale difference
that moves codes, and zero points near a half flip.)

An activation quantizer whose observer never saw a training-mode forward still holds the
initial range [0, 0]; evaluating it, or converting it, raises :class:`CalibrationDataError`
naming it (:func:`require_observed`), instead of quantizing with a meaningless scale of 1.

With native kernels (:mod:`gscore.kernels`) the range observation and the fake quantization
itself each run as one fused operator, the latter with its own straight-through backward (one
pass over the tensor each way instead of about ten): same values forward, bit for bit, and
the gradient is the incoming gradient where the value quantizes without clipping.
"""

from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from gscore import dist, kernels
from gscore.errors import CalibrationDataError, ConfigError
from gscore.kernels.ops import primitive
from gscore.quant import Granularity, QuantScheme

_SCALE_FLOOR = float(np.finfo(np.float32).tiny)


def _params(lo: Tensor, hi: Tensor, qmin: float, qmax: float, symmetric: bool) -> tuple[Tensor, Tensor]:
    """:func:`gscore.quant.compute_params` step for step: float64 range arithmetic, the scale
    rounded once to float32, the zero point from that float32 scale in float64. Computing in
    float32 instead moves the scale by 1 ulp in about a quarter of ranges and flips zero points
    whose ``qmin - lo / scale`` lies within float32 rounding of a half (tested exhaustively)."""
    lo = ops.cast(lo, ms.float64)
    hi = ops.cast(hi, ms.float64)
    if symmetric:
        span = ops.maximum(ops.abs(lo), ops.abs(hi)) / qmax
    else:
        lo = ops.clamp(lo, None, 0.0)
        steps = qmax - qmin
        span = ops.clamp(hi, 0.0, None) / steps - lo / steps
    scale = ops.clamp(ops.cast(span, ms.float32), _SCALE_FLOOR, None)  # ops.maximum(tensor, float) fails to compile at random
    scale = ops.where(span == 0, ops.ones_like(scale), scale)
    if symmetric:
        zero = ops.zeros_like(scale)
    else:
        zero = ops.cast(ops.clamp(ops.round(qmin - lo / ops.cast(scale, ms.float64)), qmin, qmax), ms.float32)
    return ops.stop_gradient(scale), ops.stop_gradient(zero)


@ms.jit
def _compiled_params(lo: Tensor, hi: Tensor, qmin: float, qmax: float, symmetric: bool) -> tuple[Tensor, Tensor]:
    return _params(lo, hi, qmin, qmax, symmetric)


def graph_params(lo: Tensor, hi: Tensor, scheme: QuantScheme) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` float32 tensors shaped like ``lo``/``hi``: the in-graph twin of
    :func:`gscore.quant.compute_params` (same formulas and precisions; equal bit for bit).

    This one compiled function computes every activation scale that simulated and deployed
    networks use (see the module docstring); call it, never a copy of its formula, wherever an
    activation range becomes a scale.

    One known difference to numpy: MindSpore's CPU kernels flush subnormal float32 inputs
    (``|lo|``, ``|hi|`` below ~1.2e-38) to zero, so such a range counts as empty here (scale
    1.0) where numpy floors its scale at the smallest normal float32. Either way such values
    quantize to within 1e-38 of 0.
    """
    return _compiled_params(lo, hi, float(scheme.qmin), float(scheme.qmax), scheme.symmetric)


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


def observed_fake_quant(w: Tensor, qmin: float, qmax: float, symmetric: bool, per_channel: bool, fused: bool) -> Tensor:
    """Fake-quantize ``w`` with the range of ``w`` itself, per output channel (axis 0) or per tensor.

    Not compiled by itself: :class:`WeightFakeQuant` compiles it alone, and a cell that
    prepares the weight (e.g. SimQAT's BatchNorm fold) compiles it together with that
    preparation, one call instead of several operator launches; the constant arguments come
    from :meth:`WeightFakeQuant.compile_args` and the result goes through
    :meth:`WeightFakeQuant.finish`.
    """
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


_fake_quant_observed = ms.jit(observed_fake_quant)


def _min_max(x: Tensor, fused: bool) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of ``x`` as float32 scalars, without gradient."""
    observed = ops.stop_gradient(x)
    if fused:
        lo_hi = _MINMAX(observed)
        return lo_hi[0], lo_hi[1]
    return ops.cast(observed.min(), ms.float32), ops.cast(observed.max(), ms.float32)


_range = ms.jit(_min_max)


def batch_range(x: Tensor, fused: bool = False, gather: ops.AllGather | None = None) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of the batch ``x`` as float32 scalars, without gradient.

    With ``gather`` (an ``AllGather`` primitive, in a data-parallel job), of every worker's
    batch together: what one process training on the global batch observes, so the EMA ranges
    stay the same on every worker. All operators, no value read into Python, so it runs in a
    compiled training step too (``AllGather`` is exact for float32).
    """
    lo, hi = _range(x, fused)
    if gather is None:
        return lo, hi
    ranges = ops.reshape(gather(ops.stop_gradient(ops.stack([lo, hi]))), (-1, 2))
    return ranges[:, 0].min(), ranges[:, 1].max()


def _ema_fake_quant(
    x: Tensor, batch_lo: Tensor, batch_hi: Tensor, lo: Tensor, hi: Tensor, step: Tensor, decay: float, qmin: float, qmax: float, symmetric: bool, fused: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """EMA range update ``keep * old + (1 - keep) * batch`` with ``keep = decay`` after the
    first counted step (``step > 1``) and 0 on it, then fake quantization with that range."""
    keep = decay * ops.cast(step > 1, ms.float32)
    lo = keep * lo + (1.0 - keep) * batch_lo
    hi = keep * hi + (1.0 - keep) * batch_hi
    scale, zero = _params(lo, hi, qmin, qmax, symmetric)
    return _quantize(x, scale, zero, qmin, qmax, symmetric, fused), lo, hi


@ms.jit
def _observe_fake_quant(
    x: Tensor, batch_lo: Tensor, batch_hi: Tensor, lo: Tensor, hi: Tensor, step: Tensor, decay: float, qmin: float, qmax: float, symmetric: bool, fused: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_ema_fake_quant` with a batch range given (a data-parallel job's, over every worker)."""
    return _ema_fake_quant(x, batch_lo, batch_hi, lo, hi, step, decay, qmin, qmax, symmetric, fused)


@ms.jit
def _observe_own_fake_quant(
    x: Tensor, lo: Tensor, hi: Tensor, step: Tensor, decay: float, qmin: float, qmax: float, symmetric: bool, fused: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_ema_fake_quant` on the range of ``x`` itself, in the same compiled call: op by op,
    every separate operator launch costs a few tenths of a millisecond, several times a small
    element-wise kernel."""
    batch_lo, batch_hi = _min_max(x, fused)
    return _ema_fake_quant(x, batch_lo, batch_hi, lo, hi, step, decay, qmin, qmax, symmetric, fused)


@ms.jit
def fake_quant_with(x: Tensor, scale: Tensor, zero: Tensor, qmin: float, qmax: float, symmetric: bool, fused: bool) -> Tensor:
    """Fake-quantize ``x`` with a given ``scale``/``zero`` (straight-through gradient, see :class:`FakeQuantSTE`).

    The one compiled forward of a fixed activation quantizer: the simulated network in
    evaluation and the deployed network both run it, on scales from :func:`graph_params`
    (``fused``: as the native operator, same values).
    """
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
        return fake_quant_with(x, scale, zero_point, self.qmin, self.qmax, self.symmetric, fused)


def _check_non_negative_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0 (training steps), got {value!r}")
    return value


class _DelayedFakeQuant(nn.Cell):
    """Shared by both quantizers: a training-step counter and the quantization delay.

    ``step`` counts training forwards of this quantizer (a parameter, so it is saved and
    restored with the network: a resumed run keeps its delay). The first ``quant_delay``
    training forwards pass the input through unchanged; evaluation always quantizes.

    Written for both execution modes: op by op, and inside a training step compiled as one
    graph (``ms.jit``, ``GRAPH_MODE``, :func:`gscore.train.classifier.train_classifier` with
    ``compiled=True``). So ``construct`` keeps no Python-side state and never reads a tensor
    into Python: the delay is a select on the counter, not a Python ``if`` (MindSpore would
    run such code as an interpreted node and silently stop the gradient there).
    """

    def __init__(self, scheme: QuantScheme, quant_delay: int) -> None:
        super().__init__()
        self.scheme = scheme
        self.quant_delay = _check_non_negative_int(quant_delay, "quant_delay")
        self.fused = _load_fused()
        self.step = Parameter(Tensor(0, ms.int32), name="step", requires_grad=False)

    def _count_step(self) -> None:
        ops.assign_add(self.step, Tensor(1, ms.int32))

    def _after_delay(self, x: Tensor, quantized: Tensor) -> Tensor:
        """In training, after :meth:`_count_step`: ``x`` while the delay holds, else ``quantized``."""
        if self.quant_delay == 0:
            return quantized
        return ops.select(ops.broadcast_to(self.step <= self.quant_delay, x.shape), x, quantized)


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

    def compile_args(self, w: Tensor) -> tuple[float, float, bool, bool, bool]:
        """The constant arguments of :func:`observed_fake_quant` after the weight ``w``."""
        scheme = self.scheme
        return float(scheme.qmin), float(scheme.qmax), scheme.symmetric, self.per_channel, self.fused and w.dtype == ms.float32

    def finish(self, w: Tensor, quantized: Tensor) -> Tensor:
        """What the forward returns for ``w`` once ``quantized = observed_fake_quant(w,
        *compile_args(w))`` is computed: in training the step is counted and the quantization
        delay applied."""
        if not self.training:
            return quantized
        self._count_step()
        return self._after_delay(w, quantized)

    def construct(self, w: Tensor) -> Tensor:
        return self.finish(w, _fake_quant_observed(w + 0, *self.compile_args(w)))


class ActivationFakeQuant(_DelayedFakeQuant):
    """Per-tensor activation fake quantization with an EMA min/max observer.

    In training each forward updates ``minimum``/``maximum`` from the batch: the first step
    takes the batch range, later ones ``new = decay * old + (1 - decay) * batch`` (the usual
    EMA; Golden Stick's kernel weights the *batch* by ``decay``, its known issue 18). With
    ``ema_decay=0`` the range is the current batch's, as in Golden Stick's default. The updated
    range then quantizes the batch. Evaluation uses the stored range (scale from
    :func:`graph_params`) and raises :class:`CalibrationDataError` while the observer has never
    seen a training-mode forward (``step == 0``). ``label`` names the quantizer in that error
    (the algorithms pass the layer's name, e.g. ``"conv1.input_quant"``).
    """

    def __init__(self, scheme: QuantScheme, ema_decay: float = 0.999, quant_delay: int = 0, label: str = "activation quantizer") -> None:
        if scheme.granularity is not Granularity.PER_TENSOR:
            raise ConfigError(f"activations are quantized per_tensor here, got {scheme.granularity.value}")
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be a float in [0, 1), got {ema_decay!r}")
        super().__init__(scheme, quant_delay)
        self.ema_decay = float(ema_decay)
        self.label = label
        self.minimum = Parameter(Tensor(0.0, ms.float32), name="minimum", requires_grad=False)
        self.maximum = Parameter(Tensor(0.0, ms.float32), name="maximum", requires_grad=False)
        self._seen_data = False  # cache of "step > 0" so evaluation reads the counter only until it is
        self.gather = ops.AllGather() if dist.active() else None  # the global batch's range, see batch_range

    @property
    def observed(self) -> bool:
        """True once a training-mode forward (or a loaded checkpoint) has set the range."""
        if not self._seen_data:
            self._seen_data = int(self.step.asnumpy()) > 0
        return self._seen_data

    def params(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` of the stored range, by :func:`graph_params` (float32 scalars)."""
        return graph_params(self.minimum + 0, self.maximum + 0, self.scheme)

    def construct(self, x: Tensor) -> Tensor:
        scheme = self.scheme
        qmin, qmax = float(scheme.qmin), float(scheme.qmax)
        if not self.training:
            if not self.observed:
                raise CalibrationDataError(unobserved_message([self.label]))
            scale, zero = self.params()
            return fake_quant_with(x, scale, zero, qmin, qmax, scheme.symmetric, self.fused and x.dtype == ms.float32)
        self._count_step()
        fused = self.fused and x.dtype == ms.float32
        observed = (self.minimum + 0, self.maximum + 0, self.step + 0, self.ema_decay, qmin, qmax, scheme.symmetric, fused)
        if self.gather is not None:
            out, lo, hi = _observe_fake_quant(x, *batch_range(x, fused, self.gather), *observed)
        else:
            out, lo, hi = _observe_own_fake_quant(x, *observed)
        ops.assign(self.minimum, lo)
        ops.assign(self.maximum, hi)
        return self._after_delay(x, out)


def unobserved_message(labels: list[str]) -> str:
    """The error text for activation quantizers that never observed data."""
    return (
        f"{len(labels)} activation quantizer(s) never observed data, so their range is still the initial [0, 0]: "
        f"{', '.join(labels)}. Train the network first (training-mode forwards update the ranges), or, to rebuild "
        "a deployed network from a saved checkpoint, pass it to convert: algo.convert(algo.apply(net), ckpt_path=PATH)"
    )


def require_observed(network: nn.Cell) -> None:
    """Raise :class:`CalibrationDataError` naming every :class:`ActivationFakeQuant` in ``network``
    whose observer never saw data; QAT ``convert`` calls it before fixing the ranges."""
    missing = [name for name, cell in network.cells_and_names() if isinstance(cell, ActivationFakeQuant) and not cell.observed]
    if missing:
        raise CalibrationDataError(unobserved_message(missing))


class FakeQuantizedWeight(nn.Cell):
    """A float ``weight`` parameter and its :class:`WeightFakeQuant`: the weight source of a
    SimQAT :class:`~gscore.nn.quant_layer.QuantLayer` (returns the fake-quantized weight)."""

    def __init__(self, weight: Parameter, quantizer: WeightFakeQuant) -> None:
        super().__init__()
        self.weight = weight
        self.quantizer = quantizer

    def construct(self) -> Tensor:
        return self.quantizer(self.weight)
