"""The plugin manager: lazy discovery of entry points, per-plugin fault isolation, env switches.

Nothing happens at ``import gscore``: the first ``get()``/``algorithms()``/phase call builds
the :class:`PluginHost`. Each entry point in group ``gscore`` is imported and registered on
its own; first-party plugins (:data:`FIRST_PARTY_DISTRIBUTIONS`) first, then the others in
name order. A plugin is recorded as a :class:`PluginFailure` and skipped, the rest working on,
when it

* raises anything at import or registration (``SystemExit`` included; only
  ``KeyboardInterrupt`` goes through), or declares another ``GSCORE_API_VERSION``;
* implements a ``gscore_*`` hook gscore does not define (a misspelling such as
  ``gscore_quantise``), or defines a function named like a hook without ``@gscore.hookimpl``;
* is a third-party plugin registering a name or alias that a first-party plugin holds (or the
  name of a first-party entry point, even one that failed to load): the first-party
  algorithm keeps the name, and the whole third-party plugin is refused, so none of its hooks
  run. The failure names both distributions.

Two non-first-party plugins registering the same name both stay loaded; the name itself
raises :class:`~gscore.errors.AlgorithmConflictError` naming both, and the conflict is
recorded as a failure of the later one, so ``gscore list`` shows it and strict mode refuses it.

Phase hooks (``gscore_calibrate``, ...) are called by :meth:`PluginHost.run_phase`. A
non-wrapper implementation answers only for algorithms its plugin registered, or that it
declares with :func:`gscore.hookspecs.answers_for`; others are not called for that
algorithm. Wrappers see every phase. The answer must be a network (a MindSpore cell when the
input is one, else an object of the input's type); anything else raises
:class:`~gscore.errors.PhaseAnswerError` naming the plugins that could have produced it.

Environment switches, read when the host is built:

* ``GSCORE_DISABLE_PLUGINS=a,b`` -- do not load these plugins, named by entry point or
  distribution, in any case and with ``-`` or ``_``; a name that matches nothing warns.
* ``GSCORE_DISABLE_PLUGIN_AUTOLOAD=1`` -- load only the first-party plugins.
* ``GSCORE_STRICT_PLUGINS=1`` -- any plugin failure or name conflict raises
  :class:`~gscore.errors.PluginLoadError`.

Switch values are ``1/true/yes/on`` or ``0/false/no/off`` (or unset); anything else is a
:class:`~gscore.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import threading
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from gscore import hookspecs
from gscore.errors import ConfigError, GscoreWarning, PhaseAnswerError, PluginLoadError
from gscore.registry import AlgorithmInfo, AlgorithmRegistry, PluginSource, lookup_key
from gscore.transaction import is_cell
from gscore.version import API_VERSION

ENTRY_POINT_GROUP = "gscore"
FIRST_PARTY_DISTRIBUTIONS = frozenset({"gscore", "gscore-rtn", "gscore-ptq", "gscore-simqat", "gscore-slb", "gscore-scop"})
CORE_PLUGINS = ("gscore.default_phases", "gscore.observers.phase_timer")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was skipped or refused, with the reason shown by ``gscore list`` and ``get()`` errors."""

    plugin: str
    distribution: str
    error: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution}): {self.error}"


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ConfigError(f"{name}={raw!r} is not a switch value; use 1/true/yes/on or 0/false/no/off (or leave it unset)")


