"""Find the placeholders of a DEPLOY network that no checkpoint replaced.

DEPLOY mode builds the quantized layers with zero int8 codes and NaN weight scales and biases
(see :func:`gscore.nn.passes.deployed_linear`). ``gscore.io.load_checkpoint`` refuses a file
that does not fill every parameter, but plain ``mindspore.load_checkpoint`` only logs a warning
for names it cannot match and leaves the placeholders: the network then outputs NaN (or, for a
bias-free layer whose codes alone were missed, zeros). Call :func:`check_loaded` after such a
load to get the names instead.
"""

from __future__ import annotations

import numpy as np
from mindspore import nn

from gscore.errors import UnloadedParametersError
from gscore.nn.quant_linear import QuantLinear
from gscore.nn.walk import iter_cells


def unloaded_parameters(network: nn.Cell) -> list[str]:
    """Names of placeholders left in ``network``: float parameters holding NaN, and int8
    weights of deployed linear layers whose codes are all zero (a real layer has some)."""
    weights = {id(cell.weight) for _, cell in iter_cells(network, lambda c: isinstance(c, QuantLinear))}
    names = []
    for param in network.get_parameters():
        value = param.asnumpy()
        if np.issubdtype(value.dtype, np.floating) and np.isnan(value).any():
            names.append(param.name)
        elif id(param) in weights and not value.any():
            names.append(param.name)
    return names


def check_loaded(network: nn.Cell) -> None:
    """Raise :class:`UnloadedParametersError` naming every parameter still holding a placeholder."""
    names = unloaded_parameters(network)
    if names:
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise UnloadedParametersError(
            f"{type(network).__name__} still holds {len(names)} placeholder(s) that no checkpoint replaced: {shown}. "
            "A file whose names do not match leaves them (mindspore.load_checkpoint only warns); load gscore "
            "checkpoints with gscore.io.load_checkpoint and Golden Stick ones with gscore.io.load_goldenstick, which name what does not fit"
        )
