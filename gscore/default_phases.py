"""The core's default phase implementations: call the algorithm's own method (``trylast``).

Registered as a plugin like any other, so a third-party plugin can answer a phase before it
(by returning a network) or wrap it.
"""

from __future__ import annotations

from typing import Any

from gscore.hookspecs import hookimpl


@hookimpl(trylast=True)
def gscore_calibrate(algorithm: Any, network: Any, network_helper: Any, datasets: Any) -> Any:
    return algorithm.calibrate(network, network_helper=network_helper, datasets=datasets)


@hookimpl(trylast=True)
def gscore_quantize(algorithm: Any, network: Any) -> Any:
    return algorithm.quantize(network)


@hookimpl(trylast=True)
def gscore_deploy(algorithm: Any, network: Any) -> Any:
    return algorithm.deploy(network)


@hookimpl(trylast=True)
def gscore_prune(algorithm: Any, network: Any) -> Any:
    return algorithm.prune(network)
