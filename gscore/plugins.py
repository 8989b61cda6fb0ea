"""The plugin manager: lazy discovery of entry points, per-plugin fault isolation, env switches.

Nothing happens at ``import gscore``: the first ``get()``/``algorithms()``/phase call builds
the :class:`PluginHost`. Each entry point in group ``gscore`` is imported and registered on
its own; one that fails to import, declares another API version, or raises while
registering is recorded as a :class:`PluginFailure` and skipped (``GSCORE_STRICT_PLUGINS=1``
raises instead). Environment switches, read when the host is built:

* ``GSCORE_DISABLE_PLUGINS=a,b`` — do not load the named entry points.
* ``GSCORE_DISABLE_PLUGIN_AUTOLOAD=1`` — load only the first-party plugins shipped in this
  repository (:data:`FIRST_PARTY_DISTRIBUTIONS`); third-party entry points are skipped.
* ``GSCORE_STRICT_PLUGINS=1`` — a failing plugin raises :class:`~gscore.errors.PluginLoadError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import threading
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from gscore import hookspecs
from gscore.errors import PluginLoadError
from gscore.registry import AlgorithmInfo, AlgorithmRegistry, PluginSource
from gscore.version import API_VERSION

ENTRY_POINT_GROUP = "gscore"
FIRST_PARTY_DISTRIBUTIONS = frozenset({"gscore", "gscore-rtn", "gscore-ptq", "gscore-simqat", "gscore-slb", "gscore-scop"})
CORE_PLUGINS = ("gscore.default_phases", "gscore.observers.phase_timer")


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was skipped, with the reason shown by ``gscore list`` and ``get()`` errors."""

    plugin: str
    distribution: str
    error: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution}): {self.error}"


def _env_list(name: str) -> set[str]:
    return {item.strip() for item in os.environ.get(name, "").split(",") if item.strip()}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """A typed facade over one ``pluggy.PluginManager`` and the algorithm registry it fills."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = AlgorithmRegistry()
        self.failures: list[PluginFailure] = []
        self.skipped: list[str] = []
        self.strict = _env_flag("GSCORE_STRICT_PLUGINS")
        for module_name in CORE_PLUGINS:
            module = importlib.import_module(module_name)
            self._register(module, module_name, PluginSource(module_name, "gscore", _dist_version("gscore")))

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``host.hook.gscore_quantize(...)``)."""
        return self.pm.hook

    def discover(self) -> None:
        """Import and register every entry point of group ``gscore`` that the switches allow."""
        disabled = _env_list("GSCORE_DISABLE_PLUGINS")
        first_party_only = _env_flag("GSCORE_DISABLE_PLUGIN_AUTOLOAD")
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            if ep.name in disabled or (first_party_only and dist not in FIRST_PARTY_DISTRIBUTIONS):
                self.skipped.append(ep.name)
                continue
            if self.pm.has_plugin(ep.name):
                self._fail(ep.name, dist, f"another plugin is already registered as {ep.name!r}")
                continue
            source = PluginSource(ep.name, dist, ep.dist.version if ep.dist else "?")
            try:
                module = ep.load()
            except Exception as exc:  # any import failure of a plugin must not break the others
                self._fail(ep.name, dist, f"import failed: {type(exc).__name__}: {exc}", traceback.format_exc())
                continue
            declared = getattr(module, "GSCORE_API_VERSION", None)
            if declared != API_VERSION:
                self._fail(
                    ep.name,
                    dist,
                    f"written for gscore API version {declared!r}, this gscore provides {API_VERSION}"
                    " (set GSCORE_API_VERSION in the plugin module)",
                )
                continue
            self._register(module, ep.name, source)

    def _register(self, module: ModuleType, name: str, source: PluginSource) -> None:
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # pluggy validation errors (unknown hook, bad signature)
            self._fail(name, source.distribution, f"registration failed: {type(exc).__name__}: {exc}", traceback.format_exc())
            return
        impls = [i for i in self.pm.hook.gscore_register_algorithms.get_hookimpls() if i.plugin is module]
        for impl in impls:
            registrar = self.registry.registrar(source)
            try:
                impl.function(registry=registrar)
            except Exception as exc:
                self.pm.unregister(module)
                self._fail(name, source.distribution, f"gscore_register_algorithms raised {type(exc).__name__}: {exc}", traceback.format_exc())
                return
            registrar.commit()

    def _fail(self, plugin: str, distribution: str, error: str, detail: str = "") -> None:
        failure = PluginFailure(plugin, distribution, error, detail)
        if self.strict:
            raise PluginLoadError(f"{failure} (GSCORE_STRICT_PLUGINS is set)")
        self.failures.append(failure)

    def get(self, name: str) -> AlgorithmInfo:
        """The registry entry for ``name``; the error lists installed algorithms and failures."""
        return self.registry.get(name, failures=[str(f) for f in self.failures])


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


_host: PluginHost | None = None
_host_lock = threading.Lock()


def host() -> PluginHost:
    """The process-wide plugin host, built and discovered on first use."""
    global _host
    with _host_lock:
        if _host is None:
            new_host = PluginHost()
            new_host.discover()
            _host = new_host
        return _host


def reset_host() -> None:
    """Forget the host so the next call rediscovers (after changing env switches, in tests)."""
    global _host
    with _host_lock:
        _host = None


def get(name: str) -> type:
    """The algorithm class registered under ``name`` or one of its aliases."""
    return host().get(name).cls


def algorithms() -> list[AlgorithmInfo]:
    """Every registered algorithm with its plugin distribution and version."""
    return host().registry.infos()


def plugin_failures() -> list[PluginFailure]:
    """Plugins that were skipped because they failed to load or register."""
    return list(host().failures)
