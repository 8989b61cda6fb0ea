"""gscore-rtn: round-to-nearest weight quantization, registered as ``rtn``.

A16W8: every ``nn.Dense`` / mindformers ``Linear`` weight becomes int8 with one symmetric
scale per output channel, computed from the weight itself. KV-cache int8 (dynamic, per
token and head, ``kvcache_quant_granularity=per_token``) swaps every float KV cache of a
gscore decoder for an int8 one; static per-channel KV scales need calibration: use ``ptq``. Unlike Golden Stick, no forward
pass is needed to observe the weights, so ``apply`` works with or without a network helper
(the helper, if given, is not called).
"""

from __future__ import annotations

from typing import Any

from gscore import PTQAlgorithm, PTQConfig, hookimpl
from gscore.config import OutliersSuppressionType, PrecisionRecovery, QuantDtype, QuantGranularity
from gscore.errors import ConfigError

GSCORE_API_VERSION = 1


class RoundToNearest(PTQAlgorithm):
    """Round-to-nearest A16W8: int8 weights, symmetric, per output channel; no data needed."""

    config_cls = PTQConfig
    # weight-only int8 per channel, no data: int4, per-group, A8W8, SmoothQuant, GPTQ, clipping are in 'ptq'
    supported_options = {
        "weight_quant_dtype": (QuantDtype.INT8, None),
        "weight_quant_granularity": (QuantGranularity.PER_CHANNEL,),
        "act_quant_dtype": (None,),
        "precision_recovery": (PrecisionRecovery.NONE,),
        "outliers_suppression": (OutliersSuppressionType.NONE,),
        "weight_clip": (False,),
    }
    known_algo_args = frozenset()

    def validate_config(self) -> None:
        cfg = self.config
        if cfg.kvcache_quant_dtype is not None and cfg.kvcache_quant_granularity.value != "per_token":
            raise ConfigError("rtn quantizes the KV cache dynamically only (kvcache_quant_granularity=per_token); static per-channel KV scales need calibration data: use 'ptq'")

    def calibrate(self, network: Any, network_helper: Any = None, datasets: Any = None) -> Any:
        from gscore.nn.passes import calibrate_weights

        self._check_kv_cache(network)
        self.layers = calibrate_weights(network, self.config.opname_blacklist) if self.config.weight_quant_dtype else []
        self._quantize_kv_cache(network)
        return network

    def _check_kv_cache(self, network: Any) -> None:
        from gscore.nn.passes import require_kv_caches

        if self.config.kvcache_quant_dtype is not None:
            require_kv_caches(network, "rtn")

    def _quantize_kv_cache(self, network: Any) -> None:
        from gscore.nn.passes import dynamic_kv_caches

        if self.config.kvcache_quant_dtype is not None:
            dynamic_kv_caches(network)

    def quantize(self, network: Any) -> Any:
        from gscore.nn.passes import quantize_network

        self.layers = quantize_network(network) if self.config.weight_quant_dtype else []
        return network

    def deploy(self, network: Any) -> Any:
        from gscore.nn.passes import deploy_weights

        self._check_kv_cache(network)
        self.layers = deploy_weights(network, self.config.opname_blacklist) if self.config.weight_quant_dtype else []
        self._quantize_kv_cache(network)
        return network


@hookimpl
def gscore_register_algorithms(registry: Any) -> None:
    registry.add(RoundToNearest, name="rtn", aliases=["round-to-nearest", "RoundToNearest", "a16w8-rtn"])
