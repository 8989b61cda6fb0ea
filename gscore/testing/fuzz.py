"""Small real networks, hostile configs and hostile data, for property tests of whole algorithms.

The property gscore's reliability suite checks for every algorithm (and a plugin author can
check for theirs) is: *any generated config and any generated small network or data gives a
finished result or a* :class:`~gscore.errors.GscoreError`, *never another exception, and a
failed call leaves the network unchanged* (:func:`gscore.testing.reliability.call_all_or_nothing`).

* networks: :class:`FuzzMLP` (``nn.Dense`` layers, optionally nested, optionally a NaN
  weight) and :class:`FuzzConvNet` (two ``Conv2d``, optional BatchNorm, a ``Dense`` head);
  weights come from a seeded numpy generator, so an example is reproducible.
* configs: dicts of a config class's fields (some left out), each value usually valid and
  sometimes not (wrong type, out of range, NaN, unknown enum string), read through
  ``from_dict`` the way a YAML recipe would be.
* data: calibration inputs or ``(images, labels)``, usually fitting the network and
  sometimes not (empty, wrong width or shape, wrong dtype, NaN, not an array at all).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from mindspore import Tensor, nn

NAN = float("nan")
INF = float("inf")


def _dense(rng: np.random.Generator, fan_in: int, fan_out: int, poison: bool = False) -> nn.Dense:
    weight = (rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(np.float32)
    if poison:
        weight.flat[rng.integers(weight.size)] = np.nan
    bias = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
    return nn.Dense(fan_in, fan_out, weight_init=Tensor(weight), bias_init=Tensor(bias))


class FuzzMLP(nn.Cell):
    """``Dense -> ReLU -> ... -> Dense`` over ``widths``; ``nested`` puts the first layer in a
    sub-cell and the rest in a SequentialCell; ``poison`` is the index of a layer given a NaN."""

    def __init__(self, widths: tuple[int, ...], seed: int = 0, nested: bool = False, poison: int | None = None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        layers: list[nn.Cell] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(_dense(rng, fan_in, fan_out, poison == i))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.nested = nested
        if nested:
            self.stem = nn.SequentialCell([layers[0]])
            self.body = nn.SequentialCell(layers[1:] or [nn.Identity()])
        else:
            self.body = nn.SequentialCell(layers)

    def construct(self, x: Tensor) -> Tensor:
        if self.nested:
            x = self.stem(x)
        return self.body(x)


class FuzzConvNet(nn.Cell):
    """``conv1 [-> bn1] -> relu -> conv2 -> relu -> flatten -> fc`` on ``[n, c, size, size]``
    images: conv1 and conv2 are prunable, every layer is quantizable."""

    def __init__(self, in_channels: int, widths: tuple[int, int], size: int, classes: int, batchnorm: bool, seed: int = 0, poison: bool = False) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)

        def conv(cin: int, cout: int) -> nn.Conv2d:
            w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
            return nn.Conv2d(cin, cout, 3, pad_mode="same", has_bias=True, weight_init=Tensor(w), bias_init=Tensor(np.zeros(cout, np.float32)))

        self.conv1 = conv(in_channels, widths[0])
        self.batchnorm = batchnorm
        if batchnorm:
            self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.conv2 = conv(widths[0], widths[1])
        self.flatten = nn.Flatten()
        self.fc = _dense(rng, widths[1] * size * size, classes, poison)

    def construct(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if self.batchnorm:
            x = self.bn1(x)
        x = self.relu(self.conv2(self.relu(x)))
        return self.fc(self.flatten(x))


def maybe(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """A field's values: ``(valid ones, invalid ones)``."""
    return valid, invalid


def chance(tenths: int) -> st.SearchStrategy[bool]:
    """True in about ``tenths``/10 of the draws, shrinking towards False."""
    return st.sampled_from([False] * (10 - tenths) + [True] * tenths)


