"""gscore-slb: SLB low-bit (1/2/4-bit) weight search by training, registered as ``slb``.

Registered by path so that listing algorithms imports no MindSpore; the class lives in
:mod:`gscore_slb.algorithm`, its config in :mod:`gscore_slb.config`, the temperature schedule
and its Model callback in :mod:`gscore_slb.schedule`.
"""

from __future__ import annotations

from typing import Any

from gscore import hookimpl

GSCORE_API_VERSION = 1


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(
        "gscore_slb.algorithm:SlbQuantAwareTraining",
        name="slb",
        aliases=["SlbQuantAwareTraining", "slb-qat", "searching-low-bit"],
        summary="SLB: search 1/2/4-bit weights by training; deploy with bit-packed weights on CPU.",
    )
