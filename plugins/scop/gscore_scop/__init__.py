"""gscore-scop: SCOP channel pruning that physically removes channels, registered as ``scop``.

``algo = gscore.get("scop")(SCOPConfig(prune_rate=0.5))``; ``algo.apply(net, datasets=(x, y))``
runs the knockoff stage; ``pruned = algo.convert(net)`` is a new, smaller network. See
:mod:`gscore_scop.algorithm` for the flow and :mod:`gscore.nn.trace` for the supported structures.
"""

from __future__ import annotations

from typing import Any

from gscore import hookimpl
from gscore_scop.algorithm import SCOP, load_pruned
from gscore_scop.config import Ranking, SCOPConfig, Selection

GSCORE_API_VERSION = 1

__all__ = ["Ranking", "SCOP", "SCOPConfig", "Selection", "load_pruned"]


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(SCOP, name="scop", aliases=["PrunerKfCompressAlgo", "PrunerFtCompressAlgo", "scop-pruner"])
