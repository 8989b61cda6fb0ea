"""gscore-scop: SCOP channel pruning that physically removes channels, registered as ``scop``.

``algo = gscore.get("scop")(SCOPConfig(prune_rate=0.5))``; ``algo.apply(net, datasets=(x, y))``
traces the network; ``pruned = algo.convert(net)`` chooses the channels (by default for the
least-squares refit, ``ranking="reconstruction"``) and returns a new, smaller network.
``scop-knockoff`` and Golden Stick's names ``PrunerKfCompressAlgo`` / ``PrunerFtCompressAlgo`` are
the same algorithm with the SCOP paper's knockoff ranking as the default (``apply`` then trains
the knockoff coefficients). See :mod:`gscore_scop.algorithm` for the flow and
:mod:`gscore.nn.trace` for the supported structures.
"""

from __future__ import annotations

from typing import Any

from gscore import hookimpl
from gscore_scop.algorithm import SCOP, KnockoffSCOP, load_pruned
from gscore_scop.config import KnockoffSCOPConfig, Ranking, SCOPConfig, Selection

GSCORE_API_VERSION = 1

__all__ = ["KnockoffSCOP", "KnockoffSCOPConfig", "Ranking", "SCOP", "SCOPConfig", "Selection", "load_pruned"]


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(SCOP, name="scop", aliases=["scop-pruner"])
    registry.add(KnockoffSCOP, name="scop-knockoff", aliases=["PrunerKfCompressAlgo", "PrunerFtCompressAlgo"])
