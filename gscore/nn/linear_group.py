"""Quantized linear layers that read one input, computed by one native operator.

A decode step of a small LLM spends more time launching operators than computing them (about
45 µs per launch in MindSpore's CPU runtime against ~60 µs for a 576-wide int8 GEMV). The
layers of a block that share an input — q/k/v after the attention norm, gate/up after the MLP
norm — and the steps around them (the norm before, the residual add or SiLU gate after) can
run as one operator (``gsk_linear_group`` in ``gscore/kernels/csrc/entry.cc``). Each step is
the function its own operator runs, so the result is bit-identical to the layers run one by
one; parameters stay where they are (the group holds none), so checkpoints do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import mindspore as ms
from mindspore import Tensor, nn

from gscore.kernels.ops import linear_group_plan, linear_group_primitive
from gscore.nn.quant_linear import QuantLinear


def can_group(layers: Sequence[nn.Cell]) -> bool:
    """Whether :class:`LinearGroup` can compute ``layers``: deployed layers with one native
    kernel kind, each :attr:`QuantLinear.groupable`."""
    if not layers or not all(isinstance(layer, QuantLinear) and layer.groupable for layer in layers):
        return False
    return len({layer.kernel for layer in layers}) == 1 and len({layer.in_channels for layer in layers}) == 1


class LinearGroup(nn.Cell):
    """``layers`` (see :func:`can_group`) on one input as one operator.

    ``prologue``: None, or ``"rms_norm"`` (the input is RMS-normalised first; the call passes
    the norm's weight ``[K]`` and eps ``[1]``). ``epilogue``: None (one output per layer),
    ``"add"`` (one layer; its output plus a residual the call passes) or ``"silu_mul"`` (two
    layers: ``silu(first) * second``). ``rope`` (no epilogue, two or three layers): the first
    two outputs (queries and keys, ``[batch * tokens, heads * head_dim]``) get rotate-half RoPE
    from ``cos``/``sin [tokens, head_dim]`` the call passes. Call as ``group(x, extra,
    inputs)``: ``x [batch * tokens, K]`` float32, ``extra`` the prologue's, RoPE's and
    epilogue's tensors in that order (a tuple), ``inputs`` the layers'
    :meth:`QuantLinear.group_inputs` concatenated.
    """

    def __init__(self, layers: Sequence[QuantLinear], prologue: str | None = None, epilogue: str | None = None, rope: bool = False) -> None:
        super().__init__()
        if not can_group(layers):
            raise ValueError("a linear group needs deployed layers with one native kernel kind, float32 compute and no activation")
        plan = linear_group_plan(layers[0].kernel, tuple(layer.has_bias for layer in layers), prologue, epilogue, rope)
        self.plan_values = plan
        self.plan = Tensor(plan, ms.int32)
        self.op = linear_group_primitive(plan)

    def construct(self, x: Tensor, extra: tuple, inputs: tuple) -> Tensor:
        return self.op(self.plan, x, *extra, *inputs)
