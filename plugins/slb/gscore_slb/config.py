"""SLBConfig: the weight search and its temperature schedule, validated strictly.

=====================  =======  ==========================================================
field                  default  meaning
=====================  =======  ==========================================================
weight_bits            1        1, 2 or 4: weights take 2, 4 or 16 values per channel
act_bits               None     8 for 8-bit activations (EMA-observed), None for float
include_dense          True     also search nn.Dense weights (Conv2d always); False warns
                                with the share of weights left in float
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

from gscore.config import VersionedConfig
from gscore.errors import ConfigError
from gscore.quant import QuantScheme

WEIGHT_BITS = (1, 2, 4)
ACT_BITS = (8, None)


def _number(value: object, name: str, low: float, high: float | None, low_open: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad:
        bad = value <= low if low_open else value < low
        bad = bad or (high is not None and value > high)
    if bad:
        interval = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


@dataclass
class SLBConfig(VersionedConfig):
    """Settings of SLB weight search (table in the module docstring)."""

    weight_bits: int = 1
    act_bits: int | None = None
    include_dense: bool = True
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
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self.t_start = _number(self.t_start, "t_start", 0.0, None, low_open=True)
        self.t_end = _number(self.t_end, "t_end", self.t_start, None)
        self.t_start_time = _number(self.t_start_time, "t_start_time", 0.0, 1.0)
        self.t_end_time = _number(self.t_end_time, "t_end_time", self.t_start_time, 1.0)
        self.ema_decay = _number(self.ema_decay, "ema_decay", 0.0, 1.0)
        if self.ema_decay >= 1.0:
            raise ConfigError(f"ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        if isinstance(self.act_quant_delay, bool) or not isinstance(self.act_quant_delay, int) or self.act_quant_delay < 0:
            raise ConfigError(f"act_quant_delay must be an int >= 0 (training steps), got {self.act_quant_delay!r}")
        if not isinstance(self.opname_blacklist, (list, tuple)) or not all(isinstance(s, str) for s in self.opname_blacklist):
            raise ConfigError(f"opname_blacklist must be a list of strings (substrings of layer names), got {self.opname_blacklist!r}")
        self.opname_blacklist = list(self.opname_blacklist)

    def act_scheme(self) -> QuantScheme | None:
        """Unsigned per-tensor codes with a zero point for 8-bit activations, or None."""
        if self.act_bits is None:
            return None
        return QuantScheme(bits=self.act_bits, symmetric=False, signed=False, granularity="per_tensor")
