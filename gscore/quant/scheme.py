"""What a quantizer is asked to do: bit width, integer range and how scales are shared.

A :class:`QuantScheme` is pure configuration. It is validated once, when built, so that
the numeric code in :mod:`gscore.quant.params` and :mod:`gscore.quant.core` can trust it.
Only what depends on a tensor's shape (whether ``axis`` exists, whether ``group_size``
divides the last axis) is checked later, in :mod:`gscore.quant.layout`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from gscore.errors import ConfigError

_ALLOWED_BITS = tuple(range(2, 9))  # int8 storage holds at most 8 bits; 1 bit has no zero+sign


class Granularity(str, Enum):
    """Which elements share one scale (and zero point).

    PER_TENSOR: the whole tensor. PER_CHANNEL: every index along ``QuantScheme.axis``.
    PER_TOKEN: every row of the last axis (activations shaped ``[..., hidden]``).
    PER_GROUP: every run of ``group_size`` consecutive elements along the last axis.
    """

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"
    PER_GROUP = "per_group"
    PER_TOKEN = "per_token"


def _allowed(values: Iterable[object]) -> str:
    return ", ".join(repr(v) for v in values)


def qrange(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a ``bits``-wide code.

    Signed codes span ``[-2**(bits-1), 2**(bits-1) - 1]``, unsigned ones ``[0, 2**bits - 1]``.
    ``narrow`` raises ``qmin`` by one (int8 becomes ``[-127, 127]``) so that a signed range is
    symmetric around zero, which some kernels require.

    Raises ConfigError (a ValueError) unless ``bits`` is an int in 2..8.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in _ALLOWED_BITS:
        raise ConfigError(f"bits must be an int in 2..8 (allowed: {_allowed(_ALLOWED_BITS)}), got {bits!r}")
    if signed:
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        qmin, qmax = 0, (1 << bits) - 1
    return qmin + int(bool(narrow)), qmax


@dataclass(frozen=True)
class QuantScheme:
    """How to quantize one tensor.

    Attributes:
        bits: code width, 2..8 (the codes are stored in int8/uint8).
        symmetric: zero point fixed at 0 and scale from ``max(|min|, |max|)``; otherwise the
            scale spans ``[min, max]`` (widened to include 0) and a zero point shifts it.
        signed: signed codes (``[-2**(b-1), 2**(b-1)-1]``) or unsigned (``[0, 2**b-1]``).
        narrow: drop the most negative code (``qmin += 1``).
        granularity: which elements share a scale; a :class:`Granularity` or its string value.
        axis: PER_CHANNEL only: the axis whose every index keeps its own scale (0 = output
            channel of an ``[oc, ic]`` weight); negative values count from the end. The other
            granularities do not read it (PER_TOKEN and PER_GROUP always work on the last axis).
        group_size: PER_GROUP only, and then required: how many consecutive elements of the
            last axis share a scale; it must divide that axis (checked per tensor). Must be 0
            for every other granularity, so that a forgotten granularity is not silently ignored.

    Raises ConfigError (a ValueError) naming the allowed values when a field is invalid,
    including symmetric + unsigned + narrow, whose range ``[1, qmax]`` cannot hold the zero
    point 0, so zero would not be representable.
    """

    bits: int = 8
    symmetric: bool = True
    signed: bool = True
    narrow: bool = False
    granularity: Granularity = Granularity.PER_CHANNEL
    axis: int = 0
    group_size: int = 0

    def __post_init__(self) -> None:
        qrange(self.bits, self.signed, self.narrow)  # validates bits
        try:
            granularity = Granularity(self.granularity)
        except ValueError:
            allowed = _allowed(g.value for g in Granularity)
            message = f"granularity must be one of {allowed}, got {self.granularity!r}"
            raise ConfigError(message) from None
        object.__setattr__(self, "granularity", granularity)
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ConfigError(f"axis must be an int (negative counts from the end), got {self.axis!r}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ConfigError(f"group_size must be an int, got {self.group_size!r}")
        if granularity is Granularity.PER_GROUP and self.group_size <= 0:
            raise ConfigError(
                f"granularity 'per_group' needs group_size > 0 (a divisor of the last axis), got {self.group_size}"
            )
        if granularity is not Granularity.PER_GROUP and self.group_size != 0:
            raise ConfigError(
                f"group_size is only allowed with granularity 'per_group'; use group_size=0 with "
                f"{granularity.value!r}, got group_size={self.group_size}"
            )
        if self.symmetric and not self.signed and self.narrow:
            raise ConfigError(
                "symmetric unsigned schemes need narrow=False: their zero point is 0, and narrow "
                "would make the range [1, qmax] so zero could not be represented"
            )

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        return qrange(self.bits, self.signed, self.narrow)[0]

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return qrange(self.bits, self.signed, self.narrow)[1]
