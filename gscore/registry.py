"""Name -> algorithm class and name -> model adapter, filled by the ``gscore_register_algorithms``
and ``gscore_register_models`` hooks.

Lookup ignores case and separators, so ``"RoundToNearest"``, ``"round_to_nearest"``,
``"ROUND-TO-NEAREST"`` and ``"round to nearest"`` meet (:func:`lookup_key`). A plugin registers
through a :class:`PluginRegistrar` that stages its entries; the plugin host commits them all
at once (:meth:`AlgorithmRegistry.commit`), so a plugin that raises half-way leaves nothing
behind. A name claimed by two plugins is recorded as a conflict: asking for it raises an
error naming both distributions, while every other name keeps working. (The host protects
first-party names from third-party plugins before committing; see :mod:`gscore.plugins`.)
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

from gscore.errors import AlgorithmConflictError, ModelConflictError, PluginLoadError, RegistrationError, UnknownAlgorithmError, UnknownModelError


def normalise_name(name: str) -> str:
    """Display form of a name: lower case, CamelCase split, ``_``/spaces/dots -> ``-``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an algorithm name must be a non-empty string, got {name!r}")
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name.strip())
    return re.sub(r"[\s_.\-]+", "-", spaced).lower()


def lookup_key(name: str) -> str:
    """The key names are looked up by: lower case with every separator removed.

    Separators are dropped rather than inserted at case changes, so the key of a name does
    not depend on how it is capitalised (``A16W8-RTN`` and ``a16w8-rtn``, ``PrunerKFCompressAlgo``
    and ``PrunerKfCompressAlgo`` meet).
    """
    return normalise_name(name).replace("-", "")


@dataclass(frozen=True)
class PluginSource:
    """Where a registration came from: the plugin's name and its distribution."""

    plugin: str
    distribution: str = "?"
    version: str = "?"

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin!r})"


def _is_algorithm_class(cls: object) -> bool:
    from gscore.algorithm import Algorithm

    return isinstance(cls, type) and issubclass(cls, Algorithm)


def _resolve(target: Any, what: str, source: PluginSource, check: Callable[[Any], bool], wanted: str) -> Any:
    """``target`` itself, or the object a ``"module:attr"`` path names, checked by ``check``.

    A path that does not import, or names the wrong kind of object, raises
    :class:`~gscore.errors.PluginLoadError` naming the plugin."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a plugin module may raise anything, SystemExit included
        raise PluginLoadError(f"{what} of {source} points at {target!r}, which does not import: {type(exc).__name__}: {exc}") from exc
    if not check(value):
        raise PluginLoadError(f"{what} of {source}: {target!r} is not {wanted}")
    return value


def _check_path(target: Any, what: str) -> None:
    if isinstance(target, str) and not re.fullmatch(r"[\w.]+:\w+", target):
        raise RegistrationError(f"{what} must be an object or a 'module:attr' path, got {target!r}")


@dataclass(frozen=True)
class AlgorithmInfo:
    """One registered algorithm, as ``gscore.algorithms()`` and ``gscore list`` show it.

    ``target`` is the class, or ``"module:Class"`` imported on first access of :attr:`cls`:
    a plugin registering by path keeps listing free of MindSpore imports.
    """

    name: str
    target: type | str
    aliases: tuple[str, ...]
    source: PluginSource
    given_summary: str = ""
    _resolved: list[type] = field(default_factory=list, compare=False, repr=False)

    @property
    def keys(self) -> set[str]:
        """Every lookup key of this algorithm (its name and aliases)."""
        return {lookup_key(n) for n in (self.name, *self.aliases)}

    @property
    def cls(self) -> type:
        """The algorithm class (imported now if registered by path).

        A path that does not import, or names something that is not a ``gscore.Algorithm``
        subclass, raises :class:`~gscore.errors.PluginLoadError` naming the plugin.
        """
        if not self._resolved:
            self._resolved.append(_resolve(self.target, f"algorithm {self.name!r}", self.source, _is_algorithm_class, "a gscore.Algorithm subclass"))
        return self._resolved[0]

    def is_class(self, cls: type) -> bool:
        """True if this entry registered ``cls`` (compared by path without importing a path target)."""
        if isinstance(self.target, type):
            return self.target is cls
        return self.target == f"{cls.__module__}:{cls.__qualname__}"

    @property
    def summary(self) -> str:
        """The summary given at registration, else the first line of the class docstring."""
        if self.given_summary or not isinstance(self.target, type):
            return self.given_summary
        doc = (self.target.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass(frozen=True)
class ModelInfo:
    """One registered model adapter, as ``gscore.model()`` and ``gscore models`` show it.

    ``helper`` is the adapter's :class:`~gscore.calib.NetworkHelper` subclass; ``loader`` is
    ``loader(path, **options) -> (network, helper)`` (from a local checkpoint or folder) or None
    when the adapter drives networks the user builds. Both may be ``"module:attr"`` paths, imported on
    first use, so listing adapters imports no MindSpore.
    """

    name: str
    helper_target: type | str
    loader_target: Callable[..., Any] | str | None
    aliases: tuple[str, ...]
    source: PluginSource
    summary: str = ""

    @property
    def keys(self) -> set[str]:
        """Every lookup key of this adapter (its name and aliases)."""
        return {lookup_key(n) for n in (self.name, *self.aliases)}

    @property
    def helper_class(self) -> type:
        """The adapter's NetworkHelper subclass (imported now if registered by path)."""
        from gscore.calib.network_helper import NetworkHelper

        check = lambda value: isinstance(value, type) and issubclass(value, NetworkHelper)  # noqa: E731
        return _resolve(self.helper_target, f"model adapter {self.name!r}", self.source, check, "a gscore.calib.NetworkHelper subclass")

    def helper(self, *args: Any, **kwargs: Any) -> Any:
        """A new helper of this adapter (arguments go to its constructor)."""
        return self.helper_class(*args, **kwargs)

    def load(self, path: Any, **options: Any) -> Any:
        """``(network, helper)`` this adapter's loader builds from ``path``."""
        if self.loader_target is None:
            raise UnknownModelError(f"model adapter {self.name!r} of {self.source} has no loader: build the network yourself and pass {self.name}'s helper to the algorithm")
        return _resolve(self.loader_target, f"model adapter {self.name!r}", self.source, callable, "callable")(path, **options)


