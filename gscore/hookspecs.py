"""The hooks of gscore: what a plugin may implement and when each one fires.

Two kinds of hooks:

* ``gscore_register_algorithms`` is how an algorithm becomes reachable by name. Pluggy
  calls every implementation, so it only *adds to a registry*; selecting one algorithm by
  name is the registry's job, never a plugin checking a name.
* The phase hooks (``gscore_calibrate``, ``gscore_quantize``, ``gscore_deploy``,
  ``gscore_prune``) are ``firstresult``: the core's default implementation (``trylast``)
  calls the algorithm's own method for that phase. A plugin can wrap a phase
  (``@hookimpl(wrapper=True)``) to time it, report on it or gate it, or answer it first for
  a case it knows better by returning the network; returning ``None`` passes it on.

A plugin's (non-wrapper) phase implementation answers only for the algorithms that plugin
registered, or those it names with :func:`answers_for`; for any other algorithm it is not
called. Every phase hook returns the network it produced (possibly the same object); the core
refuses any other answer (:class:`~gscore.errors.PhaseAnswerError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

import pluggy

if TYPE_CHECKING:
    from gscore.algorithm import Algorithm
    from gscore.registry import PluginRegistrar

PROJECT_NAME = "gscore"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
ANSWERS_FOR_ATTRIBUTE = "gscore_answers_for"

F = TypeVar("F", bound=Callable[..., Any])


def answers_for(*algorithms: str | type) -> Callable[[F], F]:
    """Let a phase hook implementation answer for these algorithms (registered names or
    aliases, or classes, subclasses included), besides those its own plugin registered::

        @gscore.hookimpl
        @gscore.answers_for("ptq", "rtn")
        def gscore_quantize(algorithm, network): ...
    """
    if not algorithms or not all(isinstance(a, (str, type)) for a in algorithms):
        raise TypeError(f"answers_for takes algorithm names or classes, got {algorithms!r}")

    def mark(function: F) -> F:
        setattr(function, ANSWERS_FOR_ATTRIBUTE, tuple(algorithms))
        return function

    return mark


@hookspec
def gscore_register_algorithms(registry: PluginRegistrar) -> None:
    """Add this plugin's algorithm classes with ``registry.add(cls, name=..., aliases=[...])``; fires once, at discovery."""


@hookspec(firstresult=True)
def gscore_calibrate(algorithm: Algorithm, network: Any, network_helper: Any, datasets: Any) -> Any:
    """Collect statistics (PTQ) or prepare channel scoring (pruning); fires in ``apply`` of PTQ QUANTIZE mode and of pruning."""


@hookspec(firstresult=True)
def gscore_quantize(algorithm: Algorithm, network: Any) -> Any:
    """Quantize the network: real low-bit parameters (PTQ ``convert``) or fake quantization to train with (QAT ``apply``)."""


@hookspec(firstresult=True)
def gscore_deploy(algorithm: Algorithm, network: Any) -> Any:
    """Build the deployable network: placeholders to load into (PTQ DEPLOY ``apply``) or real low-bit weights (QAT ``convert``)."""


@hookspec(firstresult=True)
def gscore_prune(algorithm: Algorithm, network: Any) -> Any:
    """Return a network with the pruned structure physically removed; fires in ``convert`` of a pruning algorithm."""


PHASE_HOOKS = ("gscore_calibrate", "gscore_quantize", "gscore_deploy", "gscore_prune")
