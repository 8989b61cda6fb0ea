"""What a network costs: parameter count and multiply-accumulates of one forward, by tracing.

MACs are counted per input sample from the shapes seen in a real forward pass
(:func:`~gscore.nn.trace.trace_calls`), so they follow whatever ``construct`` actually does:
``Conv2d`` costs ``H_out * W_out * C_out * (C_in / group) * k_h * k_w``, ``Dense`` costs
``in * out`` per row. Other layers (BatchNorm, activations, pooling, additions) are cheap next
to these and are not counted, as is usual for FLOP figures of convolutional networks.
FLOPs are quoted as ``2 * MACs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mindspore import nn

from gscore.nn.trace import trace_calls


@dataclass(frozen=True)
class Cost:
    """Parameters (all, trainable or not, e.g. BN statistics included) and MACs per sample."""

    parameters: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_parameters(network: nn.Cell) -> int:
    """Number of scalar values in every parameter of ``network``."""
    return int(sum(int(np.prod(p.shape)) for p in network.get_parameters()))


def network_cost(network: nn.Cell, sample: np.ndarray) -> Cost:
    """Parameters and MACs per sample of ``network`` on ``sample`` (a batch of ``n`` inputs)."""
    trace = trace_calls(network, sample)
    rows = sample.shape[0]
    macs = 0
    for call in trace.calls:
        cell, out_shape = call.cell, call.output.shape
        if isinstance(cell, nn.Conv2d):
            kh, kw = cell.kernel_size
            macs += int(np.prod(out_shape)) // rows * (cell.in_channels // cell.group) * kh * kw
        elif isinstance(cell, nn.Dense):
            macs += int(np.prod(out_shape[:-1])) // rows * cell.in_channels * cell.out_channels
    return Cost(count_parameters(network), macs)
