"""One worker's side of data-parallel calibration: its shard of the windows, presented as the whole set.

:func:`data_parallel` wraps a block-aware network helper (:class:`~gscore.calib.network_helper.NetworkHelperProtocol`)
when the process is an ``msrun`` worker; outside ``msrun`` it returns the helper itself. The
wrapper keeps the calibration algorithm unaware of the split:

* ``block_inputs`` gives the worker its shard of the windows (:class:`~gscore.dist.Shard`:
  windows ``rank, rank + n, ...``, or whole groups of the helper's ``windows_per_forward``)
  and keeps, with every state, the global indices of the windows it holds;
* ``run_block`` on a block holding observers (:class:`~gscore.calib.observers.InputObserver`,
  :class:`~gscore.calib.observers.ObservingKVCache`) tells them where their rows sit in the
  whole set, runs the worker's windows, then synchronizes them: afterwards every worker's
  observers hold the statistics of all windows;
* ``calls_block_once`` is False: statistics are combined after a whole pass, so a worker
  observes each block in a pass of its own, never in PTQ's one true-sequential pass;
* ``take(state, k)`` keeps the worker's part of the global first ``k`` windows (possibly
  none), and ``block_output`` gathers every worker's part back in global window order, so a
  search scored on block outputs computes the same error on every worker from the same
  numbers one process would see.

Every worker therefore takes the same decisions and quantizes every block identically
(:func:`~gscore.calib.layerwise.calibrate_blockwise` checks it after each block), while each
runs its own share of the forward passes.

Equal to one process? MindSpore's CPU matmuls round a row's result differently depending on
how many rows share the call, so a worker running half the windows in one forward gets
activations that differ from one process's in the last bit, and static activation
quantization turns a value that crosses a rounding boundary into a whole step. For results
independent of the worker count, the helper runs a fixed number of windows per forward
(``LlamaHelper(windows_per_forward=k)``, in the single-process run too): each worker then runs
exactly the forwards one process runs, and only float64 sums (``XᵀX``, ``|x|``) are added in
another order.

A helper whose inputs already are this worker's shard (the streaming driver hands over a
block state) says so with a ``shard`` attribute; its data is then not split again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mindspore import nn

from gscore import dist
from gscore.calib.observers import InputObserver, ObservingKVCache, RowOrigin
from gscore.errors import CalibrationDataError
from gscore.nn.walk import iter_cells

_MAX_OUTPUT_RANK = 8  # block outputs are gathered as [windows, ...] with at most this many axes


@dataclass(frozen=True)
class ShardState:
    """The wrapped helper's state for the windows ``windows`` (global indices, ascending); ``inner`` is None when there are none."""

    inner: Any
    windows: np.ndarray


class DataParallelHelper:
    """The helper of one data-parallel worker (module docstring); other attributes are the wrapped helper's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.shard: dist.Shard | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (unpickling, copy): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def _group(self) -> int:
        """Windows per forward of the wrapped helper (1 when it runs a whole state at once)."""
        return getattr(self.inner, "windows_per_forward", None) or 1

    def blocks(self, network: nn.Cell) -> list[tuple[str, nn.Cell]]:
        return self.inner.blocks(network)

    def block_inputs(self, network: nn.Cell, datasets: Any) -> ShardState:
        given = getattr(self.inner, "shard", None)
        if given is not None:
            self.shard = given
            return ShardState(self.inner.block_inputs(network, datasets), given.indices)
        if not hasattr(datasets, "__len__") or not hasattr(datasets, "__getitem__"):
            raise CalibrationDataError(
                f"data-parallel calibration splits the calibration data between workers, so datasets must be a sequence "
                f"(a numpy array of windows or a list of inputs), got {type(datasets).__name__}"
            )
        self.shard = dist.Shard.of(len(datasets), group=self._group)
        return ShardState(self.inner.block_inputs(network, self.shard.take(datasets)), self.shard.indices)

    def run_block(self, block: nn.Cell, state: ShardState) -> ShardState:
        observers = [cell for _, cell in iter_cells(block, lambda c: isinstance(c, (InputObserver, ObservingKVCache)))]
        grouped = getattr(self.inner, "windows_per_forward", None) is not None
        for observer in observers:
            if isinstance(observer, InputObserver):
                observer.set_origin(RowOrigin(state.windows, self.shard.total, grouped))
        out = ShardState(self.inner.run_block(block, state.inner) if len(state.windows) else None, state.windows)
        for observer in observers:
            observer.synchronize()
        return out

    def calls_block_once(self, state: ShardState) -> bool:
        """False: statistics are combined between workers after a whole pass over the block,
        so each block is observed in a pass of its own (not through to the wrapped helper)."""
        return False

    def take(self, state: ShardState, count: int) -> ShardState:
        """This worker's part of the global first ``count`` windows of ``state``."""
        held = int(np.count_nonzero(state.windows < count))
        return ShardState(self.inner.take(state.inner, held) if held else None, state.windows[:held])

    def block_output(self, state: ShardState) -> np.ndarray:
        """The block output of every worker's windows of ``state``, in global window order (float32)."""
        local = None if state.inner is None else np.asarray(self.inner.block_output(state.inner), np.float32)
        count = len(state.windows)
        per_window = np.zeros(_MAX_OUTPUT_RANK, np.int64)  # [elements per window, then the output's trailing axes]
        if local is not None:
            trailing = local.shape[1:]
            per_window[: 1 + len(trailing)] = (local.size // count, *trailing)
        per_window = dist.all_max(per_window)
        width = int(per_window[0])
        rows = np.zeros((0, width), np.float32) if local is None else local.reshape(count, width)
        order = np.argsort(dist.gather_rows(state.windows), kind="stable")
        trailing = tuple(int(d) for d in per_window[1:] if d)
        return dist.gather_rows(rows)[order].reshape((-1, *trailing))

    def block_done(self, name: str, block: nn.Cell, state: ShardState) -> None:
        finished = getattr(self.inner, "block_done", None)
        if finished is not None:
            finished(name, block, state.inner)


def data_parallel(helper: Any) -> Any:
    """``helper`` wrapped for data-parallel calibration in an ``msrun`` worker; ``helper`` itself otherwise."""
    if not dist.active() or isinstance(helper, DataParallelHelper):
        return helper
    return DataParallelHelper(helper)
