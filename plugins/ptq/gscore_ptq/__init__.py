"""gscore-ptq: post-training quantization, registered as ``ptq``."""

from __future__ import annotations

from typing import Any

from gscore import hookimpl
from gscore_ptq.algorithm import PTQ

GSCORE_API_VERSION = 1

__all__ = ["PTQ"]


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(PTQ, name="ptq", aliases=["PTQ", "post-training-quantization", "smooth-quant"])