def _plugin_key(name: str) -> str:
    """How GSCORE_DISABLE_PLUGINS compares names: case-insensitive, ``-``/``_``/``.`` alike."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _source_of(ep: metadata.EntryPoint) -> PluginSource:
    return PluginSource(ep.name, ep.dist.name if ep.dist else "?", ep.dist.version if ep.dist else "?")


def _is_first_party(source: PluginSource) -> bool:
    return source.distribution in FIRST_PARTY_DISTRIBUTIONS


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} ({text[:60]}{'...' if len(text) > 60 else ''})"


class PluginHost:
    """A typed facade over one ``pluggy.PluginManager`` and the algorithm registry it fills."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = AlgorithmRegistry()
        self.failures: list[PluginFailure] = []
        self.skipped: list[str] = []
        self.sources: dict[str, PluginSource] = {}
        self.reserved: dict[str, PluginSource] = {}
        self.strict = _env_flag("GSCORE_STRICT_PLUGINS")
        for module_name in CORE_PLUGINS:
            module = importlib.import_module(module_name)
            self._register(module, module_name, PluginSource(module_name, "gscore", _dist_version("gscore")))

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``host.hook.gscore_quantize(...)``)."""
        return self.pm.hook

    # ------------------------------------------------------------------ discovery and registration

    def discover(self) -> None:
        """Import and register every entry point of group ``gscore`` that the switches allow."""
        disabled = {_plugin_key(n): n for n in _env_list("GSCORE_DISABLE_PLUGINS")}
        first_party_only = _env_flag("GSCORE_DISABLE_PLUGIN_AUTOLOAD")
        sources = [(ep, _source_of(ep)) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
        sources.sort(key=lambda pair: (not _is_first_party(pair[1]), pair[1].plugin, pair[1].distribution))
        self.reserved.update({lookup_key(s.plugin): s for _, s in reversed(sources) if _is_first_party(s)})
        matched: set[str] = set()
        for ep, source in sources:
            hit = {_plugin_key(source.plugin), _plugin_key(source.distribution)} & disabled.keys()
            if hit or (first_party_only and not _is_first_party(source)):
                matched |= hit
                self.skipped.append(ep.name)
                continue
            try:
                module = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's import must not end the program or break the others
                self._fail(source, f"import failed: {type(exc).__name__}: {exc}", traceback.format_exc())
                continue
            declared = getattr(module, "GSCORE_API_VERSION", None)
            if declared != API_VERSION:
                self._fail(source, f"written for gscore API version {declared!r}, this gscore provides {API_VERSION} (set GSCORE_API_VERSION in the plugin module)")
                continue
            self._register(module, f"{source.distribution}:{source.plugin}", source)
        unmatched = sorted(disabled[k] for k in disabled.keys() - matched)
        if unmatched:
            installed = sorted({s.plugin for _, s in sources} | {s.distribution for _, s in sources})
            warnings.warn(
                f"GSCORE_DISABLE_PLUGINS names {unmatched}, which match no installed gscore plugin; installed plugins and distributions: {installed}",
                GscoreWarning,
                stacklevel=2,
            )

    def _register(self, plugin: Any, name: str, source: PluginSource) -> None:
        """Register one plugin object under pluggy name ``name``; any problem records a failure."""
        try:
            self.pm.register(plugin, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy validation errors (bad signature), or a plugin raising from getattr
            self._fail(source, f"registration failed: {type(exc).__name__}: {exc}", traceback.format_exc())
            return
        problem = self._hook_problem(plugin)
        if problem:
            self.pm.unregister(plugin)
            self._fail(source, f"registration refused: {problem}")
            return
        staged = []
        for impl in self.pm.hook.gscore_register_algorithms.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            registrar = self.registry.registrar(source)
            try:
                impl.function(registry=registrar)
            except KeyboardInterrupt:
                self.pm.unregister(plugin)
                raise
            except BaseException as exc:
                self.pm.unregister(plugin)
                self._fail(source, f"gscore_register_algorithms raised {type(exc).__name__}: {exc}", traceback.format_exc())
                return
            staged += registrar.staged
        taken = self._first_party_names_taken(staged, source)
        if taken:
            self.pm.unregister(plugin)
            self._fail(source, f"registration refused: it registers algorithm names held by first-party plugins ({taken}); the first-party algorithms keep them. Rename the third-party algorithm, or uninstall {source.distribution}")
            return
        self.sources[name] = source
        claims = self.registry.claimed(staged)
        self.registry.commit(staged)
        for key, holder, _ in claims:
            self._fail(source, f"algorithm name {key!r} is also registered by {holder.source}; gscore.get({key!r}) raises AlgorithmConflictError until one of them is uninstalled or disabled")

    def _first_party_names_taken(self, staged: list[AlgorithmInfo], source: PluginSource) -> str:
        """The first-party names (registered, or first-party entry point names) a third-party
        plugin's ``staged`` registrations claim, described; empty when none or first-party."""
        if _is_first_party(source):
            return ""
        taken = {(key, holder.source) for key, holder, _ in self.registry.claimed(staged) if _is_first_party(holder.source)}
        taken |= {(key, self.reserved[key]) for info in staged for key in info.keys if key in self.reserved}
        return "; ".join(sorted(f"{key!r} of {holder}" for key, holder in taken))

    def _hook_problem(self, plugin: Any) -> str | None:
        """Why ``plugin``'s hook implementations cannot be accepted, or None."""
        spec_names = {n for n in dir(hookspecs) if n.startswith("gscore_")}
        unknown = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [] if caller.spec is None)
        if unknown:
            hints = [f"{n!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(n, spec_names, n=1)) else repr(n) for n in unknown]
            return f"it implements unknown hook(s) {', '.join(hints)}; gscore's hooks are {sorted(spec_names)}"
        for attr in sorted(spec_names):
            value = getattr(plugin, attr, None)
            if callable(value) and self.pm.parse_hookimpl_opts(plugin, attr) is None:
                return f"{attr} is defined without @gscore.hookimpl, so it would never be called"
        return None

    def _fail(self, source: PluginSource, error: str, detail: str = "") -> None:
        failure = PluginFailure(source.plugin, source.distribution, error, detail)
        if self.strict:
            raise PluginLoadError(f"{failure} (GSCORE_STRICT_PLUGINS is set)")
        self.failures.append(failure)

    # ------------------------------------------------------------------ lookup

    def get(self, name: str) -> AlgorithmInfo:
        """The registry entry for ``name``; the error lists installed algorithms and failures."""
        return self.registry.get(name, failures=[str(f) for f in self.failures])

    # ------------------------------------------------------------------ phases

    def _registered_by(self, plugin_name: str | None, algorithm: Any) -> bool:
        source = self.sources.get(plugin_name or "")
        mro = type(algorithm).__mro__
        return source is not None and any(info.source == source and any(info.is_class(k) for k in mro) for info in self.registry.infos())

    def _declared_for(self, declared: tuple[Any, ...], algorithm: Any) -> bool:
        for target in declared:
            if isinstance(target, type) and isinstance(algorithm, target):
                return True
            if isinstance(target, str):
                try:
                    info = self.registry.get(target)
                except Exception:  # an unknown or conflicting name answers for nothing
                    continue
                if any(info.is_class(k) for k in type(algorithm).__mro__):
                    return True
        return False

    def _answers_for(self, impl: Any, algorithm: Any) -> bool:
        """May this non-wrapper phase implementation answer for ``algorithm``?"""
        if impl.plugin_name in CORE_PLUGINS:
            return True
        declared = getattr(impl.function, hookspecs.ANSWERS_FOR_ATTRIBUTE, None)
        if declared is not None:
            return self._declared_for(declared, algorithm)
        return self._registered_by(impl.plugin_name, algorithm)

    def _plugin_label(self, plugin_name: str) -> str:
        source = self.sources.get(plugin_name)
        return f"{source.plugin!r} ({source.distribution} {source.version})" if source else repr(plugin_name)

    def run_phase(self, phase: str, algorithm: Any, network: Any, **kwargs: Any) -> Any:
        """Call hook ``gscore_<phase>`` for ``algorithm`` and check the answer (see the module doc)."""
        hook_name = f"gscore_{phase}"
        caller = getattr(self.pm.hook, hook_name)
        excluded = [i.plugin for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper) and not self._answers_for(i, algorithm)]
        if excluded:
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=excluded)
        result = caller(algorithm=algorithm, network=network, **kwargs)
        if result is not None and (is_cell(result) if is_cell(network) else isinstance(result, type(network))):
            return result
        wanted = "a network (mindspore.nn.Cell)" if is_cell(network) else f"a network (a {type(network).__name__}, like the one given)"
        others = [self._plugin_label(i.plugin_name) for i in caller.get_hookimpls() if i.plugin_name not in CORE_PLUGINS]
        if others:
            raise PhaseAnswerError(
                f"{hook_name} for {type(algorithm).__name__} answered {_describe(result)}, not {wanted}; it came from "
                f"{type(algorithm).__name__}.{phase}() or from a plugin that answers or wraps this phase: {', '.join(others)}"
            )
        raise PhaseAnswerError(f"{type(algorithm).__name__}.{phase}() returned {_describe(result)}, not {wanted}")


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
    """Plugins that were skipped or refused, and name conflicts, with the reason."""
    return list(host().failures)
