"""Layer-by-layer calibration: one block in flight, its inputs from the quantized blocks before it.

A helper that knows the model splits it into blocks (:class:`BlockwiseHelper`). The driver
captures the first block's inputs once, then for each block lets the algorithm observe and
quantize it, and runs the *quantized* block to produce the next block's inputs. Peak memory
is the weights plus one block's activations over the calibration set, whatever the depth,
and later blocks are calibrated on the activations they will really see.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Protocol

import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from gscore.errors import CalibrationDataError, data_errors


class BlockwiseHelper(Protocol):
    """What a network helper provides for layer-by-layer calibration."""

    def blocks(self, network: nn.Cell) -> list[tuple[str, nn.Cell]]:
        """``(full name, cell)`` of the repeated blocks, in execution order."""

    def block_inputs(self, network: nn.Cell, datasets: Any) -> Any:
        """The first block's inputs for the whole calibration set (an opaque state)."""

    def run_block(self, block: nn.Cell, state: Any) -> Any:
        """The next state: ``block`` applied to ``state``."""


def calibrate_blockwise(
    network: nn.Cell,
    helper: BlockwiseHelper,
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


class WholeNetworkHelper:
    """The fallback for networks without a block-aware helper: the whole network is one block.

    ``datasets`` is a non-empty iterable of network inputs (numeric numpy arrays or Tensors);
    every linear layer is its own smoothing group (no norm to fold into). Inputs the network
    cannot run on raise :class:`~gscore.errors.CalibrationDataError` naming the input.
    """

    def blocks(self, network: nn.Cell) -> list[tuple[str, nn.Cell]]:
        return [("", network)]

    def block_inputs(self, network: nn.Cell, datasets: Any) -> list[Tensor]:
        if isinstance(datasets, (str, bytes, Tensor, np.ndarray)) or not isinstance(datasets, Iterable):
            raise CalibrationDataError(f"datasets must be an iterable (e.g. a list) of network inputs, numpy arrays or Tensors; got {type(datasets).__name__}")
        inputs = []
        for i, x in enumerate(datasets):
            if not isinstance(x, Tensor):
                try:
                    array = np.asarray(x)
                except ValueError as exc:  # ragged nested lists
                    raise CalibrationDataError(f"calibration input {i} is not an array: {exc}") from exc
                if array.dtype.kind not in "biuf" or array.ndim == 0 or array.size == 0:
                    raise CalibrationDataError(f"calibration input {i} must be a non-empty numeric array, got dtype {array.dtype} and shape {array.shape}")
                x = Tensor(array)
            inputs.append(x)
        if not inputs:
            raise CalibrationDataError("datasets is empty: calibration needs at least one network input")
        return inputs

    def run_block(self, block: nn.Cell, state: list[Tensor]) -> list[Any]:
        outputs = []
        for i, x in enumerate(state):
            with data_errors(f"the network cannot run on calibration input {i} (shape {tuple(x.shape)}, dtype {x.dtype})"):
                outputs.append(block(x))
        return outputs

    def take(self, state: list[Any], count: int) -> list[Any]:
        return state[:count]

    def block_output(self, state: list[Any]) -> Any:
        import numpy as np

        return np.concatenate([x.asnumpy().reshape(-1) for x in state])

    def smooth_groups(self, block: nn.Cell) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
        from gscore.nn.linear_view import is_linear
        from gscore.nn.walk import iter_cells

        return tuple((None, (name,)) for name, _ in iter_cells(block, is_linear))

    def tokens_per_sequence(self) -> int:
        return 0
