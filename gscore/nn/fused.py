"""Element-wise steps of a decoder block as single operators: RMSNorm, rotate-half RoPE, SiLU
gate, residual add.

Each cell computes one step that MindSpore would run as several small operators (RMSNorm six,
RoPE seven, the SiLU gate three). In decoding, where a step handles a few thousand values, the
launch cost of those operators outweighs their arithmetic several times over; with native
kernels (:mod:`gscore.kernels`) each cell is one operator. The residual add is one operator
either way, but MindSpore's Add spreads even 576 values over its kernel thread pool, which on
a busy 2-core machine costs ten times the native add. Without them (or for dtypes other
than float32) the cells compute the same formula with MindSpore ops. The choice is made when
the cell is built, like the quantized layers' (a compiled graph sees a constant).

The cells hold no parameters: a model keeps its own (``RMSNorm.weight``), so adding them
changes no parameter name or checkpoint.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from gscore import kernels
from gscore.kernels.ops import primitive


def _native(name: str) -> object:
    return primitive(name) if kernels.enabled() else None


def rotate_half(x: Tensor) -> Tensor:
    """``[-x[..., D/2:], x[..., :D/2]]``: the rotation of rotate-half RoPE."""
    half = x.shape[-1] // 2
    return ops.cat([-x[..., half:], x[..., :half]], axis=-1)


class RMSNormOp(nn.Cell):
    """``x * rsqrt(mean(x^2, last axis) + eps) * weight``, computed in float32."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.native = _native("rms_norm")
        self.eps_tensor = Tensor([eps], ms.float32)

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.native is not None and x.dtype == ms.float32:
            return self.native(x, weight, self.eps_tensor)
        variance = ops.mean(ops.square(x), axis=-1, keep_dims=True)
        return x * ops.rsqrt(variance + self.eps) * weight


class Rotary(nn.Cell):
    """Rotate-half RoPE: ``x * cos + rotate_half(x) * sin`` for ``x [batch, heads, tokens,
    head_dim]`` and ``cos``/``sin [tokens, head_dim]``."""

    def __init__(self) -> None:
        super().__init__()
        self.native = _native("rotary")

    def construct(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        if self.native is not None and x.dtype == ms.float32:
            return self.native(x, cos, sin)
        return x * cos + rotate_half(x) * sin


class SiluMul(nn.Cell):
    """The SwiGLU gate: ``silu(gate) * up``."""

    def __init__(self) -> None:
        super().__init__()
        self.native = _native("silu_mul")

    def construct(self, gate: Tensor, up: Tensor) -> Tensor:
        if self.native is not None and gate.dtype == ms.float32 and up.dtype == ms.float32:
            return self.native(gate, up)
        return ops.silu(gate) * up


class Add(nn.Cell):
    """``a + b`` for float32 tensors of one shape (a residual connection); bit-identical to ``+``."""

    def __init__(self) -> None:
        super().__init__()
        self.native = _native("add")

    def construct(self, a: Tensor, b: Tensor) -> Tensor:
        if self.native is not None and a.dtype == ms.float32 and b.dtype == ms.float32 and a.shape == b.shape:
            return self.native(a, b)
        return a + b
