"""Streaming calibration: quantize a model larger than memory, one block resident at a time.

:func:`quantize_streaming` drives a PTQ algorithm block by block over a model *source* (a
model folder read through a memory map, :class:`StreamingSource`): for each block it

1. materialises the block's float weights from the folder (the only float weights in memory);
2. runs the algorithm's own ``apply`` on a network holding just that block, with a helper
   whose calibration data is the activations entering the block (so every PTQ option that
   works layer by layer works here, under the block's full parameter names);
3. keeps the activations the calibrated (simulated) block produces, as the next block's input,
   exactly as in-memory layer-by-layer calibration does; then ``convert`` gives the integer
   block;
4. writes the block to the output folder (:mod:`gscore.io.streamed`) with its digest, saves the
   activations, records both in the manifest, and drops the block.

Peak memory is one float block (and the copies calibration makes of it) plus the calibration
activations, whatever the depth; the parameters that belong to no block (embeddings, head) are
read and written once at the start. A run that stops (crash, kill) resumes from the last block
the manifest lists, after checking every written file against its digest; the resumed run
writes the same files an uninterrupted one would.

In a data-parallel job every worker runs this on its shard of the windows; block by block the
workers combine statistics (as in-memory calibration does), check that they hold the same
block, and rank 0 writes it. Model-level steps that need the whole network at once (PTQ's
rotation of the residual stream and its float token prefix) are refused.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from mindspore import nn
from tqdm import tqdm

from gscore import dist
from gscore.algorithm import PTQAlgorithm
from gscore.errors import CalibrationDataError, ConfigError
from gscore.io.digest import array_digest, parameters_digest
from gscore.io.streamed import REST, StreamedCheckpoint
from gscore.nn.quant_linear import SimQuantLinear
from gscore.nn.walk import iter_cells


class StreamingSource(Protocol):
    """A model that can be materialised one block at a time (see :mod:`gscore.models.llama_stream`).

    ``windows_per_forward`` (windows per calibration forward, None: all at once) decides how
    windows are dealt to data-parallel workers, as for in-memory calibration.
    """

    windows_per_forward: int | None

    def identity(self) -> dict[str, Any]:
        """What identifies the model (a resumed run must read the same one)."""

    def block_names(self) -> list[str]:
        """Full names of the blocks, in execution order."""

    def rest_network(self) -> nn.Cell:
        """A network holding, loaded, every parameter that belongs to no block."""

    def block_network(self, name: str) -> tuple[nn.Cell, nn.Cell]:
        """``(network, block)``: block ``name`` with its float weights loaded, inside a network
        that gives its parameters their full names."""

    def first_state(self, windows: np.ndarray) -> Any:
        """The activations entering the first block for ``windows`` (a helper state)."""

    def state_array(self, state: Any) -> np.ndarray:
        """A state as one array, to save."""

    def state_from_array(self, array: np.ndarray, windows: np.ndarray) -> Any:
        """The state saved as ``array``, for ``windows``."""

    def calibration_helper(self, name: str, block: nn.Cell, shard: dist.Shard | None) -> Any:
        """A block-aware helper whose calibration data is a state entering ``block`` (it
        records the state after the block in ``after`` through ``block_done``)."""


def _job(algorithm: PTQAlgorithm, source: StreamingSource, windows: np.ndarray) -> dict[str, Any]:
    return {
        "model": source.identity(),
        "algorithm": type(algorithm).__name__,
        "config": algorithm.config.to_dict(),
        "windows": array_digest(windows),
        "workers": dist.size(),
    }


def quantize_streaming(
    algorithm: PTQAlgorithm,
    source: StreamingSource,
    windows: Any,
    output: str | os.PathLike[str],
    on_block: Callable[[str], None] | None = None,
    progress: bool = True,
) -> Path:
    """Quantize ``source`` block by block with ``algorithm`` (a PTQ algorithm in QUANTIZE mode)
    calibrated on token ``windows`` ``[n, tokens]``, into the folder ``output``; returns it.

    Every worker of a data-parallel job passes all windows and takes its shard. ``on_block``
    is called with a block's name once it is safely written. Read the result with
    :func:`gscore.io.streamed.load_streamed`.
    """
    from gscore.config import PTQMode

    if not isinstance(algorithm, PTQAlgorithm) or algorithm.config.mode is not PTQMode.QUANTIZE:
        raise ConfigError(f"streaming calibration runs a PTQ algorithm in QUANTIZE mode, got {type(algorithm).__name__}")
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.dtype.kind not in "iu" or not windows.size:
        raise CalibrationDataError(f"streaming calibration takes token windows as a non-empty int array [n, tokens], got {windows.dtype} {windows.shape}")
    windows = windows.astype(np.int32)
    shard = dist.Shard.of(len(windows), group=source.windows_per_forward or 1) if dist.active() else None
    mine = windows if shard is None else windows[shard.indices]
    checkpoint = StreamedCheckpoint.open(output, _job(algorithm, source, windows))
    if checkpoint.complete:
        return checkpoint.folder
    rank = dist.rank()
    if checkpoint.blocks:
        state = source.state_from_array(checkpoint.read_state(rank), mine)
    else:
        _write_rest(checkpoint, source)
        state = source.first_state(mine)
    names = source.block_names()
    for name in tqdm(names, desc="stream", disable=not progress or not dist.is_root(), leave=False):
        if checkpoint.finished(name):
            continue
        state = _quantize_block(algorithm, source, checkpoint, name, state, shard)
        _release()
        if on_block is not None:
            on_block(name)
    if dist.is_root():
        layers = {layer: facts for block in checkpoint.blocks for layer, facts in block["layers"].items()}
        checkpoint.finish({"algorithm": type(algorithm).__name__, "config": algorithm.config.to_dict(), "layers": layers})
    dist.barrier()
    return checkpoint.folder


def _write_rest(checkpoint: StreamedCheckpoint, source: StreamingSource) -> None:
    rest = source.rest_network()
    dist.agree("the parameters outside the blocks", parameters_digest(rest))
    if dist.is_root():
        checkpoint.rest = checkpoint.write_part(REST, rest)
        checkpoint.save()
    dist.barrier()


def _quantize_block(algorithm: PTQAlgorithm, source: StreamingSource, checkpoint: StreamedCheckpoint, name: str, state: Any, shard: dist.Shard | None) -> Any:
    """Calibrate, convert and write block ``name``; returns the activations after it."""
    network, block = source.block_network(name)
    helper = source.calibration_helper(name, block, shard)
    algorithm.apply(network, helper, datasets=state)
    after = helper.after if helper.after is not None else helper.run_block(block, state)  # configs without data never run the driver
    if any(True for _ in iter_cells(network, lambda c: isinstance(c, SimQuantLinear))):
        algorithm.convert(network)
    algorithm.network_helper = None  # the helper holds the block: let it go with it
    digest = parameters_digest(network)
    dist.agree(f"block {name} after conversion", digest)
    rank = dist.rank()
    entry = checkpoint.write_part(name, network) if dist.is_root() else {"file": f"{name}.ckpt", "digest": digest}
    states = dist.gather(np.frombuffer(bytes.fromhex(checkpoint.write_state(name, rank, source.state_array(after))), np.int64))
    entry.update(name=name, states=[words.tobytes().hex() for words in states], layers=algorithm.describe(network)["layers"])
    dist.barrier()  # every worker's state is on disk before the manifest says the block is done
    checkpoint.blocks.append(entry)
    if dist.is_root():
        checkpoint.save()
    dist.barrier()
    checkpoint.drop_states_before(name, rank)
    return after


def _release() -> None:
    """Free the finished block now: MindSpore cells sit in reference cycles, which only Python's
    cyclic collector frees, and waiting for it kept several float blocks alive (measured)."""
    gc.collect()
