"""All-or-nothing verbs: a failed ``apply``/``convert``/``load_checkpoint`` leaves things as they were.

:func:`transaction` records, when it opens, what a phase may change, and puts it back if the
block raises (any exception, ``KeyboardInterrupt`` included), then re-raises:

* the network, through :class:`gscore.nn.snapshot.NetworkSnapshot` (structure, parameter
  names and values; no tensor data is copied up front);
* the object running the phase (the algorithm): its attribute dict, one level deep, so a
  failed ``apply`` does not leave half-filled state (layer lists, traced groups) that makes
  the retry fail.

Transactions nest: a block that opens one on a network already protected joins the outer
one, which alone restores. This module does not import MindSpore; it takes a network
snapshot only when the network is a MindSpore cell (anything else, e.g. the plain lists of
toy plugins, has no structure to record).
"""

from __future__ import annotations

import contextlib
import sys
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any, Iterator

_CONTAINERS = (dict, OrderedDict, list)
_active: ContextVar[tuple[tuple[int, Any], ...]] = ContextVar("gscore_transactions", default=())
"""The open transactions of this context: (id of the network, its snapshot or None), outermost first."""


def attribute_state(obj: Any) -> dict[str, tuple[Any, Any]]:
    """``obj``'s attributes as ``{name: (value, contents)}``; ``contents`` copies the items of
    plain dicts and lists (which are changed in place), ``None`` for every other value."""
    state = {}
    for name, value in vars(obj).items():
        contents = None
        if type(value) in _CONTAINERS:
            contents = list(value.items()) if isinstance(value, dict) else list(value)
        state[name] = (value, contents)
    return state


def restore_attributes(obj: Any, state: dict[str, tuple[Any, Any]]) -> None:
    """Put back what :func:`attribute_state` recorded: the same objects, with their recorded items."""
    current = vars(obj)
    for name in [n for n in current if n not in state]:
        del current[name]
    for name, (value, contents) in state.items():
        if contents is not None:
            if isinstance(value, dict):
                value.clear()
                value.update(contents)
            else:
                value[:] = contents
        current[name] = value


def is_cell(network: Any) -> bool:
    """True for a MindSpore cell (checked without importing MindSpore: a cell means it is loaded)."""
    mindspore = sys.modules.get("mindspore")
    return mindspore is not None and isinstance(network, mindspore.nn.Cell)


@contextlib.contextmanager
def transaction(network: Any, owner: Any = None) -> Iterator[None]:
    """Run the block all-or-nothing for ``network`` (and ``owner``'s attributes); see the module doc."""
    active = _active.get()
    if any(key == id(network) for key, _ in active):
        yield
        return
    snapshot = None
    if is_cell(network):
        from gscore.nn.snapshot import NetworkSnapshot

        snapshot = NetworkSnapshot(network)
    owner_state = attribute_state(owner) if owner is not None else None
    token = _active.set((*active, (id(network), snapshot)))
    try:
        yield
    except BaseException as exc:
        try:
            if snapshot is not None:
                snapshot.restore()
            if owner_state is not None:
                restore_attributes(owner, owner_state)
        except Exception as undo_error:  # report both: the cause, and that the undo failed
            exc.add_note(f"gscore could not restore the network after this error ({type(undo_error).__name__}: {undo_error}); it may be half-converted")
        raise
    finally:
        _active.reset(token)
        if snapshot is not None:
            snapshot.close()


def spill_undo(network: Any) -> int:
    """Move the undo data of the transaction open on ``network`` to a temporary file; returns
    the bytes moved (0 outside a transaction).

    For phases that change a network step by step (the layer-by-layer calibration driver calls
    it after every block): without it, an all-or-nothing phase would keep the old storage of
    every layer it changed in memory until it ends, one float copy of the model. Call it only
    where the phase no longer uses the cells it has taken out of the network (see
    :meth:`gscore.nn.snapshot.NetworkSnapshot.spill`).
    """
    for key, snapshot in _active.get():
        if key == id(network) and snapshot is not None:
            return snapshot.spill()
    return 0
