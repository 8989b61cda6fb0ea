"""The conformance suites every gscore algorithm plugin and model adapter should pass.

Subclass :class:`AlgorithmConformance` in a test module of your plugin, set
``algorithm_name``, and pytest collects the checks. For a quantization algorithm also set
``make_network`` (a zero-argument callable returning a fresh float MindSpore network with
deterministic weights) and ``make_input``; the suite then runs QUANTIZE → save → DEPLOY →
load and demands the deployed outputs equal the quantized network's exactly, with the native
kernels and on the portable path (the ``kernel_path`` fixture of gscore's pytest plugin). A
model adapter plugin subclasses :class:`ModelAdapterConformance` the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import gscore
from gscore.algorithm import Algorithm
from gscore.registry import normalise_name


class AlgorithmConformance:
    """Checks that hold for any registered algorithm."""

    algorithm_name: ClassVar[str] = ""
    make_network: ClassVar[Callable[[], Any] | None] = None
    make_input: ClassVar[Callable[[], Any] | None] = None
    quantize_config: ClassVar[dict[str, Any]] = {}

    def _info(self) -> Any:
        from gscore.plugins import host

        return host().get(self.algorithm_name)

    def test_resolves_by_name_and_aliases(self) -> None:
        info = self._info()
        for name in (info.name, *info.aliases, info.name.upper(), info.name.replace("-", "_")):
            assert gscore.get(name) is info.cls, name
        assert normalise_name(self.algorithm_name) in {normalise_name(n) for n in (info.name, *info.aliases)}

    def test_is_an_algorithm_with_a_summary(self) -> None:
        info = self._info()
        assert issubclass(info.cls, Algorithm)
        assert info.summary, "the algorithm class needs a docstring; its first line is shown by `gscore list`"

    def test_default_config_round_trips(self) -> None:
        cls = self._info().cls
        if cls.config_cls is None:
            return
        config = cls.config_cls(**self.quantize_config)
        assert cls.config_cls.from_dict(config.to_dict()) == config
        assert cls.config_cls.from_yaml(config.to_yaml()) == config

    def test_quantize_save_deploy_load_reproduces_outputs(self, tmp_path: Path, kernel_path: str) -> None:
        if type(self).make_network is None:
            return
        import numpy as np

        from gscore.config import PTQMode
        from gscore.io import load_checkpoint, save_checkpoint

        cls = self._info().cls
        make_network = type(self).make_network
        x = type(self).make_input()
        algo = cls(cls.config_cls(mode=PTQMode.QUANTIZE, **self.quantize_config))
        net = make_network()
        algo.convert(algo.apply(net))
        expected = net(x).asnumpy()
        path = save_checkpoint(net, tmp_path / "q.ckpt", description=algo.describe(net))

        deploy = cls(cls.config_cls(mode=PTQMode.DEPLOY, **self.quantize_config))
        fresh = make_network()
        deploy.convert(deploy.apply(fresh))
        description = load_checkpoint(path, fresh)
        assert description is not None and description["layers"]
        np.testing.assert_array_equal(fresh(x).asnumpy(), expected)


class QATConformance(AlgorithmConformance):
    """Checks for quantization-aware-training algorithms (``QATAlgorithm`` subclasses).

    Set ``make_network``/``make_input`` (and ``quantize_config``, the config's keyword
    arguments) and optionally ``train_steps(network)`` (a callable training the applied
    network briefly so observers and weights move). The suite runs apply → train → convert
    → save, then rebuilds the deploy network from the file on a fresh network
    (``convert(apply(net), ckpt_path=...)``) and demands bit-equal outputs; it also checks apply
    returns a network that still computes finite outputs of the float network's shape, in
    training mode and, after that forward let its observers see data, in evaluation mode.
    """

    train_steps: ClassVar[Callable[[Any], Any] | None] = None

    def _algorithm(self) -> Any:
        cls = self._info().cls
        return cls(cls.config_cls(**self.quantize_config)) if cls.config_cls is not None else cls()

    def test_is_a_qat_algorithm(self) -> None:
        from gscore.algorithm import QATAlgorithm

        assert issubclass(self._info().cls, QATAlgorithm)

    def test_apply_keeps_the_output_shape(self) -> None:
        if type(self).make_network is None:
            return
        import numpy as np

        x = type(self).make_input()
        expected = type(self).make_network()(x).shape
        net = self._algorithm().apply(type(self).make_network())
        for training in (True, False):
            net.set_train(training)
            out = net(x).asnumpy()
            assert out.shape == tuple(expected) and np.isfinite(out).all()

    def test_quantize_save_deploy_load_reproduces_outputs(self, tmp_path: Path, kernel_path: str) -> None:
        if type(self).make_network is None:
            return
        import numpy as np

        from gscore.io import save_checkpoint

        x = type(self).make_input()
        algo = self._algorithm()
        net = algo.apply(type(self).make_network())
        if type(self).train_steps is not None:
            type(self).train_steps(net)
        algo.convert(net)
        net.set_train(False)
        expected = net(x).asnumpy()
        description = algo.describe(net) if hasattr(algo, "describe") else None
        path = save_checkpoint(net, tmp_path / "qat.ckpt", description=description)

        deploy = self._algorithm()
        fresh = deploy.convert(deploy.apply(type(self).make_network()), ckpt_path=str(path))
        fresh.set_train(False)
        np.testing.assert_array_equal(fresh(x).asnumpy(), expected)


class ModelAdapterConformance:
    """Checks that hold for any registered model adapter (``gscore_register_models``).

    Set ``adapter_name``; ``make_network`` (zero-argument, a fresh float network of the
    adapter's architecture) and ``make_datasets`` (calibration data in the adapter's form) to
    also check its blocks and smoothing groups against the network and run a static A8W8 +
    SmoothQuant ``ptq`` calibration through the adapter's helper (``helper_kwargs`` build it).
    """

    adapter_name: ClassVar[str] = ""
    make_network: ClassVar[Callable[[], Any] | None] = None
    make_datasets: ClassVar[Callable[[], Any] | None] = None
    helper_kwargs: ClassVar[dict[str, Any]] = {}

    def _info(self) -> Any:
        return gscore.model(self.adapter_name)

    def test_resolves_by_name_and_aliases(self) -> None:
        info = self._info()
        for name in (info.name, *info.aliases, info.name.upper()):
            assert gscore.model(name) is info, name
        assert info.summary, "give the adapter a summary (or a helper docstring): `gscore models` shows it"

    def test_helper_provides_every_calibration_method(self) -> None:
        from gscore.calib.network_helper import CALIBRATION_METHODS, NetworkHelper

        helper = self._info().helper(**self.helper_kwargs)
        assert isinstance(helper, NetworkHelper)
        assert all(callable(getattr(helper, m, None)) for m in CALIBRATION_METHODS)

    def test_blocks_and_smoothing_groups_name_real_layers(self) -> None:
        if type(self).make_network is None:
            return
        from gscore.nn.linear_view import is_linear
        from gscore.nn.norms import is_foldable_norm
        from gscore.nn.walk import get_cell

        helper = self._info().helper(**self.helper_kwargs)
        network = type(self).make_network()
        helper.block_inputs(network, type(self).make_datasets())
        blocks = helper.blocks(network)
        assert blocks, "a network has at least one block"
        for _, block in blocks:
            for norm, members in helper.smooth_groups(block):
                assert members and all(is_linear(get_cell(block, m)) for m in members), members
                assert norm is None or is_foldable_norm(get_cell(block, norm)), norm

    def test_static_a8w8_smoothquant_calibrates_and_converts(self) -> None:
        if type(self).make_network is None:
            return
        from gscore.config import PTQConfig
        from gscore.nn.quant_linear import QuantLinear

        network = type(self).make_network()
        ptq = gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"progress": False}))
        ptq.convert(ptq.apply(network, self._info().helper(**self.helper_kwargs), datasets=type(self).make_datasets()))
        assert any(isinstance(cell, QuantLinear) for _, cell in network.cells_and_names())
