"""Data parallelism on MindSpore's own distributed engine: ``msrun`` workers and its collectives.

The one place that knows whether a run is distributed. Under ``msrun`` every worker runs the
same script on the same arguments; calibration and training take their share of the data
(:class:`Shard`) and combine what they computed with the collectives here, so that every
worker ends with the same quantized network, and rank 0 writes it. Outside ``msrun`` every
function is the single-process identity and MindSpore's communication stack is never imported.

Scripts call :func:`init` first (see :mod:`gscore.dist.runtime` for why); :mod:`gscore.dist.launch`
starts a script on N workers.
"""

from gscore.dist.collectives import agree, all_max, all_min, all_sum, barrier, gather, gather_rows
from gscore.dist.runtime import active, init, is_root, launched, rank, size
from gscore.dist.shard import Shard

__all__ = [
    "Shard",
    "active",
    "agree",
    "all_max",
    "all_min",
    "all_sum",
    "barrier",
    "gather",
    "gather_rows",
    "init",
    "is_root",
    "launched",
    "rank",
    "size",
]
