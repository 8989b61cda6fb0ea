"""gscore-ptq: post-training quantization, registered as ``ptq``.

Registered by path so that listing algorithms imports no MindSpore; the class lives in
:mod:`gscore_ptq.algorithm`.
"""

from __future__ import annotations

from typing import Any

from gscore import hookimpl

GSCORE_API_VERSION = 1


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(
        "gscore_ptq.algorithm:PTQ",
        name="ptq",
        aliases=["PTQ", "post-training-quantization"],
        summary="Post-training quantization: A16W8, A16W4 per group, A8W8 static (SmoothQuant) or dynamic, KV-cache int8.",
    )
