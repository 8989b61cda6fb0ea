"""Run a built network on MindSpore ops for a while: the path gradients flow through.

Native kernels (:mod:`gscore.kernels`) are AOT ``Custom`` operators without a backward, and
MindSpore refuses to differentiate through them. A step that trains a deployed network's
parameters (e.g. :mod:`gscore.calib.distill`) therefore runs it on the ops path every cell
keeps beside its kernel, then gives the kernels back. Cells choose their kernel when they
are built (``native``: the operator, or None for the ops path); a quantized linear cell
that applies its smoothing inside the kernel (``smooths_in_kernel``) must apply it itself
while the kernel is off, and a decoder block whose linear layers were grouped into one
operator (``grouped``) calls its layers one by one again. Input quantizers round their
inputs to int8, which has no gradient; they pass gradients straight through instead
(``straight_through``), so layers before a quantized input still learn. Both paths compute
the same function (within the float rounding ``tests/test_kernels.py`` states), so nothing
but speed and differentiability changes.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

from mindspore import nn

from gscore import kernels
from gscore.kernels import PORTABLE, KernelFallbackWarning

_OPS_PATH = (("native", None), ("smooths_in_kernel", False), ("grouped", False), ("straight_through", True))
"""Attributes a cell may have, and the value each takes on the differentiable ops path."""


@contextmanager
def ops_path(network: nn.Cell) -> Iterator[nn.Cell]:
    """Inside the block every cell of ``network`` runs on MindSpore ops, input quantizers pass
    gradients straight through, and cells that build their kernel lazily (KV caches) do not
    build one; on exit every cell gets back what it had, even after an error."""
    changed: list[tuple[nn.Cell, str, object]] = []
    with warnings.catch_warnings():  # the ops path is what the caller asked for: no "kernels are off" warning
        warnings.simplefilter("ignore", KernelFallbackWarning)
        with kernels.forced(PORTABLE):
            try:
                for _, cell in network.cells_and_names():
                    for attr, wanted in _OPS_PATH:
                        if hasattr(cell, attr) and getattr(cell, attr) is not wanted:
                            changed.append((cell, attr, getattr(cell, attr)))
                            setattr(cell, attr, wanted)
                yield network
            finally:
                for cell, attr, value in reversed(changed):
                    setattr(cell, attr, value)
