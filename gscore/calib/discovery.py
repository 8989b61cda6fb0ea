"""Generic network structure for calibration: repeated blocks, their inputs, shared-input groups.

What :class:`~gscore.calib.network_helper.NetworkHelper` does by default, for a network no
adapter was written for:

* :func:`find_blocks` -- the repeated blocks are the children of the ``CellList`` or
  ``SequentialCell`` whose children all have one type and that holds the most quantizable
  layers (``Dense``/``Linear``/``Conv2d``) inside them; without one the network is one block.
* :func:`capture_block_inputs` -- runs the network on each calibration item with a pre-hook on
  the first block that records its positional and keyword inputs and stops the forward there.
  The first item runs to the end, to record one call of *every* block (what tracing needs).
* :class:`CallState` -- the recorded calls; running a block replaces each call's first input
  by the block's output (the first element when it returns a tuple) and keeps the rest.
* :func:`traced_smooth_groups` -- runs one block once with hooks on its atomic cells: linear
  layers receiving the same tensor object share an input. When that tensor is a foldable
  norm's output (:mod:`gscore.nn.norms`) and, perturbed while the linears' outputs are pinned,
  it changes nothing else (no residual addition or other reader outside the cells), the norm
  can absorb the smoothing division and is named; otherwise the group is smoothed explicitly.
  A block without a foldable norm needs no trace (:func:`single_layer_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mindspore import Tensor, nn

from gscore.errors import CalibrationDataError, data_errors
from gscore.nn.linear_view import is_linear
from gscore.nn.norms import is_foldable_norm
from gscore.nn.trace import CellCall, perturbation_reach, trace_calls
from gscore.nn.walk import iter_cells

def is_quantizable(cell: nn.Cell) -> bool:
    """Layers gscore quantizes: linear layers and 2-d convolutions."""
    return is_linear(cell) or isinstance(cell, nn.Conv2d)


def find_blocks(network: nn.Cell) -> list[tuple[str, nn.Cell]]:
    """``(full name, cell)`` of the repeated blocks, in container order (see the module doc)."""
    best: tuple[int, str, list[tuple[str, nn.Cell]]] | None = None
    for name, cell in network.cells_and_names():
        if not isinstance(cell, (nn.CellList, nn.SequentialCell)):
            continue
        children = list(cell.name_cells().items())
        if len(children) < 2 or len({type(child) for _, child in children}) != 1:
            continue
        count = sum(1 for _, child in children for _ in iter_cells(child, is_quantizable))
        if count and (best is None or count > best[0]):
            best = (count, name, children)
    if best is None:
        return [("", network)]
    _, name, children = best
    return [(f"{name}.{child}" if name else child, cell) for child, cell in children]


@dataclass(frozen=True)
class BlockCall:
    """The inputs of one call: ``args`` (Tensors or other values) and ``kwargs``."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    def run(self, cell: nn.Cell) -> Any:
        return cell(*self.args, **self.kwargs)

    def describe(self) -> str:
        parts = [_describe_value(a) for a in self.args] + [f"{k}={_describe_value(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


def _describe_value(value: Any) -> str:
    return f"shape {tuple(value.shape)}, dtype {value.dtype}" if isinstance(value, Tensor) else type(value).__name__


def _first_tensor(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass(frozen=True)
class CallState:
    """The recorded calls of the block being calibrated, one per calibration item, and (after
    :meth:`advance`) the block's outputs."""

    calls: tuple[BlockCall, ...]
    outputs: tuple[Any, ...] = ()

    def advance(self, block: nn.Cell) -> "CallState":
        """Run ``block`` on every call; its outputs become the next block's first inputs."""
        outputs, calls = [], []
        for i, call in enumerate(self.calls):
            with data_errors(f"the network cannot run on calibration input {i} ({call.describe()})"):
                output = call.run(block)
            outputs.append(output)
            calls.append(BlockCall((_first_tensor(output),) + call.args[1:], call.kwargs))
        return CallState(tuple(calls), tuple(outputs))

    def first(self, count: int) -> "CallState":
        return CallState(self.calls[:count], self.outputs[:count])

    def output(self) -> np.ndarray:
        """Every output tensor flattened into one float32 vector."""
        return np.concatenate([_first_tensor(out).asnumpy().astype(np.float32).reshape(-1) for out in self.outputs])


def as_call(item: Any, index: int) -> BlockCall:
    """One calibration item as network inputs: a Tensor or array, a tuple, or a dict."""
    if isinstance(item, Mapping):
        return BlockCall((), {str(k): _as_input(v, f"{index}[{k!r}]") for k, v in item.items()})
    if isinstance(item, tuple):
        if not item:
            raise CalibrationDataError(f"calibration input {index} is an empty tuple; give the network's inputs")
        return BlockCall(tuple(_as_input(v, f"{index}[{j}]") for j, v in enumerate(item)), {})
    return BlockCall((_as_input(item, str(index)),), {})


def _as_input(value: Any, label: str) -> Any:
    if isinstance(value, Tensor) or value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise CalibrationDataError(f"calibration input {label} is not an array: {exc}") from exc
    if array.dtype.kind not in "biuf" or array.ndim == 0 or array.size == 0:
        raise CalibrationDataError(f"calibration input {label} must be a non-empty numeric array, got dtype {array.dtype} and shape {array.shape}")
    return Tensor(array)


def calibration_calls(datasets: Any) -> list[BlockCall]:
    """Every item of ``datasets`` as a :class:`BlockCall` of network inputs."""
    if isinstance(datasets, (str, bytes, Tensor, np.ndarray, Mapping)) or not isinstance(datasets, Iterable):
        raise CalibrationDataError(
            "datasets must be an iterable (e.g. a list) of network inputs: numpy arrays or Tensors, tuples of them for a network "
            f"with several inputs, or dicts of keyword inputs; got {type(datasets).__name__}"
        )
    calls = [as_call(item, i) for i, item in enumerate(datasets)]
    if not calls:
        raise CalibrationDataError("datasets is empty: calibration needs at least one network input")
    return calls


class _Captured(Exception):
    """Internal: stops the forward once the first block's inputs are recorded."""


def capture_block_inputs(network: nn.Cell, blocks: list[tuple[str, nn.Cell]], datasets: Any) -> tuple[CallState, dict[nn.Cell, BlockCall]]:
    """The first block's inputs for every item, and one recorded call of every block."""
    calls = calibration_calls(datasets)
    if blocks[0][1] is network:
        return CallState(tuple(calls)), {network: calls[0]}
    firsts: list[BlockCall] = []
    probes: dict[nn.Cell, BlockCall] = {}
    stop = {"now": False}

    def recorder(block: nn.Cell) -> Any:
        def record(cell: nn.Cell, args: tuple, kwargs: dict) -> None:
            call = BlockCall(tuple(args), dict(kwargs))
            probes.setdefault(block, call)
            if block is blocks[0][1]:
                firsts.append(call)
                if stop["now"]:
                    raise _Captured

        return record

    handles = [cell.register_forward_pre_hook(recorder(cell), with_kwargs=True) for _, cell in blocks]
    try:
        for i, call in enumerate(calls):
            stop["now"] = i > 0
            try:
                with data_errors(f"the network cannot run on calibration input {i} ({call.describe()})"):
                    call.run(network)
            except _Captured:
                pass
            if len(firsts) != i + 1:
                raise CalibrationDataError(f"calibration input {i} ran the network without calling its first block {blocks[0][0]!r} exactly once")
    finally:
        for handle in handles:
            handle.remove()
    return CallState(tuple(firsts)), probes


def traced_smooth_groups(block: nn.Cell, call: BlockCall) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
    """Linear layers of ``block`` that read one tensor, with the norm that can absorb ``1/s``."""
    trace = trace_calls(block, None, run=lambda: call.run(block))
    linear_calls = [c for c in trace.calls if is_linear(c.cell)]
    counts: dict[str, int] = {}
    for c in linear_calls:
        counts[c.name] = counts.get(c.name, 0) + 1
    groups: list[tuple[str | None, tuple[str, ...]]] = []
    grouped: set[str] = set()
    for producer in trace.calls:
        readers = trace.consumers(producer.output)
        members = tuple(dict.fromkeys(r.name for r in readers if is_linear(r.cell) and counts[r.name] == 1 and r.name not in grouped))
        if not members:
            continue
        foldable = (
            is_foldable_norm(producer.cell)
            and len(trace.calls_of(producer.name)) == 1  # a norm called twice would scale its other output too
            and len(members) == len(readers)
            and not _reaches_more(block, call, trace, producer, readers)
        )
        groups.append((producer.name if foldable else None, members))
        grouped.update(members)
    by_input: dict[int, list[str]] = {}
    for c in linear_calls:
        if c.name not in grouped and counts[c.name] == 1:
            by_input.setdefault(id(c.inputs[0]), []).append(c.name)
    groups += [(None, tuple(names)) for names in by_input.values()]
    groups += [(None, (name,)) for name in dict.fromkeys(c.name for c in linear_calls) if counts[name] > 1]
    return tuple(groups)


def has_foldable_norm(block: nn.Cell) -> bool:
    """True if ``block`` holds a norm a smoothing division could be folded into."""
    return any(True for _ in iter_cells(block, is_foldable_norm))


def single_layer_groups(block: nn.Cell) -> tuple[tuple[None, tuple[str]], ...]:
    """Every linear layer of ``block`` its own group, smoothed explicitly: the grouping of a
    block without a foldable norm, known without running it (as DEPLOY mode needs)."""
    return tuple((None, (name,)) for name, _ in iter_cells(block, is_linear))


def _reaches_more(block: nn.Cell, call: BlockCall, trace: Any, producer: CellCall, readers: list[CellCall]) -> bool:
    """Perturb ``producer``'s output, pin its ``readers``' outputs: does anything else change?"""
    key = (producer.name, producer.index)
    return perturbation_reach(block, trace, key, {key}, {(r.name, r.index) for r in readers}, run=lambda: call.run(block)) is not None