@st.composite
def config_dicts(draw: st.DrawFn, fields: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]], keep: int = 4, hostile: int = 3) -> dict[str, Any]:
    """A dict with each of ``fields`` present in about ``keep``/10 of the draws. About
    ``hostile``/10 of the examples are hostile: a present field then takes an invalid value
    one time in three; otherwise every value is valid on its own (not always in combination)."""
    is_hostile = draw(chance(hostile))
    out = {}
    for name, (valid, invalid) in fields.items():
        if draw(chance(keep)):
            out[name] = draw(invalid if is_hostile and draw(chance(3)) else valid)
    return out


JUNK = st.sampled_from([None, "bogus", -1, 2.5, NAN, INF, True, [], {}, object()])

PTQ_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "mode": maybe(st.sampled_from(["quantize", "deploy", "QUANTIZE"]), JUNK),
    "backend": maybe(st.sampled_from(["cpu", "ascend", "none"]), st.just("gpu")),
    "weight_quant_dtype": maybe(st.sampled_from(["int8", "int8", "int4", None]), st.sampled_from(["float16", 8, "int2"])),
    "act_quant_dtype": maybe(st.sampled_from([None, None, "int8"]), st.just("int4")),
    "kvcache_quant_dtype": maybe(st.sampled_from([None, None, "int8"]), st.just("int4")),
    "weight_quant_granularity": maybe(st.sampled_from(["per_channel", "per_group"]), st.sampled_from(["per_token", "per_tensor", 3])),
    "act_quant_granularity": maybe(st.sampled_from(["per_tensor", "per_token"]), st.just("per_group")),
    "kvcache_quant_granularity": maybe(st.sampled_from(["per_channel", "per_token"]), st.just("per_tensor")),
    "group_size": maybe(st.sampled_from([0, 64, 128, 256]), st.sampled_from([100, -64, 64.0, True])),
    "outliers_suppression": maybe(st.sampled_from(["none", "smooth"]), st.sampled_from(["awq", "smoothquant", "outlier-suppression+"])),
    "precision_recovery": maybe(st.just("none"), st.just("gptq")),
    "weight_clip": maybe(st.just(False), st.sampled_from([True, 1, "no"])),
    "opname_blacklist": maybe(st.sampled_from([[], ["0"], ["body.2"], ["stem"], ["no-such-layer"]]), st.sampled_from(["body", [1], None])),
    "algo_args": maybe(
        st.sampled_from([{}, {"alpha": 0.5}, {"alpha": [0.3, 0.7]}, {"progress": False}, {"skip_leading_tokens": 1}]),
        st.sampled_from([{"alpha": NAN}, {"alpha": 2.0}, {"alpha": []}, {"skip_leading_tokens": -1}, {"bogus": 1}, {"progress": "no"}, 0.5, {1: 2}]),
    ),
}

