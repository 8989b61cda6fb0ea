"""gscore-simqat: simulated quantization-aware training, registered as ``simqat``.

Registered by path so that listing algorithms imports no MindSpore; the class lives in
:mod:`gscore_simqat.algorithm`, its config in :mod:`gscore_simqat.config`.
"""

from __future__ import annotations

from typing import Any

from gscore import hookimpl

GSCORE_API_VERSION = 1


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(
        "gscore_simqat.algorithm:SimulatedQuantizationAwareTraining",
        name="simqat",
        aliases=["SimulatedQuantizationAwareTraining", "sim-qat", "simulated-quantization"],
        summary="SimQAT: fake-quantized training (int8 weights and activations by default), CPU deploy.",
    )
