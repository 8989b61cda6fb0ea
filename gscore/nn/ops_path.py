"""Run a built network on MindSpore ops for a while: the path gradients flow through.

Native kernels (:mod:`gscore.kernels`) are AOT ``Custom`` operators without a backward, and
MindSpore refuses to differentiate through them. A step that trains a deployed network's
parameters (e.g. :mod:`gscore.calib.distill`) therefore runs it on the ops path every cell
keeps beside its kernel, then gives the kernels back. Cells choose their kernel when they
are built (``native``: the operator, or None for the ops path); a quantized linear cell
that applies its smoothing inside the kernel (``smooths_in_kernel``) must apply it itself
while the kernel is off, and a decoder block whose linear layers were grouped into one
operator (``grouped``) calls its layers one by one again. Both paths compute the same function (within the float rounding
``tests/test_kernels.py`` states), so nothing but speed and differentiability changes.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

from mindspore import nn

from gscore import kernels
from gscore.kernels import PORTABLE, KernelFallbackWarning

_SWITCHES = (("native", None), ("smooths_in_kernel", False), ("grouped", False))
"""Attributes that pick a cell's kernel, and the value that picks the ops path instead."""


@contextmanager
def ops_path(network: nn.Cell) -> Iterator[nn.Cell]:
    """Inside the block every cell of ``network`` runs on MindSpore ops, and cells that build
    their kernel lazily (KV caches) do not build one; on exit every cell gets back the kernel
    it had, even after an error."""
    changed: list[tuple[nn.Cell, str, object]] = []
    with warnings.catch_warnings():  # the ops path is what the caller asked for: no "kernels are off" warning
        warnings.simplefilter("ignore", KernelFallbackWarning)
        with kernels.forced(PORTABLE):
            try:
                for _, cell in network.cells_and_names():
                    for attr, off in _SWITCHES:
                        value = getattr(cell, attr, off)
                        if value is not off:
                            changed.append((cell, attr, value))
                            setattr(cell, attr, off)
                yield network
            finally:
                for cell, attr, value in reversed(changed):
                    setattr(cell, attr, value)
