"""Layer-by-layer calibration: one block in flight, its inputs from the quantized blocks before it.

A network helper splits the model into blocks (:class:`~gscore.calib.network_helper.NetworkHelper`:
generic discovery, or a model adapter's own split). The driver
captures the first block's inputs once, then for each block lets the algorithm observe and
quantize it, and runs the *quantized* block to produce the next block's inputs. Peak memory
is the weights plus one block's activations over the calibration set, whatever the depth,
and later blocks are calibrated on the activations they will really see.
"""

from __future__ import annotations

from typing import Any, Callable

from mindspore import nn
from tqdm import tqdm

from gscore.calib.network_helper import NetworkHelperProtocol


def calibrate_blockwise(
    network: nn.Cell,
    helper: NetworkHelperProtocol,
    datasets: Any,
    process_block: Callable[[str, nn.Cell, Any], None],
    progress: bool = True,
) -> int:
    """Run ``process_block(name, block, state)`` on every block in order; returns the block count.

    ``process_block`` may run the block on ``state`` to observe it and must leave the block
    in its calibrated (simulated) form; the driver then advances ``state`` through it.
    """
    state = helper.block_inputs(network, datasets)
    blocks = helper.blocks(network)
    for name, block in tqdm(blocks, desc="calibrate", disable=not progress, leave=False):
        process_block(name, block, state)
        state = helper.run_block(block, state)
    return len(blocks)
