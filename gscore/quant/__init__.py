"""Quantization math in plain numpy: schemes, parameters, (fake) quantization, int4 packing,
and the precision-recovery math (GPTQ, AWQ scales and clipping, Hadamard rotations).

Framework-free on purpose (never imports MindSpore), so it can be tested fast and reused by
every algorithm plugin. Start with :class:`QuantScheme`, then :func:`quant_params` and
:func:`quantize` / :func:`dequantize`, or :func:`fake_quantize` for the round trip.
"""

from gscore.quant.awq import DEFAULT_CLIP_RATIOS, ClipResult, awq_scales, awq_weight_mean, scaled_fake_quantize, search_weight_clip
from gscore.quant.core import dequantize, fake_quantize, quantize
from gscore.quant.gptq import GPTQDiagnostics, GPTQResult, gptq_quantize
from gscore.quant.pack import pack_int4, unpack_int4
from gscore.quant.params import QuantParams, compute_params, observe_minmax, quant_params
from gscore.quant.rotation import (
    FactoredHadamard,
    factored_hadamard,
    hadamard,
    is_hadamard_size,
    random_orthogonal,
    random_signs,
    randomized_hadamard,
)
from gscore.quant.scheme import Granularity, QuantScheme, qrange
from gscore.quant.stats import AbsMeanAccumulator, HessianAccumulator
from gscore.quant.stored import round_scale

__all__ = [
    "DEFAULT_CLIP_RATIOS",
    "AbsMeanAccumulator",
    "ClipResult",
    "FactoredHadamard",
    "GPTQDiagnostics",
    "GPTQResult",
    "Granularity",
    "HessianAccumulator",
    "QuantParams",
    "QuantScheme",
    "awq_scales",
    "awq_weight_mean",
    "compute_params",
    "dequantize",
    "factored_hadamard",
    "fake_quantize",
    "gptq_quantize",
    "hadamard",
    "is_hadamard_size",
    "observe_minmax",
    "pack_int4",
    "qrange",
    "quant_params",
    "quantize",
    "random_orthogonal",
    "random_signs",
    "randomized_hadamard",
    "round_scale",
    "scaled_fake_quantize",
    "search_weight_clip",
    "unpack_int4",
]