#: Coherent PTQConfig starting points (each one valid for ``ptq``); fields drawn from
#: :data:`PTQ_FIELDS` are laid over them, so most examples reach the network.
PTQ_PRESETS: tuple[dict[str, Any], ...] = (
    {},
    {"weight_quant_granularity": "per_group", "group_size": 64},
    {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128},
    {"act_quant_dtype": "int8"},
    {"act_quant_dtype": "int8", "outliers_suppression": "smooth", "algo_args": {"alpha": 0.5}},
    {"act_quant_dtype": "int8", "outliers_suppression": "smooth", "algo_args": {"alpha": [0.3, 0.7]}},
    {"act_quant_dtype": "int8", "act_quant_granularity": "per_token"},
    {"weight_quant_dtype": None, "kvcache_quant_dtype": "int8"},
    {"kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"},
    {"mode": "deploy"},
    {"mode": "deploy", "weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 64},
)


#: The same for ``rtn`` (weight-only int8 per channel, dynamic KV cache); the PTQ presets
#: it refuses come in through :func:`ptq_config_dicts` too.
RTN_PRESETS: tuple[dict[str, Any], ...] = (
    {},
    {"mode": "deploy"},
    {"opname_blacklist": ["body"]},
    {"kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"},
    {"weight_quant_dtype": None, "kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"},
)


@st.composite
def ptq_config_dicts(draw: st.DrawFn, presets: tuple[dict[str, Any], ...] = PTQ_PRESETS) -> dict[str, Any]:
    """A ``presets`` entry; every other one with one :data:`PTQ_FIELDS` value drawn over it
    (valid two times in three)."""
    config = dict(draw(st.sampled_from(presets)))
    if draw(chance(5)):
        name = draw(st.sampled_from(sorted(PTQ_FIELDS)))
        valid, invalid = PTQ_FIELDS[name]
        config[name] = draw(invalid if draw(chance(3)) else valid)
    return config


SIMQAT_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "weight_bits": maybe(st.sampled_from([2, 4, 8]), st.sampled_from([1, 9, 8.0, None])),
    "act_bits": maybe(st.sampled_from([None, 8, 4]), st.sampled_from([0, 16, "8"])),
    "weight_granularity": maybe(st.sampled_from(["per_channel", "per_tensor"]), st.sampled_from(["per_group", 0])),
    "weight_symmetric": maybe(st.booleans(), JUNK),
    "act_symmetric": maybe(st.booleans(), JUNK),
    "narrow_range": maybe(st.booleans(), JUNK),
    "ema_decay": maybe(st.sampled_from([0.0, 0.9, 0.999]), st.sampled_from([1.0, -0.1, NAN, INF, "0.9"])),
    "quant_delay": maybe(st.sampled_from([0, 0, 2]), st.sampled_from([-1, 1.5, NAN])),
    "bn_fold": maybe(st.booleans(), JUNK),
    "include_dense": maybe(st.booleans(), JUNK),
    "opname_blacklist": maybe(st.sampled_from([[], ["fc"], ["conv1"], ["nothing"]]), st.sampled_from(["fc", [None]])),
}

SLB_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "weight_bits": maybe(st.sampled_from([1, 2, 4]), st.sampled_from([3, 8, 0])),
    "act_bits": maybe(st.sampled_from([None, 8]), st.sampled_from([4, "8"])),
    "include_dense": maybe(st.booleans(), JUNK),
    "init_from_pretrained": maybe(st.booleans(), JUNK),
    "t_start": maybe(st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.0, -1.0, NAN, INF])),
    "t_end": maybe(st.sampled_from([10.0, 100.0]), st.sampled_from([NAN, INF, 0.1])),
    "t_start_time": maybe(st.sampled_from([0.0, 0.2]), st.sampled_from([NAN, 1.5])),
    "t_end_time": maybe(st.sampled_from([0.6, 1.0]), st.sampled_from([NAN, 0.1, 2.0])),
    "ema_decay": maybe(st.sampled_from([0.0, 0.999]), st.sampled_from([NAN, 1.0])),
    "act_quant_delay": maybe(st.sampled_from([0, 1]), st.sampled_from([-2, 0.5])),
    "opname_blacklist": maybe(st.sampled_from([[], ["conv2"], ["fc"]]), st.just("conv")),
}

SCOP_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "prune_rate": maybe(st.sampled_from([0.0, 0.25, 0.5, 0.9]), st.sampled_from([1.0, -0.5, NAN, "0.5"])),
    "selection": maybe(st.sampled_from(["layer", "global"]), st.just("network")),
    "min_channels": maybe(st.sampled_from([1, 2]), st.sampled_from([0, 1.5])),
    "ranking": maybe(st.sampled_from(["knockoff", "reconstruction"]), st.sampled_from(["magnitude", None])),
    "layers": maybe(st.sampled_from([[], ["conv1"], ["conv2"]]), st.sampled_from([["conv9"], ["fc"], "conv1", [""]])),
    "opname_blacklist": maybe(st.sampled_from([[], ["conv1"]]), st.just([3])),
    "knockoff_epochs": maybe(st.sampled_from([0, 0, 1]), st.sampled_from([-1, 0.5])),
    "knockoff_batch_size": maybe(st.sampled_from([2, 4]), st.sampled_from([0, 64])),
    "knockoff_learning_rate": maybe(st.sampled_from([0.01, 0.1]), st.sampled_from([0.0, INF, NAN])),
    "reconstruct_images": maybe(st.sampled_from([0, 4, 1024]), st.sampled_from([-1, 1.5])),
    "recalibrate_batches": maybe(st.sampled_from([0, 1, 2]), st.just(-1)),
    "seed": maybe(st.integers(0, 3), st.just(-1)),
}


