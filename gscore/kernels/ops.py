"""The native kernels as MindSpore operators (AOT custom operators, CPU).

:func:`primitive` returns one ``ops.Custom`` per (kernel, level), created once and shared by
every cell; a cell keeps the primitive it got when it was built, so a network is compiled
(graph mode) or run (PyNative) with the level that was active then. Inputs are passed as they
are stored: int8 weights untouched, scales in float32 or float16; the output has the dtype of
the activations. Shapes follow the C++ entry points in ``csrc/entry.cc``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import mindspore as ms
from mindspore import ops

from gscore.kernels import PORTABLE, KernelError, level
from gscore.kernels.build import library


def _linear_shape(x: list[int], q: list[int], *_: Any) -> list[int]:
    return [*x[:-1], q[0]]


def _attention_shape(q: list[int], *_: Any) -> list[int]:
    if len(q) == 2:  # token rows [batch * tokens, heads * head_dim] in, the same out
        return list(q)
    batch, heads, tokens, head_dim = q
    return [batch, tokens, heads * head_dim]


def _like_first(first: Any, *_: Any) -> Any:
    return first


def _like_second(_: Any, second: Any, *__: Any) -> Any:
    return second


def _float32(*_: Any) -> Any:
    return ms.float32


def _fake_quant_bprop(at: str) -> Callable[..., tuple]:
    """Straight-through backward of ``fake_quant``: the gradient passes where the input
    quantizes without clipping; scale, zero point and bounds get none."""
    grad = primitive("fake_quant_grad", at)

    def bprop(x: Any, scale: Any, zero_point: Any, bounds: Any, out: Any, dout: Any) -> tuple:
        return grad(x, scale, zero_point, bounds, dout), ops.zeros_like(scale), ops.zeros_like(zero_point), ops.zeros_like(bounds)

    return bprop


# kernel name: (output shape from input shapes, output dtype from input dtypes)
KERNELS: dict[str, tuple[Callable[..., list[int]], Callable[..., Any]]] = {
    "w8_linear": (_linear_shape, _like_first),
    "w4_linear": (_linear_shape, _like_first),
    "f32_linear": (_linear_shape, _like_first),
    "a8w8_static_linear": (_linear_shape, _like_first),
    "a8w8_dynamic_linear": (_linear_shape, _like_first),
    "a8w4_static_linear": (_linear_shape, _like_first),
    "a8w4_dynamic_linear": (_linear_shape, _like_first),
    "attention_float": (_attention_shape, _float32),
    "attention_channel": (_attention_shape, _float32),
    "attention_token": (_attention_shape, _float32),
    "cache_attention_float": (_attention_shape, _float32),
    "cache_attention_channel": (_attention_shape, _float32),
    "cache_attention_token": (_attention_shape, _float32),
    "decoder_layer": (_like_second, _float32),
    "rms_norm": (_like_first, _like_first),
    "rotary": (_like_first, _like_first),
    "silu_mul": (_like_first, _like_first),
    "add": (_like_first, _like_first),
    "hadamard": (_like_first, _like_first),
    "fake_quant": (_like_first, _like_first),
    "fake_quant_grad": (_like_first, _like_first),
    "static_act_fake_quant": (_like_first, _like_first),
    "minmax": (lambda x: [2], _like_first),
    "channel_minmax": (lambda x: [x[0], 2], _like_first),
}

def _no_gradient_bprop(at: str) -> Callable[..., tuple]:
    """No gradient to any input: what MindSpore's ops give through a rounding followed by a cast
    to int8 (``StaticInputQuantizer.fake_quantize``)."""

    def bprop(x: Any, scale: Any, zero_point: Any, bounds: Any, out: Any, dout: Any) -> tuple:
        return ops.zeros_like(x), ops.zeros_like(scale), ops.zeros_like(zero_point), ops.zeros_like(bounds)

    return bprop


BPROPS: dict[str, Callable[[str], Callable[..., tuple]]] = {"fake_quant": _fake_quant_bprop, "static_act_fake_quant": _no_gradient_bprop}

_primitives: dict[tuple[str, str, str], ops.Custom] = {}
_built_from: Path | None = None


def _check_white_list(path: str) -> None:
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed and not os.path.realpath(path).startswith(os.path.realpath(allowed)):
        raise KernelError(
            f"MS_CUSTOM_AOT_WHITE_LIST={allowed} does not contain the kernel cache ({path}); "
            "add the cache to it, point GSCORE_CACHE inside it, or set GSCORE_KERNELS=portable"
        )


def _library_path(at: str) -> str:
    path = str(_built_from or library(at))
    _check_white_list(path)
    return path


@contextmanager
def built_from(path: Path) -> Iterator[None]:
    """Operators created inside the block call the kernels of the library at ``path`` (built
    for the active level by :func:`gscore.kernels.build.compile_library`, e.g. from an older
    revision's sources) instead of this tree's: ``bench/decode_fusion.py --baseline`` races a
    network deployed on each in one process."""
    global _built_from
    previous = _built_from
    _built_from = Path(path)
    try:
        yield
    finally:
        _built_from = previous


def primitive(name: str, at: str | None = None) -> ops.Custom | None:
    """The operator for kernel ``name`` at level ``at`` (default: the active level);
    None when that level is ``portable`` (the caller then uses MindSpore ops)."""
    if name not in KERNELS:
        raise KernelError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    at = at or level()
    if at == PORTABLE:
        return None
    key = (name, at, str(_built_from))
    if key not in _primitives:
        shape, dtype = KERNELS[name]
        bprop = BPROPS[name](at) if name in BPROPS else None
        _primitives[key] = ops.Custom(f"{_library_path(at)}:gsk_{name}", out_shape=shape, out_dtype=dtype, func_type="aot", bprop=bprop)
    return _primitives[key]


# ``gsk_int8_layer``'s meta (csrc/entry.cc, Int8LayerMeta): kind (0 dense, 1 conv), activation
# code range, then the convolution's stride, dilation, 'same' flag and pads
INT8_LAYER_META = ("kind", "qmin", "qmax", "stride_h", "stride_w", "dil_h", "dil_w", "same", "pad_top", "pad_bottom", "pad_left", "pad_right")


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, same: bool, pad_before: int, pad_after: int) -> int:
    """One spatial axis of a convolution's output, as ``gsk_int8_layer`` and MindSpore's
    Conv2D compute it ('same': ``ceil(size / stride)``; otherwise from the explicit pads)."""
    if same:
        return -(-size // stride)
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def int8_layer_primitive(meta: tuple[int, ...], at: str | None = None) -> ops.Custom | None:
    """The ``gsk_int8_layer`` operator for ``meta`` (:data:`INT8_LAYER_META`) at level ``at``;
    None at ``portable``. Its output shape follows from the meta: ``[.., O]`` for a Dense
    layer, ``[B, O, HO, WO]`` for a convolution."""
    at = at or level()
    if at == PORTABLE:
        return None
    if len(meta) != len(INT8_LAYER_META):
        raise KernelError(f"gsk_int8_layer takes a meta of {len(INT8_LAYER_META)} values ({', '.join(INT8_LAYER_META)}), got {len(meta)}")
    key = (f"int8_layer{meta}", at, str(_built_from))
    if key not in _primitives:
        kind, _, _, sh, sw, dh, dw, same, top, bottom, left, right = meta

        def shape(x: list[int], q: list[int], *_: Any) -> list[int]:
            if kind == 0:
                return [*x[:-1], q[0]]
            return [x[0], q[0], conv_output_size(x[2], q[2], sh, dh, bool(same), top, bottom), conv_output_size(x[3], q[3], sw, dw, bool(same), left, right)]

        custom = ops.Custom(f"{_library_path(at)}:gsk_int8_layer", out_shape=shape, out_dtype=_float32, func_type="aot")
        # MindSpore reuses an operator's inferred output shape for the same input shapes across
        # instances of one kernel: without the meta among its attributes, a stride-2 layer took
        # the output shape of a stride-1 layer with the same inputs
        custom.add_prim_attr("gsk_meta", str(meta))
        _primitives[key] = custom
    return _primitives[key]


def unpack_levels_primitive(shape: tuple[int, ...], at: str | None = None) -> ops.Custom | None:
    """The ``gsk_unpack_levels`` operator giving int8 weights of ``shape`` (``[O, ...]``) from
    packed 1/2/4-bit codes ``[O, B]`` and their ``2**bits`` levels: ``rint(levels[code] * (2**bits - 1))``,
    SLB's levels as odd integers (:class:`gscore.nn.quant_conv.PackedWeight`); None at ``portable``."""
    at = at or level()
    if at == PORTABLE:
        return None
    key = (f"unpack_levels{tuple(shape)}", at, str(_built_from))
    if key not in _primitives:
        custom = ops.Custom(f"{_library_path(at)}:gsk_unpack_levels", out_shape=lambda *_: list(shape), out_dtype=lambda *_: ms.int8, func_type="aot")
        custom.add_prim_attr("gsk_shape", str(tuple(shape)))  # one inferred shape per weight shape (see int8_layer_primitive)
        _primitives[key] = custom
    return _primitives[key]


# the linear kernels in the order of ``gsk_linear_group``'s plan (csrc/entry.cc, LinearKind),
# with the number of inputs each takes after x
LINEAR_KINDS: dict[str, int] = {
    "w8_linear": 3,
    "w4_linear": 4,
    "a8w8_static_linear": 6,
    "a8w8_dynamic_linear": 4,
    "a8w4_static_linear": 7,
    "a8w4_dynamic_linear": 5,
}
PROLOGUES = (None, "rms_norm")
EPILOGUES = (None, "add", "silu_mul")


def linear_group_plan(kernel: str, biases: tuple[bool, ...], prologue: str | None, epilogue: str | None, rope: bool = False) -> tuple[int, ...]:
    """The plan ``gsk_linear_group`` reads (6 int32): kind, count, prologue, epilogue, bias
    mask, RoPE on the first two outputs."""
    if kernel not in LINEAR_KINDS or prologue not in PROLOGUES or epilogue not in EPILOGUES:
        raise KernelError(f"no linear group for kernel {kernel!r}, prologue {prologue!r}, epilogue {epilogue!r}")
    wanted = {None: range(2 if rope else 1, 4), "add": (1,), "silu_mul": (2,)}[epilogue]
    if len(biases) not in wanted or (rope and epilogue):
        raise KernelError(f"epilogue {epilogue!r}{' with RoPE' if rope else ''} takes {' or '.join(map(str, wanted))} linears, got {len(biases)}")
    mask = sum(1 << i for i, has in enumerate(biases) if has)
    return (list(LINEAR_KINDS).index(kernel), len(biases), PROLOGUES.index(prologue), EPILOGUES.index(epilogue), mask, int(rope))


def linear_group_primitive(plan: tuple[int, ...], at: str | None = None) -> ops.Custom | None:
    """The ``gsk_linear_group`` operator for ``plan`` (:func:`linear_group_plan`) at level
    ``at``; None at ``portable``. Its output shapes follow from the plan: one per linear, or one
    for an epilogue."""
    at = at or level()
    if at == PORTABLE:
        return None
    key = (f"linear_group{plan}", at, str(_built_from))
    if key not in _primitives:
        kind, count, prologue, epilogue, mask, rope = plan
        per_linear = list(LINEAR_KINDS.values())[kind]
        first = 2 + 2 * (prologue == 1) + 2 * rope + (epilogue == 1)  # index of the first weight among the inputs
        weights, at_input = [], first
        for i in range(count):
            weights.append(at_input)
            at_input += per_linear + ((mask >> i) & 1)

        def shape(*shapes: list[int]) -> Any:
            rows = list(shapes[1][:-1])
            outs = [[*rows, shapes[w][0]] for w in weights]
            return outs[0] if epilogue else tuple(outs)

        def dtype(*dtypes: Any) -> Any:
            return ms.float32 if epilogue else tuple(ms.float32 for _ in weights)

        _primitives[key] = ops.Custom(f"{_library_path(at)}:gsk_linear_group", out_shape=shape, out_dtype=dtype, func_type="aot")
    return _primitives[key]
