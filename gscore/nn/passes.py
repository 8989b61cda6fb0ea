"""Network passes that swap linear layers between float, simulated and deployed forms.

Shared by every quantization algorithm: :func:`find_linears` picks the layers,
:func:`simulated_linear` builds a layer's simulated form from its float weight,
:func:`quantize_network` turns every simulated layer into its integer form, and
:func:`deployed_linear` builds the integer form with placeholders for ``load_checkpoint``.

The placeholders' weight scales and biases are NaN (and the int8 codes zero): a layer whose
scale or bias no checkpoint filled outputs NaN, and so does everything after it, instead of a
plausible-looking result. That is what makes a plain ``mindspore.load_checkpoint`` of a file
whose names do not match (it only logs a warning) hard to miss: a Golden Stick file, whose
scales share gscore's names but whose weight and bias do not, leaves zero codes and a NaN
bias. ``gscore.io.check_loaded`` names every such layer (NaN, or int8 codes all zero, which
no real layer has). Nothing is checked in the forward pass, so it costs nothing at run time.

Weight scales are stored in the layer's compute dtype (float16 for mindformers ``Linear``,
as Golden Stick stores them) and the integers are computed with exactly that stored scale,
so the deployed weight ``(q + zp_neg) * scale`` is what the simulated network used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mindspore import Tensor, nn

from gscore.errors import ConfigError, NoQuantizableLayerError, NonFiniteValueError
from gscore.nn.linear_view import LinearView, is_linear, linear_view, ms_float_dtype_to_numpy
from gscore.nn.quant_linear import QuantLinear, SimQuantLinear, is_group_quantizer, quantizers_of, view_of
from gscore.nn.quantizers import GroupWeightQuantizer, WeightQuantizer
from gscore.nn.walk import iter_cells, matches_blacklist, replace_cell, warn_unmatched_blacklist
from gscore.quant import Granularity, QuantParams, QuantScheme, pack_int4, quant_params, quantize, round_scale
from gscore.quant.weights import pad_to_groups


@dataclass(frozen=True)
class WeightSpec:
    """How one layer's weight is quantized: 8-bit per channel symmetric, or per group."""

    bits: int = 8
    group_size: int = 0
    symmetric: bool = True

    def scheme(self, view: LinearView) -> QuantScheme:
        if self.group_size:
            if not view.transpose_b:
                raise ConfigError("per-group weight quantization needs an [out, in] weight (transpose_b=True)")
            return QuantScheme(bits=self.bits, symmetric=self.symmetric, granularity=Granularity.PER_GROUP, group_size=self.group_size)
        return QuantScheme(bits=self.bits, symmetric=self.symmetric, granularity=Granularity.PER_CHANNEL, axis=view.out_axis)


def find_linears(network: nn.Cell, blacklist: list[str]) -> list[tuple[str, nn.Cell]]:
    """Linear layers (``nn.Dense``, mindformers ``Linear``) not excluded by ``blacklist``."""
    found = list(iter_cells(network, is_linear))
    warn_unmatched_blacklist([name for name, _ in found], blacklist)
    kept = [(name, cell) for name, cell in found if not matches_blacklist(name, blacklist)]
    if not kept:
        raise NoQuantizableLayerError(
            f"found no layer to quantize in {type(network).__name__}: it has {len(found)} linear layer(s) "
            f"(nn.Dense or mindformers Linear) and opname_blacklist={blacklist!r} excluded {len(found) - len(kept)}"
        )
    return kept


def _weight_quantizer(params: QuantParams, view: LinearView, spec: WeightSpec) -> WeightQuantizer:
    store = ms_float_dtype_to_numpy(view.compute_dtype)
    scale = params.flat_scale().astype(store)
    zp_neg = (-params.flat_zero_point()).astype(store)
    scheme = params.scheme
    if spec.group_size:
        return GroupWeightQuantizer(scale, zp_neg, view.compute_dtype, spec.group_size, scheme.qmin, scheme.qmax, spec.symmetric)
    return WeightQuantizer(scale, zp_neg, view.compute_dtype, view.out_axis, scheme.qmin, scheme.qmax, spec.symmetric)


