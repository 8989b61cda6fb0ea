"""Quantization math in plain numpy: schemes, parameters, (fake) quantization, int4 packing.

Framework-free on purpose (never imports MindSpore), so it can be tested fast and reused by
every algorithm plugin. Start with :class:`QuantScheme`, then :func:`quant_params` and
:func:`quantize` / :func:`dequantize`, or :func:`fake_quantize` for the round trip.
"""

from gscore.quant.core import dequantize, fake_quantize, quantize
from gscore.quant.pack import pack_int4, unpack_int4
from gscore.quant.params import QuantParams, compute_params, observe_minmax, quant_params
from gscore.quant.scheme import Granularity, QuantScheme, qrange

__all__ = [
    "Granularity",
    "QuantParams",
    "QuantScheme",
    "compute_params",
    "dequantize",
    "fake_quantize",
    "observe_minmax",
    "pack_int4",
    "qrange",
    "quant_params",
    "quantize",
    "unpack_int4",
]
