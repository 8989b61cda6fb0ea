"""What happens to each layer: the global PTQConfig, overridden per layer by regex policies."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Mapping

from gscore.config import OutliersSuppressionType, PrecisionRecovery, PTQConfig, QuantGranularity
from gscore.errors import ConfigError, GscoreWarning
from gscore.nn.passes import WeightSpec
from gscore.nn.walk import matches_blacklist, warn_unmatched_blacklist


@dataclass(frozen=True)
class LinearPolicy:
    """One linear layer's treatment: weight spec, input quantization, outlier suppression
    (``smooth``: SmoothQuant, ``awq``: AWQ scales), weight clipping search and GPTQ."""

    weight: WeightSpec
    act: str | None  # "static" (per tensor, calibrated) | "dynamic" (per token) | None
    smooth: bool
    awq: bool = False
    clip: bool = False
    gptq: bool = False

    @property
    def scales_input(self) -> bool:
        """True when the layer's input channels get migration scales (SmoothQuant or AWQ)."""
        return self.smooth or self.awq

    @property
    def needs_input_stats(self) -> bool:
        return self.act == "static" or self.scales_input or self.clip or self.gptq


def linear_policy(cfg: PTQConfig) -> LinearPolicy | None:
    """The policy a config gives a linear layer; None keeps the layer in float."""
    if cfg.weight_quant_dtype is None:
        return None
    grouped = cfg.weight_quant_granularity is QuantGranularity.PER_GROUP
    # per-group weights are asymmetric (a zero point per group costs little and helps int4 most)
    weight = WeightSpec(bits=cfg.weight_quant_dtype.bits, group_size=cfg.group_size if grouped else 0, symmetric=not grouped)
    act = None
    if cfg.act_quant_dtype is not None:
        act = "dynamic" if cfg.act_quant_granularity is QuantGranularity.PER_TOKEN else "static"
    return LinearPolicy(
        weight=weight,
        act=act,
        smooth=cfg.outliers_suppression is OutliersSuppressionType.SMOOTH,
        awq=cfg.outliers_suppression is OutliersSuppressionType.AWQ,
        clip=cfg.weight_clip,
        gptq=cfg.precision_recovery is PrecisionRecovery.GPTQ,
    )


class PolicyTable:
    """Resolves a layer's policy: blacklist first, then the first matching regex, then the global config."""

    def __init__(self, config: PTQConfig, layer_policies: Mapping[str, PTQConfig] | None = None) -> None:
        self.config = config
        self.rules: list[tuple[re.Pattern[str], LinearPolicy | None]] = []
        if layer_policies is not None and not isinstance(layer_policies, Mapping):
            raise ConfigError(f"layer_policies must be a mapping of regex -> PTQConfig (e.g. {{r'mlp\\.down_proj$': PTQConfig()}}), got {type(layer_policies).__name__}")
        for pattern, override in (layer_policies or {}).items():
            if not isinstance(pattern, str):
                raise ConfigError(f"layer_policies keys must be regular expressions (str), got {pattern!r}")
            if not isinstance(override, PTQConfig):
                raise ConfigError(f"layer_policies[{pattern!r}] must be a PTQConfig, got {type(override).__name__}")
            if override.mode is not config.mode:
                raise ConfigError(f"layer_policies[{pattern!r}] has mode {override.mode.value}, the algorithm runs {config.mode.value}")
            if override.kvcache_quant_dtype is not None:
                raise ConfigError(f"layer_policies[{pattern!r}]: KV-cache quantization is set for the whole model, not per layer")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"layer_policies key {pattern!r} is not a valid regular expression: {exc}") from exc
            self.rules.append((compiled, linear_policy(override)))
        self.default = linear_policy(config)

    def warn_unmatched(self, layer_names: list[str]) -> None:
        """Warn (GscoreWarning) about each policy regex and blacklist entry that matches none of
        ``layer_names``: a typo there silently changes nothing."""
        warn_unmatched_blacklist(layer_names, self.config.opname_blacklist)
        unused = [p.pattern for p, _ in self.rules if not any(p.search(n) for n in layer_names)]
        if unused:
            warnings.warn(f"layer_policies patterns {unused} match no linear layer, so they have no effect; layer names look like {layer_names[:3]}", GscoreWarning, stacklevel=4)

    def for_layer(self, name: str) -> LinearPolicy | None:
        if matches_blacklist(name, self.config.opname_blacklist):
            return None
        for pattern, policy in self.rules:
            if pattern.search(name):
                return policy
        return self.default
