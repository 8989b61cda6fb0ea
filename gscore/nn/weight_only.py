"""Weight-only quantization passes over a network, shared by every algorithm that needs them.

The three passes match the phases: :func:`calibrate_weights` swaps each linear layer for a
:class:`~gscore.nn.quant_linear.SimQuantLinear` whose scales come straight from the weights
(round-to-nearest needs no data); :func:`quantize_weights` turns those into int8
:class:`~gscore.nn.quant_linear.QuantLinear` cells; :func:`deploy_weights` builds the same int8
structure with placeholder values for ``load_checkpoint``.

Scales are stored in the layer's compute dtype (float16 for mindformers ``Linear``, as
Golden Stick stores them) and the integers are computed with exactly that stored scale, so
the deployed weight ``q * scale`` is what the simulated network used.
"""

from __future__ import annotations

import numpy as np
from mindspore import nn

from gscore.errors import NoQuantizableLayerError
from gscore.nn.linear_view import LinearView, is_linear, linear_view, ms_float_dtype_to_numpy
from gscore.nn.quant_linear import QuantLinear, SimQuantLinear, WeightQuantizer, view_of
from gscore.nn.walk import iter_cells, matches_blacklist, replace_cell
from gscore.quant import Granularity, QuantParams, QuantScheme, quant_params, quantize


def weight_scheme(view: LinearView, bits: int = 8) -> QuantScheme:
    """Symmetric signed per-output-channel scheme for ``view``'s weight."""
    return QuantScheme(bits=bits, symmetric=True, signed=True, granularity=Granularity.PER_CHANNEL, axis=view.out_axis)


def find_linears(network: nn.Cell, blacklist: list[str]) -> list[tuple[str, nn.Cell]]:
    """Linear layers (``nn.Dense``, mindformers ``Linear``) not excluded by ``blacklist``."""
    found = list(iter_cells(network, is_linear))
    kept = [(name, cell) for name, cell in found if not matches_blacklist(name, blacklist)]
    if not kept:
        raise NoQuantizableLayerError(
            f"found no layer to quantize in {type(network).__name__}: it has {len(found)} linear layer(s) "
            f"(nn.Dense or mindformers Linear) and opname_blacklist={blacklist!r} excluded "
            f"{len(found) - len(kept)}"
        )
    return kept


def _stored_params(weight: np.ndarray, scheme: QuantScheme, store_dtype: type) -> QuantParams:
    """Params whose scale is rounded to the dtype it is stored in, so q is computed with it."""
    params = quant_params(weight, scheme)
    tiny = np.finfo(store_dtype).tiny
    scale = np.maximum(params.scale.astype(store_dtype), tiny).astype(np.float32)
    return QuantParams(scale=scale, zero_point=params.zero_point, scheme=scheme)


def _quantizer(params: QuantParams, view: LinearView, store_dtype: type) -> WeightQuantizer:
    return WeightQuantizer(
        scale=params.scale.reshape(-1).astype(store_dtype),
        zp_neg=(-params.zero_point).reshape(-1).astype(store_dtype),
        dtype=view.compute_dtype,
        out_axis=view.out_axis,
        qmin=params.scheme.qmin,
        qmax=params.scheme.qmax,
    )


def calibrate_weights(network: nn.Cell, blacklist: list[str], bits: int = 8) -> list[str]:
    """Replace every linear layer by its simulated form; returns the replaced layer names."""
    names = []
    for name, cell in find_linears(network, blacklist):
        view = linear_view(cell)
        store = ms_float_dtype_to_numpy(view.compute_dtype)
        params = _stored_params(view.weight.asnumpy(), weight_scheme(view, bits), store)
        replace_cell(network, name, SimQuantLinear(view, _quantizer(params, view, store)))
        names.append(name)
    return names


def quantize_weights(network: nn.Cell) -> list[str]:
    """Replace every simulated layer by its int8 form, rounding with the stored scales."""
    names = []
    for name, cell in iter_cells(network, lambda c: isinstance(c, SimQuantLinear)):
        view = view_of(cell)
        wq = cell._weight_quantizer
        scheme = weight_scheme(view, bits=int(np.log2(wq.qmax - wq.qmin + 1)))
        keep = [-1, 1] if view.out_axis == 0 else [1, -1]
        params = QuantParams(
            scale=wq.scale.asnumpy().astype(np.float32).reshape(keep),
            zero_point=-wq.zp_neg.asnumpy().astype(np.float32).reshape(keep),
            scheme=scheme,
        )
        q = quantize(view.weight.asnumpy(), params).astype(np.int8, copy=False)
        replace_cell(network, name, QuantLinear(view, wq, q))
        names.append(name)
    if not names:
        raise NoQuantizableLayerError(
            "convert found no calibrated layer: run apply(network) in QUANTIZE mode before convert(network)"
        )
    return names


def deploy_weights(network: nn.Cell, blacklist: list[str], bits: int = 8) -> list[str]:
    """Build the int8 structure with placeholders (zeros, scale 1) for ``load_checkpoint``."""
    names = []
    for name, cell in find_linears(network, blacklist):
        view = linear_view(cell)
        store = ms_float_dtype_to_numpy(view.compute_dtype)
        out = view.out_channels
        scheme = weight_scheme(view, bits)
        params = QuantParams(scale=np.ones((out,), np.float32), zero_point=np.zeros((out,), np.float32), scheme=scheme)
        q = np.zeros(view.weight.shape, np.int8)
        replace_cell(network, name, QuantLinear(view, _quantizer(params, view, store), q))
        names.append(name)
    return names


def describe_weights(network: nn.Cell) -> dict[str, dict[str, object]]:
    """Per-layer quantization facts for the checkpoint description, keyed by layer name."""
    layers = {}
    for name, cell in iter_cells(network, lambda c: isinstance(c, (QuantLinear, SimQuantLinear))):
        wq = cell._weight_quantizer
        layers[name] = {
            "kind": "weight",
            "dtype": "int8",
            "bits": int(np.log2(wq.qmax - wq.qmin + 1)),
            "granularity": Granularity.PER_CHANNEL.value,
            "axis": 0 if cell.transpose_b else 1,
            "symmetric": bool(np.all(wq.zp_neg.asnumpy() == 0)),
            "scale_dtype": str(wq.dtype),
        }
    return layers
