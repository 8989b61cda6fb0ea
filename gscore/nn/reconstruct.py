"""Refitting the layers that lost input channels, so a pruned network computes what it computed.

Re-estimated statistics (:mod:`gscore.nn.bn_recalib`) only move means and spreads back. A
layer whose input lost channels can do much more: its weights on the channels that remain are
re-solved by least squares so that its outputs match the unpruned layer's outputs on data
(:mod:`gscore.lstsq`; He et al. 2017, ThiNet). Layers are refitted one after the other in
execution order, each on the inputs it now receives (the earlier refits included), against
the outputs of the unpruned network on the same images: errors do not pile up. On the digit
ResNet of ``bench/scop.py`` at prune rate 0.3 this took the accuracy right after pruning from
36-60 % (statistics only, depending on the channels chosen) to 97 % (float 97.5 %).

:func:`reconstruction_scores` chooses the channels for that refit in the first place: per
channel group, the channels whose loss the refit of the layers reading them compensates best
go first (:class:`~gscore.lstsq.BlockElimination`).

Forward passes and numpy only: no gradient, nothing but the refitted weights (and biases)
changes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from mindspore import Tensor, nn

from gscore.lstsq import BlockElimination, NormalEquations, conv_patches, elimination_scores, same_pads
from gscore.nn.trace import ChannelGroup, Trace
from gscore.nn.walk import get_cell


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """MindSpore stores stride / dilation as an int, a pair or an NCHW 4-tuple; the (h, w) pair."""
    if isinstance(value, int):
        return value, value
    return tuple(int(v) for v in value)[-2:]


def input_patches(conv: nn.Conv2d, x: np.ndarray) -> np.ndarray:
    """The patch matrix of ``conv``'s input ``x`` ``[n, c, h, w]`` (:func:`~gscore.lstsq.conv_patches`)."""
    kernel, stride, dilation = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    if conv.pad_mode == "same":
        pads = same_pads(x.shape[2:], kernel, stride, dilation)
    elif conv.pad_mode == "valid":
        pads = (0, 0, 0, 0)
    else:
        pads = (conv.padding,) * 4 if isinstance(conv.padding, int) else tuple(conv.padding)
    return conv_patches(x, kernel, stride, dilation, pads)


def refittable(cell: nn.Cell) -> bool:
    """A layer whose output is linear in its weights: ``Dense`` without a fused activation,
    ``Conv2d`` with ``group=1`` in NCHW."""
    if isinstance(cell, nn.Dense):
        return not cell.activation_flag
    return isinstance(cell, nn.Conv2d) and cell.group == 1 and cell.data_format == "NCHW"


def following_norms(trace: Trace) -> dict[str, str]:
    """For each Conv2d of ``trace`` whose output is read by a BatchNorm2d and nothing else (each
    called once), the name of that BatchNorm2d: where a refit's intercept can go when the
    convolution has no bias."""
    found = {}
    for call in trace.calls:
        if not isinstance(call.cell, nn.Conv2d) or len(trace.calls_of(call.name)) != 1:
            continue
        readers = trace.consumers(call.output)
        if len(readers) == 1 and isinstance(readers[0].cell, nn.BatchNorm2d) and len(trace.calls_of(readers[0].name)) == 1:
            found[call.name] = readers[0].name
    return found


