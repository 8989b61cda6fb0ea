"""Normalisation layers whose affine output can absorb a per-channel factor.

SmoothQuant and AWQ divide a layer's input by ``s`` (per input channel) and multiply its
weight columns by ``s``. When the input is the output of a norm ``y = n(x) * gamma + beta``,
the division is folded into the norm: ``y / s = n(x) * (gamma / s) + beta / s``. Every
per-channel parameter of the norm is divided, the bias (``beta``) as much as the gain:
dividing only the gain would leave ``beta`` un-scaled and shift the layer's input.

Recognised: ``nn.LayerNorm`` (``gamma``, ``beta``) and any cell whose class name ends in
``Norm`` (RMSNorm ports, ``weight`` and optional ``bias``), whose children hold no parameters
(a fused operator cell may compute it) and whose parameters are all 1-d vectors of one length,
the channel count of its last axis. ``BatchNorm*`` normalises axis 1
(channels of NCHW), not the last axis, so it is not one of them.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn


def affine_parameters(cell: nn.Cell) -> list[Parameter]:
    """The per-channel parameters of a norm that folding divides (``[gamma, beta]``, ``[weight]``);
    empty when ``cell`` is not a norm gscore can fold into."""
    if "BatchNorm" in type(cell).__name__ or any(list(child.get_parameters()) for child in cell.name_cells().values()):
        return []
    if not (isinstance(cell, nn.LayerNorm) or type(cell).__name__.endswith("Norm")):
        return []
    params = list(cell.get_parameters(expand=False))
    shapes = {tuple(p.shape) for p in params}
    return params if len(shapes) == 1 and len(next(iter(shapes))) == 1 else []


def is_foldable_norm(cell: nn.Cell) -> bool:
    """True if a per-channel division of ``cell``'s output can be folded into its parameters."""
    return bool(affine_parameters(cell))


def norm_values(cell: nn.Cell) -> list[np.ndarray]:
    """float32 copies of the norm's per-channel parameters (to restore them after a search)."""
    return [p.asnumpy().astype(np.float32) for p in affine_parameters(cell)]


def set_folded(cell: nn.Cell, values: list[np.ndarray], inverse: np.ndarray | None) -> None:
    """Set the norm's parameters to ``values`` (as :func:`norm_values` gave them), each times
    ``inverse`` (``1/s``, ``[channels]``) when given: the norm then outputs ``y * inverse``."""
    params = affine_parameters(cell)
    if len(params) != len(values):
        raise TypeError(f"{type(cell).__name__} is not a norm gscore can fold a smoothing scale into")
    for param, value in zip(params, values):
        folded = value if inverse is None else value * inverse
        param.set_data(Tensor(folded.astype(np.float32), param.dtype))
