"""PTQConfig and its enums: the Golden Stick field set, validated strictly.

Differences from the reference, on purpose:

* An unknown enum string raises :class:`~gscore.errors.ConfigError` listing the valid values
  (the reference maps unknown strings to NONE, so a typo silently disables an algorithm).
* ``BackendTarget.CPU`` exists and is the default: this toolkit runs on ordinary CPUs.
  ``ASCEND`` is accepted so Golden Stick programs port unchanged; where no Ascend device is
  present the portable CPU kernels run.
* Dtypes are accepted as MindSpore dtypes (``ms.int8``, ``ms.qint4x2``), as strings
  (``"int8"``, ``"int4"``) or as :class:`QuantDtype`, and are stored as :class:`QuantDtype`
  so that reading a config never needs MindSpore.
* Configs round-trip through a versioned dict and YAML form (:meth:`PTQConfig.to_dict`).
* Configs are immutable once built and validated (assigning ``cfg.mode`` later would skip the
  validation of the combination); ``dataclasses.replace(cfg, mode=...)`` derives a new one.
  Non-finite numbers are refused everywhere, ``algo_args`` included.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

import numpy as np
import yaml

from gscore.errors import ConfigError, ConfigFrozenError, GscoreWarning
from gscore.quant import Granularity

CONFIG_FORMAT_VERSION = 1

QuantGranularity = Granularity

E = TypeVar("E", bound=enum.Enum)


class StrictEnum(str, enum.Enum):
    """A string enum whose :meth:`from_str` raises on unknown input and lists the valid values."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, value: Any) -> Any:
        return coerce_enum(cls, value, cls.__name__)


