"""Golden Stick's RTN A16W8 checkpoint layout, read into and written from gscore DEPLOY networks.

mindspore-gs (1.4) wraps each quantized mindformers ``Linear``: the float layer becomes
``<layer>._handler`` beside ``<layer>._weight_quantizer``, so its A16W8 checkpoints hold

==================================  =========  =========================================
``<layer>._handler.weight``         int8       ``[out, in]`` (``transpose_b``) or ``[in, out]``
``<layer>._handler.bias``           float32    ``[out]``, when the layer has a bias
``<layer>._weight_quantizer.scale`` float16    ``[out]``: symmetric ``2·max|w|/255``, so codes reach −128
``<layer>._weight_quantizer.zp_neg`` float16   ``[out]``: zeros
==================================  =========  =========================================

and every other parameter under its float name. A gscore DEPLOY network keeps the weight and
bias on the layer itself (``<layer>.weight``, ``<layer>.bias``); the quantizer names and the
arithmetic ``(q + zp_neg) · scale`` are the same, so moving between the two is a renaming
plus a dtype cast of the scales, checked layer by layer:

* :func:`load_goldenstick` imports a Golden Stick file into a network built with RTN (or any
  weight-only per-channel int8 algorithm) in DEPLOY mode, strictly: every parameter filled,
  nothing left over; scales are widened exactly to the layer's compute dtype (float32 for
  ``nn.Dense``).
* :func:`save_goldenstick` exports such a network in Golden Stick's layout. Its scales must be
  float16 (mindformers ``Linear``, as Golden Stick quantizes) or exactly representable in it:
  rounding a float32 scale would change the weights, so that is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from gscore.errors import CheckpointMismatchError, ConfigError
from gscore.io.atomic import atomic_target
from gscore.io.checkpoint import load_parameters
from gscore.io.loaded import check_loaded
from gscore.nn.linear_view import ms_float_dtype_to_numpy
from gscore.nn.quant_linear import QuantLinear, is_group_quantizer
from gscore.nn.walk import iter_cells


def rtn_layers(network: nn.Cell) -> dict[str, QuantLinear]:
    """The deployed int8 layers of ``network`` by name; raises if one has no Golden Stick RTN form."""
    layers = dict(iter_cells(network, lambda c: isinstance(c, QuantLinear)))
    if not layers:
        raise CheckpointMismatchError(
            f"{type(network).__name__} has no deployed int8 linear layer: build it with RTN in DEPLOY mode "
            "(algo.apply(net); algo.convert(net)) before loading, or convert it in QUANTIZE mode before saving"
        )
    for name, cell in layers.items():
        wq = cell._weight_quantizer
        if is_group_quantizer(wq) or wq.bits != 8 or cell.has_input_quantizer or cell.has_smooth:
            raise CheckpointMismatchError(
                f"layer {name} is not weight-only int8 per output channel (it has {wq.bits}-bit "
                f"{'per-group' if is_group_quantizer(wq) else 'per-channel'} weights"
                f"{', an input quantizer' if cell.has_input_quantizer else ''}{', a smoothing scale' if cell.has_smooth else ''}); "
                "Golden Stick's RTN A16W8 layout holds only those"
            )
    return layers


def _renames(layers: dict[str, QuantLinear]) -> dict[str, str]:
    """gscore parameter name -> Golden Stick name, for the weights and biases that move."""
    renames = {}
    for name, cell in layers.items():
        renames[cell.weight.name] = f"{name}._handler.weight"
        if cell.has_bias:
            renames[cell.bias.name] = f"{name}._handler.bias"
    return renames


def _cast(value: np.ndarray, dtype: Any, what: str) -> Tensor:
    """``value`` in ``dtype`` (a numpy float type), refusing a cast that changes a number."""
    cast = value.astype(dtype)
    if not np.array_equal(cast.astype(value.dtype), value):
        raise CheckpointMismatchError(f"{what}: {value.dtype} values are not exactly representable in {np.dtype(dtype)}; casting would change the layer")
    return Tensor(cast)


def from_goldenstick(contents: dict[str, Any], network: nn.Cell, source: str) -> dict[str, Parameter]:
    """``contents`` of a Golden Stick file renamed and cast to fit ``network`` (not yet loaded)."""
    layers = rtn_layers(network)
    converted = dict(contents)
    problems = []
    for gscore_name, gs_name in _renames(layers).items():
        if gs_name in converted:
            converted[gscore_name] = converted.pop(gs_name)
        else:
            hint = " (the file holds gscore's own names: load it with gscore.io.load_checkpoint)" if gscore_name in contents else ""
            problems.append(f"missing {gs_name}{hint}")
    for name, cell in layers.items():
        wq = cell._weight_quantizer
        store = ms_float_dtype_to_numpy(wq.dtype)
        for field in ("scale", "zp_neg"):
            key = f"{name}._weight_quantizer.{field}"
            if key in converted:
                value = converted[key].asnumpy()
                converted[key] = Parameter(_cast(value, store, f"{source}: {key}"), name=key, requires_grad=False)
                if field == "zp_neg" and wq.symmetric and np.any(value != 0):
                    problems.append(f"{key} is not zero, but {name} is symmetric (Golden Stick's RTN is)")
    problems += [f"unexpected {key}: {key.split('._handler.')[0]} is not a deployed int8 layer of the network" for key in converted if "._handler." in key]
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit {type(network).__name__} as a Golden Stick RTN checkpoint: " + "; ".join(problems[:10]))
    return converted


def load_goldenstick(path: str | os.PathLike[str], network: nn.Cell) -> None:
    """Load a Golden Stick RTN A16W8 checkpoint into a gscore DEPLOY ``network``, strictly."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    source = f"checkpoint {str(path)!r}"
    load_parameters(from_goldenstick(ms.load_checkpoint(str(path)), network, source), network, source)


def save_goldenstick(network: nn.Cell, path: str | os.PathLike[str]) -> Path:
    """Write ``network`` (weight-only int8 per channel, converted or loaded) in Golden Stick's layout, atomically."""
    path = Path(path)
    if path.suffix != ".ckpt":
        raise ConfigError(f"checkpoint path must end in .ckpt (MindSpore appends it otherwise), got {str(path)!r}")
    layers = rtn_layers(network)
    check_loaded(network)  # NaN placeholders of a network never loaded must not be written out
    renames = _renames(layers)
    scales = {f"{name}._weight_quantizer.{field}" for name in layers for field in ("scale", "zp_neg")}
    entries = []
    for param in network.get_parameters():
        data = _cast(param.asnumpy(), np.float16, f"{param.name} (Golden Stick stores float16 scales)") if param.name in scales else param
        entries.append({"name": renames.get(param.name, param.name), "data": data})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(Path(path)) as tmp:
        ms.save_checkpoint(entries, str(tmp))
    return path
