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

What it cannot undo: writes into the *same* storage, i.e. ``ops.assign`` inside a forward
pass (BatchNorm moving statistics of a network run in training mode) or in-place writes into
an ``asnumpy()`` view. gscore's phases change parameter values only through ``set_data``.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn

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


class NetworkSnapshot:
    """Structure and parameters of ``network`` as they are now; :meth:`restore` puts them back."""

    def __init__(self, network: nn.Cell) -> None:
        self._cells = [(cell, attribute_state(cell)) for _, cell in network.cells_and_names()]
        params: dict[int, Parameter] = {}
        for cell, _ in self._cells:
            for param in cell._params.values():
                if param is not None:
                    params[id(param)] = param
        self._params = [(p, p.name, p.requires_grad, p.is_init, _data_view(p)) for p in params.values()]

    def replaced_bytes(self) -> int:
        """Bytes of old parameter storage this snapshot keeps alive: the parameters whose data
        was replaced since it was taken (what a transaction costs in memory until it ends)."""
        return sum(view.nbytes for param, *_, view in self._params if view is not None and not _same_storage(param, view))

    def restore(self) -> None:
        """Every recorded cell gets its attributes back, every parameter its name, flags and data."""
        for cell, state in self._cells:
            restore_attributes(cell, state)
        for param, name, requires_grad, is_init, view in self._params:
            if param.name != name:
                param.name = name
            if param.requires_grad != requires_grad:
                param.requires_grad = requires_grad
            if param.is_init != is_init:
                param.is_init = is_init
            if view is not None and not _same_storage(param, view):
                param.set_data(Tensor.from_numpy(view))