def coerce_enum(cls: type[E], value: Any, what: str) -> E:
    """``value`` as a member of ``cls``: a member, its value or its name (case-insensitive)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        wanted = value.strip().lower()
        for member in cls:
            if wanted in (str(member.value).lower(), member.name.lower()):
                return member
    valid = ", ".join(repr(m.value) for m in cls)
    raise ConfigError(f"{what}: {value!r} is not valid; choose one of {valid}")


class PTQMode(StrictEnum):
    """QUANTIZE calibrates and quantizes; DEPLOY only rebuilds the quantized structure."""

    QUANTIZE = "quantize"
    DEPLOY = "deploy"


class BackendTarget(StrictEnum):
    """Where the quantized network will run (kernel choice); CPU is the portable path."""

    NONE = "none"
    CPU = "cpu"
    ASCEND = "ascend"


class OutliersSuppressionType(StrictEnum):
    """How activation outliers are moved into weights before quantization.

    ``ROTATION`` is gscore's extension (not in Golden Stick): a QuaRot-style orthogonal
    rotation of the residual stream fused into the weights, plus an online Hadamard rotation
    of the ``down_proj`` input; it needs a network helper that describes the residual stream.
    """

    NONE = "none"
    SMOOTH = "smooth"
    AWQ = "awq"
    ROTATION = "rotation"
    OUTLIER_SUPPRESSION_PLUS = "outlier-suppression+"
    OUTLIER_SUPPRESSION_LITE = "outlier-suppression-lite"


class PrecisionRecovery(StrictEnum):
    """Error-compensating weight quantization."""

    NONE = "none"
    GPTQ = "gptq"


class QuantDtype(StrictEnum):
    """The integer types gscore quantizes to; int4 is stored packed two per int8."""

    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        return 8 if self is QuantDtype.INT8 else 4


_DTYPE_ALIASES = {"int8": QuantDtype.INT8, "int4": QuantDtype.INT4, "qint4x2": QuantDtype.INT4}


def coerce_dtype(value: Any, field_name: str, allowed: tuple[QuantDtype | None, ...]) -> QuantDtype | None:
    """Normalise a dtype given as MindSpore dtype, string, :class:`QuantDtype` or ``None``."""
    if value is None or isinstance(value, QuantDtype):
        dtype = value
    else:
        dtype = _DTYPE_ALIASES.get(str(value).strip().lower())
        if dtype is None:
            dtype = _invalid_dtype(value, field_name, allowed)
    if dtype not in allowed:
        _invalid_dtype(value, field_name, allowed)
    return dtype


def _invalid_dtype(value: Any, field_name: str, allowed: tuple[QuantDtype | None, ...]) -> Any:
    names = ", ".join("None" if a is None else f"{a.value} (ms.{'qint4x2' if a is QuantDtype.INT4 else 'int8'})" for a in allowed)
    raise ConfigError(f"{field_name}: {value!r} is not supported; allowed: {names}")


ALLOWED_GROUP_SIZES = (64, 128, 256)


class FrozenList(list):
    """A list that refuses changes: list-valued fields of a frozen config.

    Still a ``list`` (``isinstance`` checks, ``==`` with lists, JSON), so readers need not care.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigFrozenError("this list belongs to a config, which is immutable; derive a changed config with dataclasses.replace(config, field=new_value)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (FrozenList, (list(self),))


class FrozenDict(dict):
    """A dict that refuses changes: dict-valued fields of a frozen config (``algo_args``)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigFrozenError("this dict belongs to a config, which is immutable; derive a changed config with dataclasses.replace(config, field=new_value)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (FrozenDict, (dict(self),))


def freeze(value: Any) -> Any:
    """``value`` with every list and dict inside it made immutable (tuples become frozen lists)."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain lists, dicts and enum values again (what YAML and JSON writers take)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Any:
    """``value`` as a finite float (or an int if ``integer``) within the bounds, else ConfigError.

    Booleans, NaN and infinities are refused; numpy scalars are accepted and converted.
    """
    kind = numbers.Integral if integer else numbers.Real
    is_number = isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
    ok = is_number and math.isfinite(value)
    if ok:
        ok = (low is None or (value > low if low_open else value >= low)) and (high is None or (value < high if high_open else value <= high))
    if not ok:
        if low is not None and high is not None:
            where = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            where = f"{'>' if low_open else '>='} {low:g}"
        else:
            where = f"{'<' if high_open else '<='} {high:g}" if high is not None else ""
        what = "an int" if integer else ("a finite number" if is_number and not math.isfinite(value) else "a number")
        raise ConfigError(f"{name} must be {what} {where}, got {value!r}".replace("  ", " "))
    return int(value) if integer else float(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is True or False, else ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_names(value: Any, name: str, what: str, allow_empty_strings: bool = True) -> FrozenList:
    """A list (or tuple) of strings as a frozen list, else ConfigError saying what the strings are."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and (allow_empty_strings or s) for s in value):
        kind = "strings" if allow_empty_strings else "non-empty strings"
        raise ConfigError(f"{name} must be a list of {kind} ({what}), got {value!r}")
    return FrozenList(value)


def _plain_data(value: Any, where: str) -> None:
    """Refuse what a config cannot save: anything but None, bools, finite numbers, strings,
    and lists/dicts (string keys) of them."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _plain_data(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where} keys must be strings, got {key!r}")
            _plain_data(item, f"{where}[{key!r}]")
        return
    raise ConfigError(f"{where} must be plain data (None, bool, number, string, or lists/dicts of them) so the config can be saved; got {type(value).__name__}")


class VersionedConfig:
    """Mixin for config dataclasses: immutable after construction, with a versioned dict /
    YAML form that refuses unknown input.

    Subclasses are dataclasses whose ``__post_init__`` validates (and may normalise fields by
    assignment); once the outermost ``__post_init__`` returns, the config is frozen: assigning
    a field raises :class:`~gscore.errors.ConfigFrozenError`, and list/dict fields should be
    stored frozen (:func:`freeze`). Derive a changed config with ``dataclasses.replace``, which
    validates again. Enums are written as their string values and read back through that
    validation.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        post_init = cls.__dict__.get("__post_init__")
        if post_init is not None:
            cls.__post_init__ = _freezing(post_init)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise ConfigFrozenError(
                f"{type(self).__name__} is immutable once built (it was validated as a whole); "
                f"derive a changed one with dataclasses.replace(config, {name}=...)"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise ConfigFrozenError(f"{type(self).__name__} is immutable; its field {name!r} cannot be deleted")

    def changed_fields(self, names: tuple[str, ...]) -> list[str]:
        """Those of ``names`` (in field order) set to something other than their default."""
        changed = []
        for f in fields(self):
            if f.name in names:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if getattr(self, f.name) != default:
                    changed.append(f.name)
        return changed

    def warn_without_effect(self, names: tuple[str, ...], reason: str) -> None:
        """Warn (GscoreWarning) about each of ``names`` set to a non-default value: it does nothing because ``reason``."""
        for name in self.changed_fields(names):
            warnings.warn(f"{type(self).__name__}.{name}={thaw(getattr(self, name))!r} has no effect: {reason}", GscoreWarning, stacklevel=5)

    def to_dict(self) -> dict[str, Any]:
        """A plain, versioned dict (enums and dtypes as strings) that :meth:`from_dict` reads back."""
        out: dict[str, Any] = {"type": type(self).__name__, "version": CONFIG_FORMAT_VERSION}
        for f in fields(self):
            out[f.name] = thaw(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build a config from :meth:`to_dict` output; unknown keys or versions are errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}.from_dict needs a mapping of field names to values (the to_dict form), got {type(data).__name__}")
        data = dict(data)
        kind = data.pop("type", cls.__name__)
        version = data.pop("version", CONFIG_FORMAT_VERSION)
        if kind != cls.__name__:
            raise ConfigError(f"this is a {kind!r} description, not a {cls.__name__}")
        if version != CONFIG_FORMAT_VERSION:
            raise ConfigError(f"config format version {version!r} is not supported; this gscore reads version {CONFIG_FORMAT_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def to_yaml(self) -> str:
        """The :meth:`to_dict` form as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Any:
        """Read the YAML written by :meth:`to_yaml`."""
        if not isinstance(text, (str, bytes)):
            raise ConfigError(f"{cls.__name__}.from_yaml needs YAML text, got {type(text).__name__}")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{cls.__name__}: the text is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"a {cls.__name__} YAML document must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data)


def _freezing(post_init: Any) -> Any:
    """``post_init`` followed, at the outermost call, by freezing the config."""

    @functools.wraps(post_init)
    def wrapper(self: Any, *args: Any) -> None:
        depth = self.__dict__.get("_init_depth", 0)
        object.__setattr__(self, "_init_depth", depth + 1)
        try:
            post_init(self, *args)
        finally:
            object.__setattr__(self, "_init_depth", depth)
        if depth == 0:
            object.__delattr__(self, "_init_depth")
            object.__setattr__(self, "_frozen", True)

    return wrapper


@dataclass
class PTQConfig(VersionedConfig):
    """What to quantize, how, and in which mode (fields as in Golden Stick's PTQConfig).

    ``opname_blacklist`` entries are substrings of full cell names; a match leaves the layer
    in float. ``algo_args`` holds algorithm knobs (e.g. ``{"alpha": 0.5}`` for SmoothQuant).
    """

    mode: PTQMode = PTQMode.QUANTIZE
    backend: BackendTarget = BackendTarget.CPU
    opname_blacklist: list[str] = field(default_factory=list)
    algo_args: dict[str, Any] = field(default_factory=dict)
    weight_quant_dtype: QuantDtype | None = QuantDtype.INT8
    kvcache_quant_dtype: QuantDtype | None = None
    act_quant_dtype: QuantDtype | None = None
    precision_recovery: PrecisionRecovery = PrecisionRecovery.NONE
    outliers_suppression: OutliersSuppressionType = OutliersSuppressionType.NONE
    weight_quant_granularity: Granularity = Granularity.PER_CHANNEL
    kvcache_quant_granularity: Granularity = Granularity.PER_CHANNEL
    act_quant_granularity: Granularity = Granularity.PER_TENSOR
    group_size: int = 0
    weight_clip: bool = False

    def __post_init__(self) -> None:
        self.mode = coerce_enum(PTQMode, self.mode, "mode")
        self.backend = coerce_enum(BackendTarget, self.backend, "backend")
        self.precision_recovery = coerce_enum(PrecisionRecovery, self.precision_recovery, "precision_recovery")
        self.outliers_suppression = coerce_enum(OutliersSuppressionType, self.outliers_suppression, "outliers_suppression")
        self.weight_quant_dtype = coerce_dtype(self.weight_quant_dtype, "weight_quant_dtype", (QuantDtype.INT8, QuantDtype.INT4, None))
        self.kvcache_quant_dtype = coerce_dtype(self.kvcache_quant_dtype, "kvcache_quant_dtype", (QuantDtype.INT8, None))
        self.act_quant_dtype = coerce_dtype(self.act_quant_dtype, "act_quant_dtype", (QuantDtype.INT8, None))
        self.weight_quant_granularity = self._granularity("weight_quant_granularity", (Granularity.PER_CHANNEL, Granularity.PER_GROUP))
        self.kvcache_quant_granularity = self._granularity("kvcache_quant_granularity", (Granularity.PER_CHANNEL, Granularity.PER_TOKEN))
        self.act_quant_granularity = self._granularity("act_quant_granularity", (Granularity.PER_TENSOR, Granularity.PER_TOKEN))
        self._check_types()
        self._check_combinations()

    def _granularity(self, name: str, allowed: tuple[Granularity, ...]) -> Granularity:
        value = coerce_enum(Granularity, getattr(self, name), name)
        if value not in allowed:
            raise ConfigError(f"{name}: {value.value!r} is not allowed here; choose one of {', '.join(repr(a.value) for a in allowed)}")
        return value

    def _check_types(self) -> None:
        self.opname_blacklist = check_names(self.opname_blacklist, "opname_blacklist", "substrings of cell names")
        if dataclasses.is_dataclass(self.algo_args) and not isinstance(self.algo_args, type):
            self.algo_args = dataclasses.asdict(self.algo_args)
        if not isinstance(self.algo_args, Mapping):
            raise ConfigError(f"algo_args must be a dict or a dataclass instance, got {type(self.algo_args).__name__}")
        _plain_data(self.algo_args, "algo_args")
        self.algo_args = freeze(self.algo_args)
        if not isinstance(self.group_size, int) or isinstance(self.group_size, bool):
            raise ConfigError(f"group_size must be an int, got {self.group_size!r}")
        if not isinstance(self.weight_clip, bool):
            raise ConfigError(f"weight_clip must be a bool, got {self.weight_clip!r}")

    def _check_combinations(self) -> None:
        int8, int4 = QuantDtype.INT8, QuantDtype.INT4
        if self.weight_quant_dtype is None and self.act_quant_dtype is None and self.kvcache_quant_dtype is None:
            raise ConfigError("nothing to quantize: set weight_quant_dtype, act_quant_dtype or kvcache_quant_dtype")
        if self.act_quant_granularity is Granularity.PER_TOKEN and (self.act_quant_dtype is not int8 or self.weight_quant_dtype is None):
            raise ConfigError("act_quant_granularity=per_token (dynamic activations) needs act_quant_dtype=int8 and int8 or int4 weights")
        if self.weight_quant_dtype is int8 and self.act_quant_dtype is int8 and self.weight_quant_granularity is not Granularity.PER_CHANNEL:
            raise ConfigError("A8W8 needs weight_quant_granularity=per_channel (the int8 matmul rescales by one scale per output channel)")
        if self.kvcache_quant_granularity is Granularity.PER_TOKEN and self.kvcache_quant_dtype is not int8:
            raise ConfigError("kvcache_quant_granularity=per_token needs kvcache_quant_dtype=int8")
        if self.weight_quant_granularity is Granularity.PER_GROUP:
            if self.group_size not in ALLOWED_GROUP_SIZES:
                raise ConfigError(f"weight_quant_granularity=per_group needs group_size in {ALLOWED_GROUP_SIZES}, got {self.group_size}")
        elif self.group_size != 0:
            raise ConfigError(f"group_size={self.group_size} only applies to weight_quant_granularity=per_group; leave it 0")
        if self.weight_quant_dtype is int4 and self.act_quant_dtype is int8 and self.precision_recovery is not PrecisionRecovery.GPTQ:
            raise ConfigError("A8W4 (int4 weights with int8 activations) needs precision_recovery=gptq")
        if self.outliers_suppression is OutliersSuppressionType.SMOOTH and self.act_quant_dtype is None:
            raise ConfigError("outliers_suppression=smooth (SmoothQuant) moves activation outliers into weights; it needs act_quant_dtype=int8")
        if self.outliers_suppression is OutliersSuppressionType.AWQ and self.weight_quant_dtype is None:
            raise ConfigError("outliers_suppression=awq protects salient weight channels; it needs weight_quant_dtype int8 or int4")
        if self.precision_recovery is PrecisionRecovery.GPTQ and self.weight_quant_dtype is None:
            raise ConfigError("precision_recovery=gptq quantizes weights; it needs weight_quant_dtype int8 or int4")
        if self.weight_clip and self.weight_quant_dtype is None:
            raise ConfigError("weight_clip searches weight clipping ranges; it needs weight_quant_dtype int8 or int4")
        if self.weight_quant_dtype is None:
            self.warn_without_effect(
                ("weight_quant_granularity", "group_size"),
                "weight_quant_dtype is None, so no weight is quantized",
            )
