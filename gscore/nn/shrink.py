"""Physically smaller networks: cut channels out of Conv2d, BatchNorm2d and Dense layers.

A :class:`ShrinkPlan` says, per cell, which output and which input indices to keep. It is a
plain, JSON-able description, so a pruned network's checkpoint can carry it and the pruned
structure can be rebuilt from the original network definition without any data or tracing
(:func:`shrink` on a freshly built network, then ``load_checkpoint``).

:func:`plan_from_groups` turns "keep these output channels of this convolution" into cell
cuts using the :class:`~gscore.nn.trace.ChannelGroup` found by tracing: the outputs of every
convolution of the group (several when a residual addition ties their channels), the
BatchNorm2d features on the way and the consumers' inputs (``H*W`` consecutive Dense features
per channel after a flatten) all keep the same channels: one keep-plan per group.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from mindspore import Tensor, nn

from gscore.errors import GscoreError
from gscore.nn.trace import ChannelGroup
from gscore.nn.walk import get_cell, replace_cell


class ShrinkError(GscoreError, ValueError):
    """A shrink plan does not fit the network (unknown cell, unsupported type, bad indices)."""


@dataclass(frozen=True)
class CellCut:
    """Indices kept along a cell's output axis and input axis (``None``: axis unchanged)."""

    out_keep: tuple[int, ...] | None = None
    in_keep: tuple[int, ...] | None = None

    def merged(self, other: "CellCut") -> "CellCut":
        """Both cuts at once; the same axis cut twice must agree."""
        def pick(a: tuple[int, ...] | None, b: tuple[int, ...] | None, axis: str) -> tuple[int, ...] | None:
            if a is not None and b is not None and a != b:
                raise ShrinkError(f"two different {axis} cuts for the same cell")
            return a if a is not None else b

        return CellCut(pick(self.out_keep, other.out_keep, "output"), pick(self.in_keep, other.in_keep, "input"))


@dataclass(frozen=True)
class ShrinkPlan:
    """Cell name -> :class:`CellCut`; serialises to ``{"cells": {name: {"out": [...], "in": [...]}}}``."""

    cuts: Mapping[str, CellCut]

    def to_dict(self) -> dict[str, Any]:
        cells = {}
        for name, cut in sorted(self.cuts.items()):
            entry = {}
            if cut.out_keep is not None:
                entry["out"] = list(cut.out_keep)
            if cut.in_keep is not None:
                entry["in"] = list(cut.in_keep)
            cells[name] = entry
        return {"cells": cells}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShrinkPlan":
        if not isinstance(data, Mapping) or not isinstance(data.get("cells"), Mapping):
            raise ShrinkError(f"a shrink plan is a mapping with a 'cells' mapping, got {data!r:.200}")
        cuts = {}
        for name, entry in data["cells"].items():
            unknown = set(entry) - {"out", "in"}
            if unknown:
                raise ShrinkError(f"shrink plan entry {name!r} has unknown keys {sorted(unknown)}; allowed: 'out', 'in'")
            cuts[name] = CellCut(
                tuple(int(i) for i in entry["out"]) if "out" in entry else None,
                tuple(int(i) for i in entry["in"]) if "in" in entry else None,
            )
        return cls(cuts)


def plan_from_groups(groups: Mapping[str, ChannelGroup], kept: Mapping[str, np.ndarray]) -> ShrinkPlan:
    """Cuts that keep ``kept[group name]`` (sorted channel indices) of each traced group."""
    cuts: dict[str, CellCut] = {}

    def add(name: str, cut: CellCut) -> None:
        cuts[name] = cuts[name].merged(cut) if name in cuts else cut

    for name, channels in kept.items():
        if name not in groups:
            raise ShrinkError(f"{name!r} is not a prunable channel group; groups: {sorted(groups)}")
        group = groups[name]
        channels = np.asarray(channels, dtype=np.int64)
        keep = tuple(int(i) for i in channels)
        for producer in group.producers:
            add(producer, CellCut(out_keep=keep))
        for norm in group.norms:
            add(norm, CellCut(out_keep=keep))
        for consumer in group.consumers:
            f = consumer.features_per_channel
            features = (channels[:, None] * f + np.arange(f)).ravel()
            add(consumer.name, CellCut(in_keep=tuple(int(i) for i in features)))
    return ShrinkPlan(cuts)


