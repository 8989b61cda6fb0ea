"""The Algorithm base class: the user's verbs ``apply``/``convert`` mapped onto phase hooks.

A user calls ``apply`` and ``convert``, as in Golden Stick; which phase each verb runs
depends on the mode (table in README). Phases go through the plugin manager's
``gscore_<phase>`` hooks, so observer plugins see them and can wrap them; the core's
default implementation then calls the method of the same name on the algorithm.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gscore.errors import ConfigError

PHASES = ("calibrate", "quantize", "deploy", "prune")


class Algorithm:
    """Base of every gscore algorithm; subclasses implement the phase methods they support."""

    config_cls: ClassVar[type | None] = None

    def __init__(self, config: Any = None) -> None:
        if self.config_cls is not None:
            if config is None:
                config = self.config_cls()
            elif isinstance(config, dict):
                config = self.config_cls.from_dict(config)
            elif not isinstance(config, self.config_cls):
                raise ConfigError(
                    f"{type(self).__name__} takes a {self.config_cls.__name__} (or its dict form), got {type(config).__name__}"
                )
        self.config = config
        self.phase_records: list[Any] = []
        self.network_helper: Any = None
        self.validate_config()

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
        self.network_helper = network_helper
        return self._run(self.apply_phase(), network, network_helper=network_helper, datasets=datasets)

    def convert(self, network: Any, ckpt_path: str = "") -> Any:
        """Run the convert phase; with ``ckpt_path``, then load that checkpoint strictly."""
        network = self._run(self.convert_phase(), network)
        if ckpt_path:
            from gscore.io import load_checkpoint

            load_checkpoint(ckpt_path, network)
        return network

    def _run(self, phase: str | None, network: Any, **extra: Any) -> Any:
        if phase is None:
            return network
        from gscore.plugins import host

        hook = getattr(host().hook, f"gscore_{phase}")
        kwargs = {"algorithm": self, "network": network}
        if phase == "calibrate":
            kwargs.update(network_helper=extra.get("network_helper"), datasets=extra.get("datasets"))
        result = hook(**kwargs)
        if result is None:
            raise RuntimeError(f"no implementation of gscore_{phase} answered for {type(self).__name__}")
        return result

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
    with), ``convert`` = deploy (a network holding real low-bit weights).

    During ``convert(network, ckpt_path=...)`` the attribute ``ranges_from_checkpoint`` is True:
    the deploy phase may then build activation quantizers whose observers never saw data,
    because the checkpoint loaded right after supplies their values.
    """

    ranges_from_checkpoint: bool = False

    def apply_phase(self) -> str:
        return "quantize"

    def convert_phase(self) -> str:
        return "deploy"

    def convert(self, network: Any, ckpt_path: str = "") -> Any:
        self.ranges_from_checkpoint = bool(ckpt_path)
        try:
            return super().convert(network, ckpt_path)
        finally:
            self.ranges_from_checkpoint = False


class PruningAlgorithm(Algorithm):
    """Structured pruning: ``apply`` = calibrate (prepare the network whose training scores
    channels), ``convert`` = prune (build the physically smaller network)."""

    def apply_phase(self) -> str:
        return "calibrate"

    def convert_phase(self) -> str:
        return "prune"
