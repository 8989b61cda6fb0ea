"""SLBConfig: the weight search and its temperature schedule, validated strictly.

=====================  =======  ==========================================================
field                  default  meaning
=====================  =======  ==========================================================
weight_bits            1        1, 2 or 4: weights take 2, 4 or 16 values per channel
act_bits               None     8 for 8-bit activations (EMA-observed), None for float
include_dense          False    also search nn.Dense weights (Conv2d always)
init_from_pretrained   True     start the search at the float weights; False re-initialises
                                randomly as Golden Stick does (its known issue 14)
t_start                1.0      temperature (multiplies the logits) at the start
t_end                  100.0    temperature reached at ``t_end_time``
t_start_time           0.2      fraction of training when the temperature starts to rise
t_end_time             0.6      fraction of training from which weights are hard (argmax)
ema_decay              0.999    activation range EMA (act_bits=8 only)
act_quant_delay        0        training steps before activations are fake-quantized
opname_blacklist       []       substrings of layer names to leave in float
=====================  =======  ==========================================================

Golden Stick raises the temperature by a factor (1.2) per epoch; here it rises geometrically
from ``t_start`` to ``t_end`` between the two fractions of the run, per step, so the schedule
does not depend on how many epochs a run has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gscore.config import VersionedConfig, check_bool, check_names, check_number
from gscore.errors import ConfigError
from gscore.quant import QuantScheme

WEIGHT_BITS = (1, 2, 4)
ACT_BITS = (8, None)


@dataclass
class SLBConfig(VersionedConfig):
    """Settings of SLB weight search (table in the module docstring).

    Immutable once built; derive variants with ``dataclasses.replace``."""

    weight_bits: int = 1
    act_bits: int | None = None
    include_dense: bool = False
    init_from_pretrained: bool = True
    t_start: float = 1.0
    t_end: float = 100.0
    t_start_time: float = 0.2
    t_end_time: float = 0.6
    ema_decay: float = 0.999
    act_quant_delay: int = 0
    opname_blacklist: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.weight_bits, bool) or self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(f"weight_bits: {self.weight_bits!r} is not supported; allowed: 1, 2, 4")
        if isinstance(self.act_bits, bool) or self.act_bits not in ACT_BITS:
            raise ConfigError(f"act_bits: {self.act_bits!r} is not supported; allowed: 8, None (float activations)")
        for name in ("include_dense", "init_from_pretrained"):
            check_bool(getattr(self, name), name)
        self.t_start = check_number(self.t_start, "t_start", 0.0, low_open=True)
        self.t_end = check_number(self.t_end, "t_end", self.t_start)
        self.t_start_time = check_number(self.t_start_time, "t_start_time", 0.0, 1.0)
        self.t_end_time = check_number(self.t_end_time, "t_end_time", self.t_start_time, 1.0)
        self.ema_decay = check_number(self.ema_decay, "ema_decay", 0.0, 1.0, high_open=True)
        self.act_quant_delay = check_number(self.act_quant_delay, "act_quant_delay", 0, integer=True)
        self.opname_blacklist = check_names(self.opname_blacklist, "opname_blacklist", "substrings of layer names")
        if self.act_bits is None:
            self.warn_without_effect(("ema_decay", "act_quant_delay"), "act_bits is None, so activations are not quantized")

    def act_scheme(self) -> QuantScheme | None:
        """Unsigned per-tensor codes with a zero point for 8-bit activations, or None."""
        if self.act_bits is None:
            return None
        return QuantScheme(bits=self.act_bits, symmetric=False, signed=False, granularity="per_tensor")
