"""The SLB algorithm class (registered by path in :mod:`gscore_slb`).

``apply(net)`` replaces every ``nn.Conv2d`` and ``nn.Dense`` (``include_dense=False``: Conv2d
only, with a warning giving the share of weights left in float) by a
:class:`~gscore.nn.quant_layer.QuantLayer` whose weight is an SLB search over ``2**bits``
values (:mod:`gscore_slb.search`), initialised from the network's own float weights by
default, with optional 8-bit activation fake quantization. Train it while a
:class:`~gscore_slb.schedule.TemperatureSchedule` raises the temperature:
``schedule = algo.schedule(total_steps)`` then ``schedule.step(net)`` per step, or
``Model.train(..., callbacks=algo.callbacks(net, total_steps))``.

``convert(net)`` gives the deploy network: each weight becomes a
:class:`~gscore.nn.quant_conv.PackedWeight` (argmax codes packed 8, 4 or 2 per byte, the
level table and per-channel scales), activations fixed quantizers. It reproduces the hard
(argmax) training network exactly: same level values, same scale products. With 8-bit
activations, convert refuses quantizers that never observed data (``CalibrationDataError``
naming them) unless a checkpoint supplies them (``convert(apply(net), ckpt_path=...)``).
"""

from __future__ import annotations

import warnings
from typing import Any

from mindspore import nn

from gscore import QATAlgorithm
from gscore.errors import NoQuantizableLayerError
from gscore.nn.fake_quant import ActivationFakeQuant, require_observed
from gscore.nn.quant_conv import ActivationQuantizer, PackedWeight
from gscore.nn.quant_layer import QuantLayer, find_layers, float_parts, iter_quant_layers
from gscore.nn.walk import replace_cell
from gscore_slb.config import SLBConfig
from gscore_slb.schedule import TemperatureCallback, TemperatureSchedule
from gscore_slb.search import SlbWeight, init_from_weights, init_random

__all__ = ["SLBConfig", "SlbQuantAwareTraining", "TemperatureCallback", "TemperatureSchedule"]


class SlbQuantAwareTraining(QATAlgorithm):
    """SLB: search 1/2/4-bit weights by training; deploy with bit-packed weights on CPU."""

    config_cls = SLBConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.layers: dict[str, dict[str, Any]] = {}

    def quantize(self, network: nn.Cell) -> nn.Cell:
        """Put an SLB weight search (and input fake quantization if asked) into every layer."""
        cfg = self.config
        layers = find_layers(network, cfg.include_dense, cfg.opname_blacklist, algorithm="slb")
        if not cfg.include_dense:
            _warn_float_dense(network, cfg.opname_blacklist)
        act_scheme = cfg.act_scheme()
        for index, (name, cell) in enumerate(layers):
            w = cell.weight.asnumpy()
            if cfg.init_from_pretrained:
                logits, alpha = init_from_weights(w, cfg.weight_bits)
            else:
                logits, alpha = init_random(w.shape, cfg.weight_bits, seed=index)
            input_quant = None
            if act_scheme is not None:
                input_quant = ActivationFakeQuant(act_scheme, ema_decay=cfg.ema_decay, quant_delay=cfg.act_quant_delay, label=f"{name}.input_quant")
            op, bias, activation = float_parts(cell)
            weight = SlbWeight(logits, alpha, cfg.weight_bits, cfg.t_start)
            replace_cell(network, name, QuantLayer(op, weight, bias, input_quant, activation))
        return network

    def schedule(self, total_steps: int) -> TemperatureSchedule:
        """The temperature schedule of this config over a run of ``total_steps`` optimizer steps."""
        return TemperatureSchedule(self.config, total_steps)

    def callbacks(self, network: nn.Cell, total_steps: int) -> list[TemperatureCallback]:
        """Callbacks for ``mindspore.train.Model.train`` that drive the temperature per step."""
        return [TemperatureCallback(self.schedule(total_steps), network)]

    def deploy(self, network: nn.Cell) -> nn.Cell:
        """Replace every SLB layer by its deployed form with bit-packed weights."""
        found = list(iter_quant_layers(network, SlbWeight))
        if not found:
            raise NoQuantizableLayerError("slb convert found no SLB layer; run apply (and train) first")
        if not self.ranges_from_checkpoint:
            require_observed(network)
        self.layers = {}
        for name, layer in found:
            codes, values, alpha = layer.weight_source.hard_parts()
            bits = layer.weight_source.bits
            weight = PackedWeight(codes, values, alpha, bits)
            input_quant = ActivationQuantizer.from_observer(layer.input_quant) if layer.has_input_quant else None
            bias = layer.bias if layer.has_bias else None
            activation = layer.activation if layer.has_activation else None
            replace_cell(network, name, QuantLayer(layer.op, weight, bias, input_quant, activation))
            self.layers[name] = {
                "kind": "weight+activation" if input_quant is not None else "weight",
                "dtype": f"uint{bits}-packed",
                "bits": bits,
                "levels": values.tolist(),
                "granularity": "per_channel",
                "act_bits": input_quant.bits if input_quant is not None else None,
            }
        return network

    def describe(self, network: nn.Cell) -> dict[str, Any]:
        """What a deploy checkpoint says about itself: algorithm, config and per-layer storage."""
        return {"algorithm": type(self).__name__, "config": self.config.to_dict(), "layers": dict(self.layers)}



def _warn_float_dense(network: nn.Cell, blacklist: list[str]) -> None:
    """Warn with the share of Conv2d/Dense weights that ``include_dense=False`` leaves in float."""
    from gscore.nn.walk import matches_blacklist

    layers = [(name, cell) for name, cell in network.cells_and_names() if isinstance(cell, (nn.Conv2d, nn.Dense))]
    dense = [(name, cell) for name, cell in layers if isinstance(cell, nn.Dense) and not matches_blacklist(name, blacklist)]
    if dense:
        share = sum(int(c.weight.size) for _, c in dense) / sum(int(c.weight.size) for _, c in layers)
        warnings.warn(
            f"slb: include_dense=False leaves {share:.1%} of the Conv2d/Dense weights in float ({', '.join(n for n, _ in dense)}); "
            "set include_dense=True (the default) to search them too",
            UserWarning,
            stacklevel=2,
        )