@dataclass
class NameRegistry:
    """Registered entries by name and alias, and the name conflicts found.

    Subclasses say what they hold (``noun``) and which errors name an unknown or conflicting name.
    """

    noun: ClassVar[str] = "entry"
    unknown_error: ClassVar[type[Exception]] = UnknownAlgorithmError
    conflict_error: ClassVar[type[Exception]] = AlgorithmConflictError
    _by_key: dict[str, Any] = field(default_factory=dict)
    _infos: list[Any] = field(default_factory=list)
    conflicts: dict[str, list[PluginSource]] = field(default_factory=dict)

    def claimed(self, infos: Iterable[Any]) -> list[tuple[str, Any, Any]]:
        """``(name, holder, newcomer)`` for every name of ``infos`` another distribution already holds."""
        found = []
        for info in infos:
            for key in sorted(info.keys):
                holder = self._by_key.get(key)
                if holder is not None and holder.source != info.source:
                    found.append((key, holder, info))
        return found

    def commit(self, infos: Iterable[Any]) -> None:
        """Publish ``infos``; a name already held by another entry becomes a conflict."""
        for info in infos:
            clashes = {k: self._by_key[k] for k in info.keys if k in self._by_key}
            for key, other in clashes.items():
                self.conflicts.setdefault(key, [other.source]).append(info.source)
            for key in info.keys - clashes.keys():
                self._by_key[key] = info
            self._infos.append(info)

    def infos(self) -> list[Any]:
        """Every registered entry, in registration order."""
        return list(self._infos)

    def names(self) -> list[str]:
        """Every registered name and alias (display form), sorted."""
        return sorted({normalise_name(n) for i in self._infos for n in (i.name, *i.aliases)})

    def get(self, name: str, failures: Iterable[str] = ()) -> Any:
        """The entry registered under ``name`` or an alias.

        ``failures`` are one-line descriptions of plugins that did not load; they go into the
        error message because the entry asked for may live in one of them.
        """
        installed = ", ".join(sorted(i.name for i in self._infos)) or "none"
        plural = f"{self.noun}s"
        try:
            key = lookup_key(name)
        except ValueError:
            article = "an" if self.noun[0] in "aeiou" else "a"
            raise self.unknown_error(f"{article} {self.noun} name must be a non-empty string, got {name!r}. Installed {plural}: {installed}.") from None
        if key in self.conflicts:
            claimants = "; ".join(str(s) for s in self.conflicts[key])
            raise self.conflict_error(
                f"{self.noun} name {name!r} is registered by more than one plugin: {claimants}. "
                "Uninstall one of them or disable it with GSCORE_DISABLE_PLUGINS=<plugin>."
            )
        if key in self._by_key:
            return self._by_key[key]
        lines = [f"no gscore {self.noun} named {name!r}."]
        close = difflib.get_close_matches(normalise_name(name), self.names(), n=1)
        if close:
            lines.append(f"Did you mean {close[0]!r}?")
        lines.append(f"Installed {plural}: {installed}.")
        failures = list(failures)
        if failures:
            lines.append("Plugins that failed to load: " + "; ".join(failures) + ".")
        raise self.unknown_error(" ".join(lines))


