"""SCOP's channel scores and the choice of channels to keep (numpy only).

A knockoff coefficient ``k`` near 1 means the network relied on the real feature of that
channel; near 0 means the knockoff served as well. SCOP scores a channel by its importance
``k - (1 - k) = 2k - 1`` (in [-1, 1]) times the channel's scale, and removes the lowest scores.
The scale of a channel is what a removed channel takes away from the layers after it: ``|gamma|``
of the BatchNorm2d right after its convolution, or, where no BatchNorm follows, the L2 norm of the
convolution's filter for that channel (all channels of a layer see the same input, so the filter
norm orders their output magnitudes). A channel group tied by residual additions sums the
scales of its convolutions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from gscore_scop.config import Selection


def channel_scale(gammas: Sequence[np.ndarray | None], weights: Sequence[np.ndarray]) -> np.ndarray:
    """Scale ``[C]`` of a group's channels: per convolution ``|gamma|`` of its BatchNorm (``gammas[i]``),
    or the L2 norm of its filter ``weights[i]`` (``[C, in, kh, kw]``) where the BatchNorm is None; summed."""
    total = np.zeros(weights[0].shape[0], np.float64)
    for gamma, weight in zip(gammas, weights):
        if gamma is not None:
            total += np.abs(np.asarray(gamma, np.float64).reshape(-1))
        else:
            total += np.linalg.norm(np.asarray(weight, np.float64).reshape(weight.shape[0], -1), axis=1)
    return total


def channel_scores(kfscale: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``scale * (2k - 1)`` per channel; ``kfscale`` and ``scale`` are ``[C]``."""
    k = np.asarray(kfscale, dtype=np.float64).reshape(-1)
    return np.asarray(scale, np.float64).reshape(-1) * (2.0 * k - 1.0)


def layer_removals(channels: Mapping[str, int], prune_rate: float, min_channels: int) -> dict[str, int]:
    """Channels ``selection=layer`` removes from each group of ``channels[group]``: ``int(prune_rate * C)``,
    but never below ``min(min_channels, C)`` kept."""
    return {name: min(int(prune_rate * c), c - min(min_channels, c)) for name, c in channels.items()}


def select_channels(scores: Mapping[str, np.ndarray], prune_rate: float, selection: Selection, min_channels: int) -> dict[str, np.ndarray]:
    """Sorted indices of the channels to keep, per group.

    ``selection=layer``: ``int(prune_rate * C)`` lowest of each group go. ``global``: the
    ``int(prune_rate * sum C)`` lowest over all groups go. Either way a group keeps at least
    ``min(min_channels, C)`` channels, its highest-scored ones (of equal scores the lower index goes first).
    """
    if selection is Selection.LAYER:
        drop = layer_removals({name: len(s) for name, s in scores.items()}, prune_rate, min_channels)
    else:
        names = list(scores)
        flat = np.concatenate([scores[n] for n in names])
        owner = np.repeat(np.arange(len(names)), [len(scores[n]) for n in names])
        lowest = np.argsort(flat, kind="stable")[: int(prune_rate * len(flat))]
        counts = np.bincount(owner[lowest], minlength=len(names))
        drop = dict(zip(names, counts.tolist()))
    kept = {}
    for name, s in scores.items():
        n_drop = min(drop[name], len(s) - min(min_channels, len(s)))
        order = np.argsort(s, kind="stable")
        kept[name] = np.sort(order[n_drop:])
    return kept