def padded_to_groups(weight: np.ndarray, spec: WeightSpec) -> np.ndarray:
    """``weight [out, in]`` with zero columns appended up to whole groups (no copy if none needed).

    A short last group then has its own scale over its real columns plus zeros, which the
    asymmetric range includes anyway."""
    return pad_to_groups(weight, spec.group_size)


def stored_params(weight: np.ndarray, view: LinearView, spec: WeightSpec) -> QuantParams:
    """Params of ``weight`` whose scale is rounded to the dtype it is stored in, so the
    integers are computed with the stored value (tiny scales are raised to that dtype's
    smallest normal number)."""
    return round_scale(quant_params(padded_to_groups(weight, spec), spec.scheme(view)), ms_float_dtype_to_numpy(view.compute_dtype))


def simulated_linear(
    view: LinearView,
    spec: WeightSpec,
    weight: np.ndarray | None = None,
    input_quantizer: nn.Cell | None = None,
    smooth_scale: np.ndarray | None = None,
    params: QuantParams | None = None,
) -> SimQuantLinear:
    """The simulated form of ``view``; ``weight`` overrides its float weight (e.g. smoothed).

    ``params`` (the layout :func:`stored_params` gives, scales already in the stored dtype)
    replace the params observed from the weight: an algorithm that chose the integer codes
    itself (GPTQ) passes its params with the dequantized weight, whose re-quantization then
    gives exactly its codes.
    """
    if weight is not None:
        view.weight.set_data(Tensor(np.ascontiguousarray(weight, dtype=np.float32)))
    if params is None:
        params = stored_params(view.weight.asnumpy(), view, spec)
    return SimQuantLinear(view, _weight_quantizer(params, view, spec), input_quantizer, smooth_scale)


