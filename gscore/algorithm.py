"""The Algorithm base class: the user's verbs ``apply``/``convert`` mapped onto phase hooks.

A user calls ``apply`` and ``convert``, as in Golden Stick; which phase each verb runs
depends on the mode (table in README). Phases go through the plugin manager's
``gscore_<phase>`` hooks (:meth:`gscore.plugins.PluginHost.run_phase`), so observer plugins
see them and can wrap them; the core's default implementation then calls the method of the
same name on the algorithm.

Each verb is all-or-nothing (:func:`gscore.transaction.transaction`): if it raises, the
network (structure, parameter names and values) and the algorithm's own attributes are as
they were before the call, so the call can simply be retried.

Options: an algorithm declares which values of its config's fields it implements
(:attr:`Algorithm.supported_options`) and which ``algo_args`` keys it reads
(:attr:`Algorithm.known_algo_args`); the base class refuses anything else at construction,
before the algorithm's own :meth:`Algorithm.validate_config`.
"""

from __future__ import annotations

import enum
import os
import weakref
from typing import Any, ClassVar, Mapping

from gscore.errors import ConfigError, GscoreError
from gscore.transaction import is_cell, transaction

PHASES = ("calibrate", "quantize", "deploy", "prune")

# network -> what the algorithm whose verb last produced it said about it (plain data, so the
# map keeps neither the network nor the algorithm alive)
_descriptions: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def built_description(network: Any) -> dict[str, Any] | None:
    """``algorithm.describe(network)`` as of the end of the last verb that produced ``network``
    (None if no algorithm with a ``describe`` did): checkpoint loading checks a file's
    description against it, even after the algorithm object is gone."""
    return _descriptions.get(network) if is_cell(network) else None


def _shown(value: Any) -> str:
    return repr(value.value) if isinstance(value, enum.Enum) else repr(value)


class Algorithm:
    """Base of every gscore algorithm; subclasses implement the phase methods they support."""

    config_cls: ClassVar[type | None] = None
    #: Config fields of which this algorithm implements only some values: field -> those values.
    supported_options: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    #: The ``config.algo_args`` keys this algorithm reads (None: its config has no algo_args).
    known_algo_args: ClassVar[frozenset[str] | None] = None

    def __init__(self, config: Any = None) -> None:
        if self.config_cls is not None:
            if config is None:
                config = self.config_cls()
            elif isinstance(config, Mapping):
                config = self.config_cls.from_dict(config)
            elif not isinstance(config, self.config_cls):
                raise ConfigError(
                    f"{type(self).__name__} takes a {self.config_cls.__name__} (or its dict form), got {type(config).__name__}"
                )
        self.config = config
        self.phase_records: list[Any] = []
        self.network_helper: Any = None
        self._check_declared_options()
        self.validate_config()

    def _check_declared_options(self) -> None:
        name = type(self).__name__
        for field_name, allowed in self.supported_options.items():
            value = getattr(self.config, field_name)
            if value not in allowed:
                choices = ", ".join(_shown(a) for a in allowed)
                raise ConfigError(f"{name} does not implement {field_name}={_shown(value)}; it implements {field_name} in ({choices})")
        if self.known_algo_args is not None:
            unknown = sorted(set(self.config.algo_args) - self.known_algo_args)
            if unknown:
                known = sorted(self.known_algo_args)
                raise ConfigError(f"unknown algo_args {unknown} for {name}; " + (f"known: {known}" if known else f"{name} takes no algo_args"))

    def validate_config(self) -> None:
        """Reject configs this algorithm cannot honour (the config itself is already valid)."""

    def apply_phase(self) -> str | None:
        """The phase ``apply`` runs (``None``: ``apply`` does nothing)."""
        raise NotImplementedError

    def convert_phase(self) -> str | None:
        """The phase ``convert`` runs (``None``: ``convert`` does nothing)."""
        raise NotImplementedError

    def apply(self, network: Any, network_helper: Any = None, datasets: Any = None) -> Any:
        """Run this algorithm's apply phase on ``network``; returns the resulting network.

        The helper is kept on ``self.network_helper`` for later phases (DEPLOY needs the
        same model knowledge as QUANTIZE to rebuild the same structure).
        """
        with transaction(network, owner=self):
            self.network_helper = network_helper
            result = self._run(self.apply_phase(), network, network_helper=network_helper, datasets=datasets)
            self._built(result)
            return result

    def convert(self, network: Any, ckpt_path: str | os.PathLike[str] | None = "") -> Any:
        """Run the convert phase; with ``ckpt_path``, then load that checkpoint strictly."""
        if ckpt_path is not None and not isinstance(ckpt_path, (str, os.PathLike)):
            raise ConfigError(f"ckpt_path must be a path (str or os.PathLike), or '' or None for none, got {type(ckpt_path).__name__}")
        with transaction(network, owner=self):
            result = self._run(self.convert_phase(), network)
            self._built(result)
            if ckpt_path:
                from gscore.io import load_checkpoint

                load_checkpoint(ckpt_path, result)
            return result

    def _run(self, phase: str | None, network: Any, **extra: Any) -> Any:
        if phase is None:
            return network
        from gscore.plugins import host

        kwargs = {"network_helper": extra.get("network_helper"), "datasets": extra.get("datasets")} if phase == "calibrate" else {}
        return host().run_phase(phase, self, network, **kwargs)

    def _built(self, network: Any) -> None:
        """Remember what this algorithm says about the ``network`` it produced (see :func:`built_description`)."""
        if not is_cell(network):
            return
        try:
            _descriptions[network] = self.describe(network)
        except (AttributeError, GscoreError):  # no describe, or nothing to describe yet (SCOP before convert)
            _descriptions.pop(network, None)

    def calibrate(self, network: Any, network_helper: Any = None, datasets: Any = None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no calibrate phase")

    def quantize(self, network: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no quantize phase")

    def deploy(self, network: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no deploy phase")

    def prune(self, network: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no prune phase")


class PTQAlgorithm(Algorithm):
    """Post-training algorithms: QUANTIZE mode calibrates then quantizes; DEPLOY mode rebuilds.

    QUANTIZE: ``apply`` = calibrate (statistics, simulated network), ``convert`` = quantize
    (real low-bit parameters). DEPLOY: ``apply`` = deploy (quantized structure with
    placeholders for ``load_checkpoint``), ``convert`` does nothing more.
    """

    def apply_phase(self) -> str:
        from gscore.config import PTQMode

        return "calibrate" if self.config.mode is PTQMode.QUANTIZE else "deploy"

    def convert_phase(self) -> str | None:
        from gscore.config import PTQMode

        return "quantize" if self.config.mode is PTQMode.QUANTIZE else None

    def describe(self, network: Any) -> dict[str, Any]:
        """What a checkpoint of ``network`` should say about itself: algorithm, config, layers."""
        from gscore.nn.passes import describe_linears

        return {"algorithm": type(self).__name__, "config": self.config.to_dict(), "layers": describe_linears(network)}


class QATAlgorithm(Algorithm):
    """Quantization-aware training: ``apply`` = quantize (insert fake quantization to train
    with), ``convert`` = deploy (a network holding real low-bit weights)."""

    def apply_phase(self) -> str:
        return "quantize"

    def convert_phase(self) -> str:
        return "deploy"


class PruningAlgorithm(Algorithm):
    """Structured pruning: ``apply`` = calibrate (prepare the network whose training scores
    channels), ``convert`` = prune (build the physically smaller network)."""

    def apply_phase(self) -> str:
        return "calibrate"

    def convert_phase(self) -> str:
        return "prune"
