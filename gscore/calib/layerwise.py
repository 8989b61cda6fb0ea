"""Layer-by-layer calibration: one block in flight, its inputs from the quantized blocks before it.

A network helper splits the model into blocks (:class:`~gscore.calib.network_helper.NetworkHelper`:
generic discovery, or a model adapter's own split). The driver
captures the first block's inputs once, then for each block lets the algorithm observe and
quantize it, and runs the *quantized* block to produce the next block's inputs (or takes them
from the algorithm, when its one pass over the block already produced them). Peak memory
is the weights plus one block's activations over the calibration set, whatever the depth,
and later blocks are calibrated on the activations they will really see. The phase is
all-or-nothing (:mod:`gscore.transaction`); its undo data is moved to disk before the first
block and after every block, so it does not keep a float copy of each finished block in memory.

Under ``msrun`` an algorithm that wraps its helper with
:func:`~gscore.calib.data_parallel.data_parallel` calibrates data-parallel: each worker runs
its shard of the windows and the workers combine their statistics before a block is
quantized. The driver then checks after every block that all workers hold the same block
(bitwise, by digest), so a statistic that was not combined stops the job at the block where
the workers diverged instead of producing different checkpoints. An algorithm that does not
wrap its helper still gives every worker the same result, each computing everything.
"""

from __future__ import annotations

from typing import Any, Callable

from mindspore import nn
from tqdm import tqdm

from gscore import dist
from gscore.calib.network_helper import NetworkHelperProtocol
from gscore.io.digest import parameters_digest
from gscore.transaction import spill_undo


def calibrate_blockwise(
    network: nn.Cell,
    helper: NetworkHelperProtocol,
    datasets: Any,
    process_block: Callable[[str, nn.Cell, Any], Any],
    progress: bool = True,
) -> int:
    """Run ``process_block(name, block, state)`` on every block in order; returns the block count.

    ``process_block`` may run the block on ``state`` to observe it and must leave the block
    in its calibrated (simulated) form. It returns the state after the calibrated block when
    it computed that itself (a one-pass, true-sequential calibration), or None: the driver
    then advances ``state`` through the block. Either way the driver then calls the helper's
    optional ``block_done(name, block, state)`` (the streaming driver writes the finished
    block out there). Between blocks, the cells that ``process_block``
    took out of the network may be emptied (their undo data goes to disk): it must not keep
    using them once it returned, nor the ones a model-level step took out before the driver.
    """
    state = helper.block_inputs(network, datasets)
    blocks = helper.blocks(network)
    finished = getattr(helper, "block_done", None)
    spill_undo(network)
    for name, block in tqdm(blocks, desc="calibrate", disable=not progress or not dist.is_root(), leave=False):
        after = process_block(name, block, state)
        if dist.active():
            dist.agree(f"block {name or type(block).__name__} after calibration", parameters_digest(block))
        state = helper.run_block(block, state) if after is None else after
        if finished is not None:
            finished(name, block, state)
        spill_undo(network)
    return len(blocks)
