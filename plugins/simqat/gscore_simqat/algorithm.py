"""The SimQAT algorithm class (registered by path in :mod:`gscore_simqat`).

``apply(net)`` replaces every ``nn.Conv2d`` (and ``nn.Dense``, by default) with a
:class:`~gscore.nn.quant_layer.QuantLayer` whose weight is fake-quantized on each forward
(scales observed from the weight) and whose input goes through an EMA-observed activation
fake quantizer; Conv2d + BatchNorm2d pairs are folded (:mod:`gscore_simqat.bn_fold`). The
network then trains with ``mindspore.train.Model`` or a ``value_and_grad`` loop on CPU.

``convert(net)`` builds the deploy network in place: int8 (or ``weight_bits``) codes with
per-channel scales (:class:`~gscore.nn.quant_conv.Int8Weight`), fixed activation
quantizers, BatchNorm folded into weight and bias. The activation scales come from the same
compiled function the fake-quant network evaluates with
(:func:`gscore.nn.fake_quant.graph_params`), so both quantize to the same codes. With native
kernels each layer with quantized activations then runs as one integer operator (see
:mod:`gscore.nn.quant_layer`; outputs within float32 rounding of the fake-quant network's);
with ``GSCORE_KERNELS=portable`` the codes are dequantised and the outputs equal the
fake-quant network's in eval mode bit for bit.

Activation quantizers must have observed data (at least one training-mode forward) before
the network is evaluated or converted; otherwise both raise ``CalibrationDataError`` naming
them. To load a saved deploy checkpoint, build the structure on a float network and load it in
one call: ``algo.convert(algo.apply(net), ckpt_path=path)`` (the checkpoint supplies the ranges).
"""

from __future__ import annotations

from typing import Any

from mindspore import Parameter, Tensor, nn

from gscore import QATAlgorithm
from gscore.errors import NoQuantizableLayerError
from gscore.nn.fake_quant import ActivationFakeQuant, FakeQuantizedWeight, WeightFakeQuant, require_observed
from gscore.nn.quant_conv import ActivationQuantizer, Int8Weight
from gscore.nn.quant_layer import QuantLayer, find_layers, float_parts
from gscore.nn.walk import get_cell, iter_cells, replace_cell
from gscore.quant import quant_params
from gscore_simqat.bn_fold import ConvBnFold, conv_bn_pairs
from gscore_simqat.config import SimQATConfig

__all__ = ["SimQATConfig", "SimulatedQuantizationAwareTraining"]


class SimulatedQuantizationAwareTraining(QATAlgorithm):
    """SimQAT: fake-quantized training (int8 weights and activations by default), CPU deploy."""

    config_cls = SimQATConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.layers: dict[str, dict[str, Any]] = {}

    def _input_quant(self, layer: str) -> ActivationFakeQuant | None:
        scheme = self.config.act_scheme()
        if scheme is None:
            return None
        return ActivationFakeQuant(scheme, ema_decay=self.config.ema_decay, quant_delay=self.config.quant_delay, label=f"{layer}.input_quant")

    def quantize(self, network: nn.Cell) -> nn.Cell:
        """Insert fake quantization into every Conv2d/Dense not blacklisted (see module doc)."""
        cfg = self.config
        layers = find_layers(network, cfg.include_dense, cfg.opname_blacklist, algorithm="simqat")
        pairs = conv_bn_pairs(network, {n for n, c in layers if isinstance(c, nn.Conv2d)}) if cfg.bn_fold else {}
        for name, cell in layers:
            weight_quant = WeightFakeQuant(cfg.weight_scheme(), quant_delay=cfg.quant_delay)
            if name in pairs:
                bn = get_cell(network, pairs[name])
                replace_cell(network, pairs[name], nn.Identity())
                replace_cell(network, name, ConvBnFold(cell, bn, weight_quant, self._input_quant(name)))
            else:
                op, bias, activation = float_parts(cell)
                weight = FakeQuantizedWeight(cell.weight, weight_quant)
                replace_cell(network, name, QuantLayer(op, weight, bias, self._input_quant(name), activation))
        return network

    def deploy(self, network: nn.Cell) -> nn.Cell:
        """Replace every fake-quant layer by its deployed form with real integer weights."""
        found = list(iter_cells(network, lambda c: isinstance(c, ConvBnFold) or (isinstance(c, QuantLayer) and isinstance(c.weight_source, FakeQuantizedWeight))))
        if not found:
            raise NoQuantizableLayerError("simqat convert found no fake-quantized layer; run apply (and train) first")
        if not self.ranges_from_checkpoint:
            require_observed(network)
        self.layers = {}
        for name, layer in found:
            if isinstance(layer, ConvBnFold):
                w, b = layer.folded()
                scheme = layer.weight_quant.scheme
                bias = Parameter(Tensor(b), name="bias", requires_grad=False)
                activation = None
            else:
                w = layer.weight_source.weight.asnumpy()
                scheme = layer.weight_source.quantizer.scheme
                bias = layer.bias if layer.has_bias else None
                activation = layer.activation if layer.has_activation else None
            weight = Int8Weight.from_params(w, quant_params(w, scheme))
            input_quant = ActivationQuantizer.from_observer(layer.input_quant) if layer.has_input_quant else None
            replace_cell(network, name, QuantLayer(layer.op, weight, bias, input_quant, activation))
            self.layers[name] = _describe_layer(scheme, input_quant, folded=isinstance(layer, ConvBnFold))
        return network

    def describe(self, network: nn.Cell) -> dict[str, Any]:
        """What a deploy checkpoint says about itself: algorithm, config and per-layer schemes."""
        return {"algorithm": type(self).__name__, "config": self.config.to_dict(), "layers": dict(self.layers)}


def _describe_layer(scheme: Any, input_quant: ActivationQuantizer | None, folded: bool) -> dict[str, Any]:
    return {
        "kind": "weight+activation" if input_quant is not None else "weight",
        "dtype": "int8",
        "bits": scheme.bits,
        "granularity": scheme.granularity.value,
        "symmetric": scheme.symmetric,
        "narrow": scheme.narrow,
        "act_bits": input_quant.bits if input_quant is not None else None,
        "bn_folded": folded,
    }

