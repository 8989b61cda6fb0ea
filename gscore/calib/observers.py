"""Observers that record calibration statistics while a network runs on calibration data.

:class:`InputObserver` wraps a linear layer and keeps running per-input-channel minima and
maxima of what flows into it (numpy, float32, ``[in]``); everything a quantizer needs (per
tensor range, SmoothQuant maxima, ranges after smoothing) derives from those two vectors.
:class:`ObservingKVCache` does the same per (kv head, head dim) for keys and values.

``skip_leading`` excludes the first positions of every sequence (rows ``r`` with
``r % tokens_per_sequence < skip_leading``): position 0 of an un-prefixed window carries an
attention-sink activation far larger than any other, and a range set by it leaves ordinary
tokens with a handful of integer steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mindspore import Tensor, nn

from gscore.nn.kv_cache import FloatKVCache
from gscore.quant import AbsMeanAccumulator, HessianAccumulator


class RunningMinMax:
    """Elementwise running min/max over calls, of arrays reduced to the last axis (or kept axes)."""

    def __init__(self) -> None:
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def update(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))


@dataclass(frozen=True)
class Collect:
    """What an :class:`InputObserver` records beyond per-channel min/max.

    ``hessian``: ``XᵀX`` for GPTQ; ``absmean``: mean ``|x|`` per channel for AWQ;
    ``sample_rows``: keep about that many evenly strided input rows (0: none).
    """

    hessian: bool = False
    absmean: bool = False
    sample_rows: int = 0


class InputObserver(nn.Cell):
    """Pass-through wrapper of a layer that records statistics of its input rows.

    Always per-channel min/max (``stats``); with :class:`Collect` options also ``hessian``
    (:class:`~gscore.quant.HessianAccumulator`), ``absmean``
    (:class:`~gscore.quant.AbsMeanAccumulator`) and ``sample`` (float32 ``[rows, in]``).
    Rows at the leading ``skip_leading`` positions of every sequence are left out of all of them.
    """

    def __init__(self, layer: nn.Cell, tokens_per_sequence: int = 0, skip_leading: int = 0, collect: Collect = Collect()) -> None:
        super().__init__()
        self.layer = layer
        self.stats = RunningMinMax()
        self.tokens_per_sequence = tokens_per_sequence
        self.skip_leading = skip_leading
        self.collect = collect
        self.hessian: HessianAccumulator | None = None
        self.absmean: AbsMeanAccumulator | None = None
        self.sample: np.ndarray | None = None

    def construct(self, x: Tensor) -> Tensor:
        rows = x.asnumpy().reshape(-1, x.shape[-1])
        if self.skip_leading and self.tokens_per_sequence:
            keep = np.arange(len(rows)) % self.tokens_per_sequence >= self.skip_leading
            rows = rows[keep]
        self.stats.update(rows.min(axis=0), rows.max(axis=0))
        if self.collect.hessian:
            if self.hessian is None:
                self.hessian = HessianAccumulator(rows.shape[1])
            self.hessian.add(rows)
        if self.collect.absmean:
            if self.absmean is None:
                self.absmean = AbsMeanAccumulator(rows.shape[1])
            self.absmean.add(rows)
        if self.collect.sample_rows:
            picked = rows[:: max(1, len(rows) // self.collect.sample_rows)].astype(np.float32)
            self.sample = picked if self.sample is None else np.concatenate([self.sample, picked])
        return self.layer(x)


class ObservingKVCache(FloatKVCache):
    """A float KV cache that records per-(head, dim) min/max of keys and values ``[heads, 1, dim]``."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__(num_heads, head_dim)
        self.key_stats = RunningMinMax()
        self.value_stats = RunningMinMax()

    def encode(self, x: Tensor, which: int) -> tuple[Tensor, ...]:
        data = x.asnumpy()
        stats = self.key_stats if which == 0 else self.value_stats
        stats.update(data.min(axis=(0, 2))[:, None, :], data.max(axis=(0, 2))[:, None, :])
        return (x,)