def _integer_weight(cell: SimQuantLinear) -> np.ndarray:
    """The int8 storage of a simulated layer's weight, from its stored scales."""
    wq, view = cell._weight_quantizer, view_of(cell)
    weight = view.weight.asnumpy()
    zero_point = -wq.zp_neg.asnumpy().astype(np.float32)
    grouped = is_group_quantizer(wq)
    spec = WeightSpec(bits=wq.bits, group_size=wq.group_size if grouped else 0, symmetric=wq.symmetric)
    if grouped:
        shape = (weight.shape[0], -(-weight.shape[1] // wq.group_size), 1)
    else:
        shape = (-1, 1) if view.out_axis == 0 else (1, -1)
    params = QuantParams(scale=wq.scale.asnumpy().astype(np.float32).reshape(shape), zero_point=zero_point.reshape(shape), scheme=spec.scheme(view))
    q = quantize(padded_to_groups(weight, spec), params)[:, : weight.shape[1]].astype(np.int8, copy=False)
    return pack_int4(q) if grouped and wq.bits == 4 else q


def quantize_network(network: nn.Cell) -> list[str]:
    """Replace every simulated layer by its integer form; returns the layer names."""
    names = []
    for name, cell in iter_cells(network, lambda c: isinstance(c, SimQuantLinear)):
        wq, iq, smooth = quantizers_of(cell)
        replace_cell(network, name, QuantLinear(view_of(cell), wq, _integer_weight(cell), iq, smooth))
        names.append(name)
    if not names:
        raise NoQuantizableLayerError("convert found no calibrated layer: run apply(network) in QUANTIZE mode before convert(network)")
    return names


def deployed_linear(view: LinearView, spec: WeightSpec, input_quantizer: nn.Cell | None = None, smooth: bool = False) -> QuantLinear:
    """The integer form of ``view`` with placeholders (zero codes, NaN scales and bias) to load a checkpoint into."""
    out, inp = view.out_channels, view.in_channels
    scheme = spec.scheme(view)
    groups = (out, -(-inp // spec.group_size), 1) if spec.group_size else ((out, 1) if view.out_axis == 0 else (1, out))
    params = QuantParams(scale=np.ones(groups, np.float32), zero_point=np.zeros(groups, np.float32), scheme=scheme)
    quantizer = _weight_quantizer(params, view, spec)
    for placeholder in (quantizer.scale, view.bias) if view.bias is not None else (quantizer.scale,):
        placeholder.set_data(Tensor(np.full(placeholder.shape, np.nan, np.float32), placeholder.dtype))
    packed = spec.group_size and spec.bits == 4
    stored = np.zeros((view.weight.shape[0], view.weight.shape[1] // 2) if packed else view.weight.shape, np.int8)
    smooth_scale = np.full(inp, np.nan, np.float32) if smooth else None
    return QuantLinear(view, quantizer, stored, input_quantizer, smooth_scale)


def calibrate_weights(network: nn.Cell, blacklist: list[str], spec: WeightSpec = WeightSpec()) -> list[str]:
    """Weight-only calibration: every linear layer becomes simulated, scales from its weight.

    Every layer's scales are computed before the first layer is replaced, so a weight that
    cannot be quantized (NaN) fails the call with the network untouched."""
    simulated = []
    for name, cell in find_linears(network, blacklist):
        try:
            simulated.append((name, simulated_linear(linear_view(cell), spec)))
        except NonFiniteValueError as exc:
            raise NonFiniteValueError(f"the weight of layer {name!r}: {exc}") from exc
    for name, cell in simulated:
        replace_cell(network, name, cell)
    return [name for name, _ in simulated]


def deploy_weights(network: nn.Cell, blacklist: list[str], spec: WeightSpec = WeightSpec()) -> list[str]:
    """Weight-only deploy structure: every linear layer becomes an integer placeholder."""
    names = []
    for name, cell in find_linears(network, blacklist):
        replace_cell(network, name, deployed_linear(linear_view(cell), spec))
        names.append(name)
    return names


def describe_linears(network: nn.Cell) -> dict[str, dict[str, object]]:
    """Per-layer quantization facts for the checkpoint description, keyed by layer name."""
    layers = {}
    for name, cell in iter_cells(network, lambda c: isinstance(c, (QuantLinear, SimQuantLinear))):
        wq, iq, _ = quantizers_of(cell)
        group = is_group_quantizer(wq)
        layers[name] = {
            "kind": "weight" if iq is None else "weight+input",
            "dtype": "int8" if wq.bits == 8 else f"int{wq.bits}",
            "bits": wq.bits,
            "granularity": Granularity.PER_GROUP.value if group else Granularity.PER_CHANNEL.value,
            "axis": 0 if cell.transpose_b else 1,
            "symmetric": wq.symmetric,
            "scale_dtype": str(wq.dtype),
        }
        if group:
            layers[name]["group_size"] = wq.group_size
            layers[name]["packed"] = wq.bits == 4
        if iq is not None:
            layers[name]["input"] = type(iq).__name__
            layers[name]["smooth_scale"] = cell.has_smooth
    return layers


def require_kv_caches(network: nn.Cell, algorithm: str) -> None:
    """Raise NoQuantizableLayerError unless ``network`` holds a float gscore KV cache to quantize."""
    from gscore.nn.kv_cache import FloatKVCache

    if not any(True for _ in iter_cells(network, lambda c: type(c) is FloatKVCache)):
        raise NoQuantizableLayerError(
            f"{algorithm}: kvcache_quant_dtype is set but {type(network).__name__} has no gscore KV cache "
            "(gscore.nn.kv_cache.FloatKVCache) to quantize; leave kvcache_quant_dtype None for this network"
        )


def dynamic_kv_caches(network: nn.Cell) -> list[str]:
    """Swap every float KV cache for a dynamic per-token int8 cache (no calibration needed)."""
    from gscore.nn.kv_cache import DynamicInt8KVCache, FloatKVCache

    names = []
    for name, cache in list(iter_cells(network, lambda c: type(c) is FloatKVCache)):
        replace_cell(network, name, DynamicInt8KVCache(cache.num_heads, cache.head_dim))
        names.append(name)
    return names
