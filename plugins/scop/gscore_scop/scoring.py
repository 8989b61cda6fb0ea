"""SCOP's channel scores and the choice of channels to keep (numpy only).

A knockoff coefficient ``k`` near 1 means the network relied on the real feature of that
channel; near (or below) 0.5 means the knockoff served as well. SCOP scores a channel by
``|gamma| * (k - (1 - k)) = |gamma| * (2k - 1)`` with ``gamma`` the scale of the BatchNorm2d
after the convolution (1 when there is none), and removes the lowest scores.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from gscore_scop.config import Selection


def channel_scores(kfscale: np.ndarray, gamma: np.ndarray | None) -> np.ndarray:
    """``|gamma| * (2k - 1)`` per channel; ``kfscale`` and ``gamma`` are ``[C]``."""
    k = np.asarray(kfscale, dtype=np.float64).reshape(-1)
    weight = np.ones_like(k) if gamma is None else np.abs(np.asarray(gamma, dtype=np.float64).reshape(-1))
    return weight * (2.0 * k - 1.0)


def select_channels(scores: Mapping[str, np.ndarray], prune_rate: float, selection: Selection, min_channels: int) -> dict[str, np.ndarray]:
    """Sorted indices of the channels to keep, per layer.

    ``selection=layer``: ``int(prune_rate * C)`` lowest of each layer go. ``global``: the
    ``int(prune_rate * sum C)`` lowest over all layers go. Either way a layer keeps at least
    ``min(min_channels, C)`` channels, its highest-scored ones (of equal scores the lower index goes first).
    """
    if selection is Selection.LAYER:
        drop = {name: int(prune_rate * len(s)) for name, s in scores.items()}
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