@dataclass
class AlgorithmRegistry(NameRegistry):
    """All registered algorithms, their aliases and the name conflicts found."""

    noun: ClassVar[str] = "algorithm"

    def registrar(self, source: PluginSource) -> PluginRegistrar:
        """A staging area for one plugin's registrations (see :class:`PluginRegistrar`)."""
        return PluginRegistrar(self, source)


@dataclass
class ModelRegistry(NameRegistry):
    """All registered model adapters, their aliases and the name conflicts found."""

    noun: ClassVar[str] = "model adapter"
    unknown_error: ClassVar[type[Exception]] = UnknownModelError
    conflict_error: ClassVar[type[Exception]] = ModelConflictError

    def registrar(self, source: PluginSource) -> ModelRegistrar:
        """A staging area for one plugin's model adapters (see :class:`ModelRegistrar`)."""
        return ModelRegistrar(self, source)


class PluginRegistrar:
    """What a plugin's ``gscore_register_algorithms`` receives: ``add`` stages, the host commits."""

    def __init__(self, registry: AlgorithmRegistry, source: PluginSource) -> None:
        self._registry = registry
        self._source = source
        self.staged: list[AlgorithmInfo] = []

    def add(self, cls: type | str, name: str, aliases: Iterable[str] = (), summary: str = "") -> None:
        """Register ``cls`` (a ``gscore.Algorithm`` subclass) under ``name`` and ``aliases``.

        ``cls`` may be ``"module:Class"``: it is imported only when the algorithm is used,
        so ``gscore list`` stays fast and MindSpore-free; give ``summary`` for the listing.
        """
        if isinstance(cls, str):
            if not re.fullmatch(r"[\w.]+:\w+", cls):
                raise RegistrationError(f"registry.add expects a gscore.Algorithm subclass or a 'module:Class' path, got {cls!r}")
        elif not _is_algorithm_class(cls):
            raise RegistrationError(f"registry.add expects a gscore.Algorithm subclass or a 'module:Class' path, got {cls!r}")
        name, aliases = _checked_names(name, aliases)
        self.staged.append(AlgorithmInfo(name=name, target=cls, aliases=aliases, source=self._source, given_summary=summary))

    def commit(self) -> None:
        """Publish everything staged (the host does this after the plugin's hook returned)."""
        self._registry.commit(self.staged)
        self.staged = []


def _checked_names(name: str, aliases: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """``(normalised name, aliases as given)``; a bad name, or aliases given as one string, is refused."""
    if isinstance(aliases, str):
        raise RegistrationError(f"registry.add: aliases must be a list of names, got the string {aliases!r}")
    aliases = tuple(aliases)
    for alias in aliases:
        normalise_name(alias)
    return normalise_name(name), aliases


class ModelRegistrar:
    """What a plugin's ``gscore_register_models`` receives: ``add`` stages, the host commits."""

    def __init__(self, registry: ModelRegistry, source: PluginSource) -> None:
        self._registry = registry
        self._source = source
        self.staged: list[ModelInfo] = []

    def add(self, name: str, helper: type | str, loader: Callable[..., Any] | str | None = None, aliases: Iterable[str] = (), summary: str = "") -> None:
        """Register a model adapter: its NetworkHelper subclass ``helper``, and optionally
        ``loader(path, **options) -> (network, helper)``; either may be a ``"module:attr"`` path (give
        ``summary`` then: the listing does not import it)."""
        from gscore.calib.network_helper import NetworkHelper

        _check_path(helper, "registry.add: helper")
        if not isinstance(helper, str) and not (isinstance(helper, type) and issubclass(helper, NetworkHelper)):
            raise RegistrationError(f"registry.add: helper must be a gscore.calib.NetworkHelper subclass or a 'module:Class' path, got {helper!r}")
        _check_path(loader, "registry.add: loader")
        if loader is not None and not isinstance(loader, str) and not callable(loader):
            raise RegistrationError(f"registry.add: loader must be callable, a 'module:function' path or None, got {loader!r}")
        name, aliases = _checked_names(name, aliases)
        if not summary and isinstance(helper, type):
            summary = ((helper.__doc__ or "").strip().splitlines() or [""])[0]
        self.staged.append(ModelInfo(name, helper, loader, aliases, self._source, summary))