def shrink(network: nn.Cell, plan: ShrinkPlan) -> nn.Cell:
    """A deep copy of ``network`` in which every cell of ``plan`` is rebuilt smaller.

    The copy keeps the parameter names and trainability of the original (checkpoint keys do
    not change), so a checkpoint of a shrunk network loads into ``shrink(fresh_network, same_plan)``.
    """
    smaller = copy.deepcopy(network)
    for name, cut in plan.cuts.items():
        try:
            cell = get_cell(smaller, name)
        except KeyError as err:
            raise ShrinkError(f"shrink plan names {name!r}, which {type(network).__name__} does not have") from err
        trainable = {rel: param.requires_grad for rel, param in cell.parameters_and_names()}
        new_cell = _cut_cell(name, cell, cut)
        for rel, param in new_cell.parameters_and_names():
            param.requires_grad = trainable.get(rel, param.requires_grad)
        replace_cell(smaller, name, new_cell)
    return smaller


def _indices(keep: tuple[int, ...] | None, size: int, name: str, axis: str) -> np.ndarray:
    """``keep`` as an index array, checked: non-empty, strictly increasing, inside ``range(size)``."""
    if keep is None:
        return np.arange(size)
    idx = np.asarray(keep, dtype=np.int64)
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= size or np.any(np.diff(idx) <= 0):
        raise ShrinkError(f"{name}: {axis} indices must be a non-empty increasing subset of range({size}), got {len(idx)} indices")
    return idx


def _tensor(values: np.ndarray) -> Tensor:
    return Tensor(np.ascontiguousarray(values))


def _cut_cell(name: str, cell: nn.Cell, cut: CellCut) -> nn.Cell:
    if isinstance(cell, nn.Conv2d):
        return _cut_conv(name, cell, cut)
    if isinstance(cell, nn.BatchNorm2d):
        return _cut_norm(name, cell, cut)
    if isinstance(cell, nn.Dense):
        return _cut_dense(name, cell, cut)
    raise ShrinkError(f"{name}: cannot shrink a {type(cell).__name__}; supported: Conv2d, BatchNorm2d, Dense")


def _cut_conv(name: str, conv: nn.Conv2d, cut: CellCut) -> nn.Conv2d:
    if conv.group != 1:
        raise ShrinkError(f"{name}: grouped convolution (group={conv.group}) cannot be shrunk")
    weight = conv.weight.asnumpy()  # [out, in, kh, kw]
    out_idx = _indices(cut.out_keep, weight.shape[0], name, "output")
    in_idx = _indices(cut.in_keep, weight.shape[1], name, "input")
    bias = _tensor(conv.bias.asnumpy()[out_idx]) if conv.has_bias else None
    return nn.Conv2d(
        len(in_idx), len(out_idx), conv.kernel_size, stride=conv.stride, pad_mode=conv.pad_mode, padding=conv.padding,
        dilation=conv.dilation, group=1, has_bias=conv.has_bias, weight_init=_tensor(weight[np.ix_(out_idx, in_idx)]),
        bias_init=bias, data_format=conv.data_format, dtype=conv.weight.dtype,
    )


def _cut_norm(name: str, norm: nn.BatchNorm2d, cut: CellCut) -> nn.BatchNorm2d:
    if cut.in_keep is not None and cut.in_keep != cut.out_keep:
        raise ShrinkError(f"{name}: a BatchNorm2d keeps the same features on input and output")
    idx = _indices(cut.out_keep, norm.num_features, name, "feature")
    return nn.BatchNorm2d(
        len(idx), eps=norm.eps, momentum=1.0 - norm.momentum,
        gamma_init=_tensor(norm.gamma.asnumpy()[idx]), beta_init=_tensor(norm.beta.asnumpy()[idx]),
        moving_mean_init=_tensor(norm.moving_mean.asnumpy()[idx]), moving_var_init=_tensor(norm.moving_variance.asnumpy()[idx]),
        use_batch_statistics=norm.use_batch_statistics, data_format=norm.format, dtype=norm.gamma.dtype,
    )


def _cut_dense(name: str, dense: nn.Dense, cut: CellCut) -> nn.Dense:
    weight = dense.weight.asnumpy()  # [out, in]
    out_idx = _indices(cut.out_keep, weight.shape[0], name, "output")
    in_idx = _indices(cut.in_keep, weight.shape[1], name, "input")
    bias = _tensor(dense.bias.asnumpy()[out_idx]) if dense.has_bias else None
    return nn.Dense(
        len(in_idx), len(out_idx), weight_init=_tensor(weight[np.ix_(out_idx, in_idx)]), bias_init=bias,
        has_bias=dense.has_bias, activation=dense.activation if dense.activation_flag else None, dtype=dense.weight.dtype,
    )
