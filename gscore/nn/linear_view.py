"""One view over the linear layers gscore quantizes: ``nn.Dense`` and mindformers ``Linear``.

Both compute ``act(x @ W^T + b)`` (or ``x @ W`` when mindformers' ``transpose_b=False``) but
store their options under different attributes and compute in different dtypes:
mindformers casts input and weight to ``compute_dtype`` (float16 by default) and casts back,
``nn.Dense`` computes in the weight's dtype. mindformers is imported only if already loaded:
a network holding its layers has imported it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import mindspore as ms
from mindspore import Parameter, nn


@dataclass(frozen=True)
class LinearView:
    """What a quantized replacement needs to know about a linear layer.

    ``weight`` is ``[out, in]`` when ``transpose_b`` else ``[in, out]``; ``compute_dtype`` is
    the MindSpore dtype of the matmul; ``activation`` is the layer's activation cell or None.
    """

    cell: nn.Cell
    weight: Parameter
    bias: Parameter | None
    transpose_b: bool
    compute_dtype: Any
    activation: Any
    in_channels: int
    out_channels: int

    @property
    def out_axis(self) -> int:
        """Axis of ``weight`` that indexes output channels."""
        return 0 if self.transpose_b else 1


def _mindformers_linear() -> type | None:
    if "mindformers" not in sys.modules:
        return None
    from mindformers.modules import Linear

    return Linear


def is_linear(cell: nn.Cell) -> bool:
    """True for ``nn.Dense``, mindformers ``Linear`` and their subclasses."""
    mf_linear = _mindformers_linear()
    return isinstance(cell, nn.Dense) or (mf_linear is not None and isinstance(cell, mf_linear))


def linear_view(cell: nn.Cell) -> LinearView:
    """The :class:`LinearView` of a linear layer; ``TypeError`` for anything else."""
    if isinstance(cell, nn.Dense):
        return LinearView(
            cell=cell,
            weight=cell.weight,
            bias=cell.bias if cell.has_bias else None,
            transpose_b=True,
            compute_dtype=cell.weight.dtype,
            activation=cell.activation if cell.activation_flag else None,
            in_channels=cell.in_channels,
            out_channels=cell.out_channels,
        )
    mf_linear = _mindformers_linear()
    if mf_linear is not None and isinstance(cell, mf_linear):
        if cell.expert_flag:
            raise TypeError("mindformers Linear with expert_num > 1 (MoE) is not supported by weight quantization yet")
        return LinearView(
            cell=cell,
            weight=cell.weight,
            bias=cell.bias if cell.has_bias else None,
            transpose_b=bool(cell.transpose_b),
            compute_dtype=cell.dtype,
            activation=cell.activation if cell.activation_flag else None,
            in_channels=cell.in_channels,
            out_channels=cell.out_channels,
        )
    raise TypeError(f"{type(cell).__name__} is not a linear layer gscore can quantize (nn.Dense or mindformers Linear)")


def ms_float_dtype_to_numpy(dtype: Any) -> type:
    """numpy dtype matching a MindSpore float dtype (for scales stored in the compute dtype)."""
    table = {ms.float16: "float16", ms.float32: "float32", ms.float64: "float64"}
    if dtype not in table:
        raise TypeError(f"unsupported compute dtype {dtype}; expected float16, float32 or float64")
    import numpy as np

    return np.dtype(table[dtype]).type
