"""Finding cells in a network and replacing them in place, keeping parameter names right.

Containers (``SequentialCell``, ``CellList``) are replaced into through their item assignment,
because their forward iterates a list that plain attribute assignment would not update.
MindSpore names a parameter by the attribute path at the time a cell is attached, so a cell
put deep into a tree would get a short name (``0.weight`` instead of ``block.0.weight``).
:func:`replace_cell` therefore renames every parameter of the new cell to its full path,
which is what checkpoints are keyed by.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator

from mindspore import nn

from gscore.errors import GscoreWarning


def iter_cells(network: nn.Cell, predicate: Callable[[nn.Cell], bool]) -> Iterator[tuple[str, nn.Cell]]:
    """``(full_name, cell)`` for every sub-cell matching ``predicate``, outermost first.

    A matching cell's own children are not searched: a replaced layer is one unit.
    """
    stack = [("", network)]
    while stack:
        prefix, cell = stack.pop()
        for child_name, child in reversed(list(cell.name_cells().items())):
            full = f"{prefix}.{child_name}" if prefix else child_name
            if predicate(child):
                yield full, child
            else:
                stack.append((full, child))


def get_cell(network: nn.Cell, full_name: str) -> nn.Cell:
    """The sub-cell at dotted path ``full_name``."""
    cell = network
    for part in full_name.split("."):
        children = cell.name_cells()
        if part not in children:
            raise KeyError(f"{type(cell).__name__} has no sub-cell {part!r} (looking for {full_name!r})")
        cell = children[part]
    return cell


def replace_cell(network: nn.Cell, full_name: str, new_cell: nn.Cell, name_prefix: str = "") -> None:
    """Put ``new_cell`` at dotted path ``full_name`` and give its parameters their full names.

    ``name_prefix`` is the path of ``network`` itself inside the model (``"model.layers.3."``)
    when replacing within a sub-cell, so parameter names stay those of the whole model.
    """
    parent_name, _, leaf = full_name.rpartition(".")
    parent = get_cell(network, parent_name) if parent_name else network
    if leaf not in parent.name_cells():
        raise KeyError(f"{type(parent).__name__} has no sub-cell {leaf!r} (replacing {full_name!r})")
    if isinstance(parent, (nn.SequentialCell, nn.CellList)):
        # their forward runs a list of cells kept beside ``_cells``; only __setitem__ updates both
        parent[list(parent.name_cells()).index(leaf)] = new_cell
    else:
        setattr(parent, leaf, new_cell)
    for relative, param in new_cell.parameters_and_names():
        param.name = f"{name_prefix}{full_name}.{relative}"


def matches_blacklist(full_name: str, blacklist: list[str]) -> bool:
    """Golden Stick's rule: a layer is skipped when any entry is a substring of its full name."""
    return any(entry in full_name for entry in blacklist)


def warn_unmatched_blacklist(layer_names: list[str], blacklist: list[str]) -> None:
    """Warn (GscoreWarning) about blacklist entries that are a substring of no layer name:
    they exclude nothing, which is rarely what a user who wrote them meant."""
    unused = [entry for entry in blacklist if not any(entry in name for name in layer_names)]
    if unused:
        warnings.warn(f"opname_blacklist entries {unused} match no layer, so they have no effect; layer names look like {layer_names[:3]}", GscoreWarning, stacklevel=4)