@st.composite
def mlp_cases(draw: st.DrawFn) -> dict[str, Any]:
    """``{"network": (widths, seed, nested, poison), "data": calibration inputs}``."""
    widths = tuple(draw(st.lists(st.sampled_from([1, 3, 8, 64, 96, 130]), min_size=2, max_size=4)))
    poison = draw(st.sampled_from([None] * 8 + list(range(len(widths) - 1))))
    network = (widths, draw(st.integers(0, 2**16)), draw(st.booleans()), poison)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    batch = draw(st.integers(1, 3))

    def rows(width: int, dtype: Any = np.float32) -> np.ndarray:
        return rng.standard_normal((batch, width)).astype(dtype)

    kind = draw(st.sampled_from(["valid"] * 8 + ["empty", "none", "wide", "int", "float16", "nan", "text", "bare", "ragged", "scalars", "tensor"]))
    data = {
        "valid": lambda: [rows(widths[0]) for _ in range(draw(st.integers(1, 3)))],
        "empty": lambda: [],
        "none": lambda: None,
        "wide": lambda: [rows(widths[0] + 1)],
        "int": lambda: [rows(widths[0]).astype(np.int32)],
        "float16": lambda: [rows(widths[0], np.float16)],
        "nan": lambda: [np.full((batch, widths[0]), np.nan, np.float32)],
        "text": lambda: "calibration.txt",
        "bare": lambda: rows(widths[0]),
        "ragged": lambda: [[[1.0, 2.0], [3.0]]],
        "scalars": lambda: [1.0, 2.0],
        "tensor": lambda: [Tensor(rows(widths[0]))],
    }[kind]()
    return {"network": network, "data": data, "data_kind": kind}


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    """``{"network": FuzzConvNet arguments, "data": (images, labels) or something else}``."""
    in_channels = draw(st.sampled_from([1, 2]))
    widths = (draw(st.sampled_from([2, 4])), draw(st.sampled_from([2, 3])))
    size, classes = draw(st.sampled_from([4, 6])), draw(st.sampled_from([2, 3]))
    network = (in_channels, widths, size, classes, draw(st.booleans()), draw(st.integers(0, 2**16)), draw(st.sampled_from([False] * 8 + [True])))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.sampled_from([2, 4, 6]))

    def images(shape: tuple[int, ...] = (in_channels, size, size)) -> np.ndarray:
        return rng.random((n, *shape)).astype(np.float32)

    labels = rng.integers(0, classes, n)
    kind = draw(st.sampled_from(["valid"] * 8 + ["none", "one", "mismatch", "shape", "channels", "nan", "float_labels", "big_labels", "negative", "ragged", "text"]))
    data = {
        "valid": lambda: (images(), labels),
        "none": lambda: None,
        "one": lambda: (images()[:1], labels[:1]),
        "mismatch": lambda: (images(), labels[:-1]),
        "shape": lambda: (images((size, size)), labels),
        "channels": lambda: (images((in_channels + 1, size, size)), labels),
        "nan": lambda: (np.full((n, in_channels, size, size), np.nan, np.float32), labels),
        "float_labels": lambda: (images(), labels + 0.5),
        "big_labels": lambda: (images(), labels + classes),
        "negative": lambda: (images(), -labels - 1),
        "ragged": lambda: ([[1.0], [1.0, 2.0]], labels),
        "text": lambda: ("images.npy", "labels.npy"),
    }[kind]()
    return {"network": network, "data": data, "data_kind": kind}
