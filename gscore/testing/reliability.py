"""Checks for all-or-nothing behaviour, for gscore's reliability suite and plugin authors.

:func:`network_state` captures everything a failed call must leave unchanged; compare two
captures with ``==``. :func:`call_all_or_nothing` runs one call and asserts the contract:
it finishes, or it raises a :class:`~gscore.errors.GscoreError` and the network is unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gscore.errors import GscoreError


def network_state(network: Any) -> dict[str, Any]:
    """Cells (path, class, training flag, in walk order) and parameters (name -> dtype, shape,
    requires_grad, raw bytes, in order) of a MindSpore network."""
    cells = [(name, type(cell), cell.training) for name, cell in network.cells_and_names()]
    params = [
        (p.name, str(p.dtype), tuple(p.shape), p.requires_grad, np.ascontiguousarray(p.asnumpy()).tobytes())
        for p in network.get_parameters()
    ]
    return {"cells": cells, "params": params}


def describe_difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A short account of what changed between two :func:`network_state` captures."""
    lines = []
    cells_before, cells_after = before["cells"], after["cells"]
    if cells_before != cells_after:
        changed = [f"{b} -> {a}" for b, a in zip(cells_before, cells_after) if b != a][:3]
        lines.append(f"cells: {len(cells_before)} -> {len(cells_after)}; first differences: {changed}")
    params_before = {p[0]: p for p in before["params"]}
    params_after = {p[0]: p for p in after["params"]}
    if params_before.keys() != params_after.keys():
        lines.append(f"parameter names: lost {sorted(params_before.keys() - params_after.keys())[:5]}, new {sorted(params_after.keys() - params_before.keys())[:5]}")
    changed_values = [n for n in params_before.keys() & params_after.keys() if params_before[n] != params_after[n]]
    if changed_values:
        lines.append(f"parameters with another dtype, shape, flag or value: {sorted(changed_values)[:5]}")
    if not lines and before != after:
        lines.append("parameter order changed")
    return "; ".join(lines)


def call_all_or_nothing(call: Callable[[], Any], network: Any) -> tuple[Any, GscoreError | None]:
    """Run ``call()``; return ``(result, None)``, or ``(None, error)`` for a GscoreError after
    asserting ``network`` is exactly as before. Any other exception propagates (a test failure)."""
    before = network_state(network)
    try:
        return call(), None
    except GscoreError as error:
        after = network_state(network)
        assert after == before, f"{type(error).__name__}: {error} left the network changed: {describe_difference(before, after)}"
        return None, error