def _layer_data(original: nn.Cell, pruned: nn.Cell, name: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input of layer ``name`` in ``pruned`` and its output in ``original``, on the same ``images``
    (one forward when they are the same network)."""
    seen: dict[str, np.ndarray] = {}
    cell_in, cell_out = get_cell(pruned, name), get_cell(original, name)
    handles = [
        cell_in.register_forward_pre_hook(lambda cell, inputs: seen.__setitem__("x", inputs[0].asnumpy())),
        cell_out.register_forward_hook(lambda cell, inputs, output: seen.__setitem__("y", output.asnumpy())),
    ]
    try:
        batch = Tensor(images)
        original(batch)
        if pruned is not original:
            pruned(batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen["x"], seen["y"]


def layer_equations(
    original: nn.Cell,
    pruned: nn.Cell,
    name: str,
    images: np.ndarray,
    intercept: bool,
    kept_outputs: Sequence[int] | None = None,
    rows_per_batch: int = 4096,
    batch_size: int = 64,
    rng: np.random.Generator | None = None,
) -> NormalEquations:
    """The normal equations of refitting layer ``name`` (a :func:`refittable` Conv2d / Dense):
    its inputs in ``pruned`` (patch rows for a convolution) against its outputs in ``original``
    (only ``kept_outputs`` channels, if given), on ``images`` passed ``batch_size`` at a time,
    each batch giving at most ``rows_per_batch`` rows drawn at random (``rng``)."""
    rng = rng or np.random.default_rng(0)
    cell = get_cell(pruned, name)
    equations: NormalEquations | None = None
    for start in range(0, len(images), batch_size):
        x, y = _layer_data(original, pruned, name, images[start : start + batch_size])
        if kept_outputs is not None:
            y = y[:, np.asarray(kept_outputs, np.int64)]
        if isinstance(cell, nn.Conv2d):
            x = input_patches(cell, x)
            y = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
        else:
            x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if len(x) > rows_per_batch:
            rows = rng.choice(len(x), rows_per_batch, replace=False)
            x, y = x[rows], y[rows]
        if equations is None:
            equations = NormalEquations(x.shape[1], y.shape[1], intercept=intercept)
        equations.add(x, y)
    if equations is None:
        raise ValueError("no images were given")
    return equations


def reconstruct_layers(
    original: nn.Cell,
    pruned: nn.Cell,
    layers: Sequence[str],
    images: np.ndarray,
    kept_outputs: Mapping[str, Sequence[int] | None] | None = None,
    rows_per_batch: int = 4096,
    batch_size: int = 64,
    ridge: float = 1e-4,
    seed: int = 0,
    norms: Mapping[str, str] | None = None,
) -> list[str]:
    """Refit each of ``layers`` in ``pruned`` to reproduce its outputs in ``original`` (module docstring).

    ``layers`` are Conv2d / Dense names present in both networks, in execution order. Skipped:
    layers that are not :func:`refittable`, and layers for which the images give fewer rows
    than the layer has inputs (plus one for a bias), where the data do not determine the fit
    (a Dense layer gets one row per image). ``kept_outputs[name]`` are the original output
    channels a layer kept if its outputs were cut too (missing or None: all). ``images`` are
    passed ``batch_size`` at a time; each batch contributes at most ``rows_per_batch`` rows
    (a convolution's output positions, a Dense layer's rows), drawn at random (``seed``).
    ``ridge`` is relative to the mean input energy (:meth:`~gscore.lstsq.NormalEquations.solve`).
    A layer with a bias is fitted with it; one without a bias whose output only a BatchNorm2d
    reads (``norms[name]``, see :func:`following_norms`) is fitted with an intercept folded into
    that BatchNorm's moving mean (``BN(y + c)`` with mean ``m`` is ``BN(y)`` with mean ``m - c``);
    any other is fitted through the origin. Without the intercept the fit cannot move a channel's
    mean, and the shift the removed channels leave behind stays (a side run on the digit ResNet at
    prune rate 0.7, no statistics repair after the refit: 82.9 % right after pruning through the
    origin, 86.1 % with the fold).
    Cost: both networks run once per batch for every layer (no activations are kept between
    layers, so memory stays at one batch). Returns the refitted layers; both networks are left
    in eval mode.
    """
    kept_outputs = kept_outputs or {}
    norms = norms or {}
    rng = np.random.default_rng(seed)
    original.set_train(False)
    pruned.set_train(False)
    done: list[str] = []
    if not len(images):
        return done
    for name in layers:
        cell = get_cell(pruned, name)
        if not refittable(cell):
            continue
        norm = None if cell.has_bias else norms.get(name)
        equations = layer_equations(original, pruned, name, images, bool(cell.has_bias or norm), kept_outputs.get(name), rows_per_batch, batch_size, rng)
        if equations.rows < len(equations.gram):
            continue  # fewer rows than unknowns: the data do not determine the fit
        weight, bias = equations.solve(ridge)
        cell.weight.set_data(Tensor(weight.reshape(cell.weight.shape).astype(np.float32)))
        if norm:
            moving_mean = get_cell(pruned, norm).moving_mean
            moving_mean.set_data(Tensor((moving_mean.asnumpy().astype(np.float64) - bias).astype(np.float32)))
        elif bias is not None:
            cell.bias.set_data(Tensor(bias.astype(np.float32)))
        done.append(name)
    return done


def reconstruction_scores(
    network: nn.Cell,
    groups: Mapping[str, ChannelGroup],
    images: np.ndarray,
    removals: Mapping[str, int],
    ridge: float = 1e-4,
    rows_per_batch: int = 4096,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per channel group, a score per channel (higher = keep) whose ``removals[group]`` lowest are
    the channels :func:`~gscore.lstsq.elimination_scores` removes, so that the refit of
    :func:`reconstruct_layers` loses least.

    Each layer reading the group (its ``consumers`` that are :func:`refittable`) is one least-squares
    fit of its outputs in ``network`` (unpruned) from its inputs on ``images``, with an
    intercept; a channel is the block of its columns (``kh * kw`` patch columns of a
    convolution, ``features_per_channel`` features of a Dense). Their costs are summed, each as a
    fraction of what its layer's fit explains. ``groups`` are taken in reverse execution order
    (the order of :func:`~gscore.nn.trace.channel_groups`), so a reader that is itself pruned
    is fitted only on the output channels its own group keeps, as the refit does. A group no
    refittable layer reads gets no scores (it is absent from the result). ``ridge``,
    ``rows_per_batch`` and ``batch_size`` are :func:`reconstruct_layers`'.
    """
    rng = np.random.default_rng(seed)
    network.set_train(False)
    kept_outputs: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for name in reversed(list(groups)):
        group = groups[name]
        fits = []
        for consumer in group.consumers:
            cell = get_cell(network, consumer.name)
            if not refittable(cell):
                continue
            width = int(np.prod(_pair(cell.kernel_size))) if isinstance(cell, nn.Conv2d) else consumer.features_per_channel
            equations = layer_equations(network, network, consumer.name, images, True, kept_outputs.get(consumer.name), rows_per_batch, batch_size, rng)
            fits.append(BlockElimination(equations, [c * width + np.arange(width) for c in range(group.channels)], ridge))
        if not fits:
            continue
        scores[name] = elimination_scores(fits, group.channels, removals[name])
        kept = np.sort(np.argsort(scores[name], kind="stable")[removals[name] :])
        for producer in group.producers:
            kept_outputs[producer] = kept
    return scores
