"""Name -> algorithm class, filled by the ``gscore_register_algorithms`` hook.

Names are normalised (case, ``_``/space -> ``-``) so ``"RoundToNearest"``, ``"round_to_nearest"``
and ``"round-to-nearest"`` meet. A plugin registers through a :class:`PluginRegistrar` that
stages its entries and commits them all at once, so a plugin that raises half-way leaves
nothing behind. A name claimed by two plugins is recorded as a conflict: asking for it
raises an error naming both distributions, while every other name keeps working.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from typing import Iterable

from gscore.errors import AlgorithmConflictError, UnknownAlgorithmError


def normalise_name(name: str) -> str:
    """Canonical lookup key: lower case, CamelCase split, ``_``/spaces/dots -> ``-``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an algorithm name must be a non-empty string, got {name!r}")
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name.strip())
    return re.sub(r"[\s_.\-]+", "-", spaced).lower()


@dataclass(frozen=True)
class PluginSource:
    """Where a registration came from: the plugin's name and its distribution."""

    plugin: str
    distribution: str = "?"
    version: str = "?"

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin!r})"


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
    def cls(self) -> type:
        """The algorithm class (imported now if registered by path)."""
        if isinstance(self.target, type):
            return self.target
        if not self._resolved:
            module_name, _, attr = self.target.partition(":")
            try:
                cls = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ImportError(f"algorithm {self.name!r} of {self.source} points at {self.target!r}, which does not import: {exc}") from exc
            if not isinstance(cls, type):
                raise TypeError(f"algorithm {self.name!r} of {self.source}: {self.target!r} is not a class")
            self._resolved.append(cls)
        return self._resolved[0]

    @property
    def summary(self) -> str:
        """The summary given at registration, else the first line of the class docstring."""
        if self.given_summary or not isinstance(self.target, type):
            return self.given_summary
        doc = (self.target.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass
class AlgorithmRegistry:
    """All registered algorithms, their aliases and the name conflicts found."""

    _by_key: dict[str, AlgorithmInfo] = field(default_factory=dict)
    _infos: list[AlgorithmInfo] = field(default_factory=list)
    conflicts: dict[str, list[PluginSource]] = field(default_factory=dict)

    def registrar(self, source: PluginSource) -> PluginRegistrar:
        """A staging area for one plugin's registrations (see :class:`PluginRegistrar`)."""
        return PluginRegistrar(self, source)

    def _commit(self, infos: Iterable[AlgorithmInfo]) -> None:
        for info in infos:
            keys = {normalise_name(n) for n in (info.name, *info.aliases)}
            clashes = {k: self._by_key[k] for k in keys if k in self._by_key}
            for key, other in clashes.items():
                self.conflicts.setdefault(key, [other.source]).append(info.source)
            for key in keys - clashes.keys():
                self._by_key[key] = info
            self._infos.append(info)

    def infos(self) -> list[AlgorithmInfo]:
        """Every registered algorithm, in registration order."""
        return list(self._infos)

    def names(self) -> list[str]:
        """Every lookup key (names and aliases), normalised and sorted."""
        return sorted(self._by_key)

    def get(self, name: str, failures: Iterable[str] = ()) -> AlgorithmInfo:
        """The algorithm registered under ``name`` or an alias.

        ``failures`` are one-line descriptions of plugins that did not load; they go into the
        error message because the algorithm asked for may live in one of them.
        """
        key = normalise_name(name)
        if key in self.conflicts:
            claimants = "; ".join(str(s) for s in self.conflicts[key])
            raise AlgorithmConflictError(
                f"algorithm name {name!r} is registered by more than one plugin: {claimants}. "
                "Uninstall one of them or disable it with GSCORE_DISABLE_PLUGINS=<plugin>."
            )
        if key in self._by_key:
            return self._by_key[key]
        lines = [f"no gscore algorithm named {name!r}."]
        close = difflib.get_close_matches(key, self.names(), n=1)
        if close:
            lines.append(f"Did you mean {close[0]!r}?")
        installed = ", ".join(sorted(i.name for i in self._infos)) or "none"
        lines.append(f"Installed algorithms: {installed}.")
        failures = list(failures)
        if failures:
            lines.append("Plugins that failed to load: " + "; ".join(failures) + ".")
        raise UnknownAlgorithmError(" ".join(lines))


class PluginRegistrar:
    """What a plugin's ``gscore_register_algorithms`` receives: ``add`` stages, the core commits."""

    def __init__(self, registry: AlgorithmRegistry, source: PluginSource) -> None:
        self._registry = registry
        self._source = source
        self._staged: list[AlgorithmInfo] = []

    def add(self, cls: type | str, name: str, aliases: Iterable[str] = (), summary: str = "") -> None:
        """Register ``cls`` under ``name`` and ``aliases`` (all normalised for lookup).

        ``cls`` may be ``"module:Class"``: it is imported only when the algorithm is used,
        so ``gscore list`` stays fast and MindSpore-free; give ``summary`` for the listing.
        """
        if not isinstance(cls, type) and not (isinstance(cls, str) and re.fullmatch(r"[\w.]+:\w+", cls)):
            raise TypeError(f"registry.add expects a class or a 'module:Class' path, got {cls!r}")
        normalise_name(name)
        aliases = tuple(aliases)
        for alias in aliases:
            normalise_name(alias)
        self._staged.append(AlgorithmInfo(name=normalise_name(name), target=cls, aliases=aliases, source=self._source, given_summary=summary))

    def commit(self) -> None:
        """Publish everything staged; called by the core after the plugin's hook returned."""
        self._registry._commit(self._staged)
        self._staged = []
