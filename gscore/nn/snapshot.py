"""A record of a network from which it can be put back exactly: the undo of a failed phase.

A phase changes a network in two ways. Its *structure*: cells are replaced, wrapped or
removed, and MindSpore renames the parameters of every cell it attaches (``fc1.weight``
becomes ``fc1.layer.weight`` when an observer wraps ``fc1``). And *parameter values*:
``Parameter.set_data`` (SmoothQuant folding scales into a norm, loading a checkpoint).

:class:`NetworkSnapshot` records both when it is made, without copying tensor data:

* every cell's attribute dict, one level deep (children, own parameters, flags such as
  ``training``, and the items of the dicts and lists holding them): references only;
* every parameter's name, ``requires_grad`` and a zero-copy numpy view of its data.
  ``set_data`` gives a parameter new storage and leaves the old one alone; the view keeps
  the old storage alive, so a parameter that did not change costs nothing, and one that did
  costs exactly its old storage until the snapshot is dropped.

A phase that changes the whole network layer by layer would so hold a second float copy of
every layer it passed (the replaced storage, and the cells it took out with their
parameters). :meth:`NetworkSnapshot.spill` moves that undo data into an unlinked temporary
file, memory-mapped and read back only by :meth:`~NetworkSnapshot.restore`: the phase then
costs disk, not memory, per layer (``gscore.transaction.spill_undo``).

What it cannot undo: writes into the *same* storage, i.e. ``ops.assign`` inside a forward
pass (BatchNorm moving statistics of a network run in training mode) or in-place writes into
an ``asnumpy()`` view. gscore's phases change parameter values only through ``set_data``.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from typing import IO

import numpy as np
from mindspore import Parameter, Tensor, nn

from gscore.errors import GscoreWarning
from gscore.transaction import attribute_state, restore_attributes


def _data_view(param: Parameter) -> np.ndarray | None:
    """The parameter's data as a numpy view of its storage (None for lazily initialised ones)."""
    if param.has_init:
        return None
    return param.asnumpy()


def _same_storage(param: Parameter, view: np.ndarray) -> bool:
    if param.has_init:
        return False
    current = param.asnumpy()
    return (
        current.__array_interface__["data"][0] == view.__array_interface__["data"][0]
        and current.shape == view.shape
        and current.dtype == view.dtype
    )


@dataclass
class _ParamRecord:
    """One parameter as recorded; ``data`` is a view of its old storage, or its spilled copy
    (``spilled``: the parameter is known to differ and is always written back on restore)."""

    param: Parameter
    name: str
    requires_grad: bool
    is_init: bool
    data: np.ndarray | None
    spilled: bool = False

    def replaced(self) -> bool:
        return self.data is not None and (self.spilled or not _same_storage(self.param, self.data))


class NetworkSnapshot:
    """Structure and parameters of ``network`` as they are now; :meth:`restore` puts them back."""

    def __init__(self, network: nn.Cell) -> None:
        self._network = network
        self._cells = [(cell, attribute_state(cell)) for _, cell in network.cells_and_names()]
        params: dict[int, Parameter] = {}
        for cell, _ in self._cells:
            for param in cell._params.values():
                if param is not None:
                    params[id(param)] = param
        self._params = [_ParamRecord(p, p.name, p.requires_grad, p.is_init, _data_view(p)) for p in params.values()]
        self._spill_file: IO[bytes] | None = None

    def replaced_bytes(self) -> int:
        """Bytes of old parameter storage this snapshot keeps alive in memory: the parameters
        whose data was replaced since it was taken and not spilled (what a transaction costs in
        memory until it ends)."""
        return sum(record.data.nbytes for record in self._params if not record.spilled and record.replaced())

    def spill(self) -> int:
        """Move the undo data of replaced parameters and of parameters no longer in the network
        out of memory; returns the bytes moved.

        A parameter no longer in the network belongs to a cell the phase took out: its current
        storage is dropped too (restore writes the recorded data back). Call it only where the
        phase no longer uses the cells it took out. If the temporary file cannot be written
        (disk full), the undo data stays in memory, with a warning: the undo is never lost.
        """
        reachable = {id(p) for _, cell in self._network.cells_and_names() for p in cell._params.values() if p is not None}
        moved = 0
        for record in self._params:
            if record.data is None or record.spilled:
                continue
            detached = id(record.param) not in reachable
            if not (detached or record.replaced()):
                continue
            try:
                record.data = self._write(record.data)
            except OSError as error:
                warnings.warn(f"gscore could not move undo data to a temporary file ({error}); keeping it in memory", GscoreWarning, stacklevel=3)
                return moved
            record.spilled = True
            moved += record.data.nbytes
            if detached and not record.param.has_init:
                record.param.set_data(Tensor(np.zeros((0,), record.data.dtype)))
        return moved

    def _write(self, data: np.ndarray) -> np.ndarray:
        """``data`` appended to the spill file, as a read-only memory map of it."""
        if self._spill_file is None:
            self._spill_file = tempfile.TemporaryFile(prefix="gscore-undo-")
        file = self._spill_file
        offset = file.seek(0, 2)
        np.ascontiguousarray(data).tofile(file)
        file.flush()
        if data.size == 0:
            return np.empty(data.shape, data.dtype)
        return np.memmap(file, dtype=data.dtype, mode="r", offset=offset, shape=data.shape)

    def close(self) -> None:
        """Drop the undo data (the phase ended): its memory and its temporary file go now."""
        self._params = []
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None

    def restore(self) -> None:
        """Every recorded cell gets its attributes back, every parameter its name, flags and data."""
        for cell, state in self._cells:
            restore_attributes(cell, state)
        for record in self._params:
            param = record.param
            if param.name != record.name:
                param.name = record.name
            if param.requires_grad != record.requires_grad:
                param.requires_grad = record.requires_grad
            if param.is_init != record.is_init:
                param.is_init = record.is_init
            if record.replaced():
                data = np.array(record.data) if record.spilled else record.data
                param.set_data(Tensor.from_numpy(data))
