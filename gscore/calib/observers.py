"""Observers that record calibration statistics while a network runs on calibration data.

:class:`InputObserver` wraps a linear layer and keeps running per-input-channel minima and
maxima of what flows into it (numpy, float32, ``[in]``); everything a quantizer needs (per
tensor range, SmoothQuant maxima, ranges after smoothing) derives from those two vectors.
:class:`ObservingKVCache` does the same per (kv head, head dim) for keys and values.

``skip_leading`` excludes the first positions of every sequence (rows ``r`` with
``r % tokens_per_sequence < skip_leading``): position 0 of an un-prefixed window carries an
attention-sink activation far larger than any other, and a range set by it leaves ordinary
tokens with a handful of integer steps.

Data-parallel calibration: each worker observes its shard of the calibration windows, then
``synchronize()`` (called once after the observation pass, by every worker) replaces every
statistic by that of all workers' rows together: minima and maxima by the elementwise
extreme, ``XᵀX`` and ``|x|`` sums with their counts by the float64 sum, sample rows by
gathering them. Sample rows are picked at *global* row positions when the observer knows
where its rows sit in the whole calibration set (:class:`RowOrigin`), so the gathered sample is
the one a single process holding every window would have picked, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from mindspore import Tensor, nn

from gscore import dist
from gscore.errors import CalibrationDataError
from gscore.nn.kv_cache import FloatKVCache
from gscore.quant import AbsMeanAccumulator, HessianAccumulator

Sums = TypeVar("Sums", HessianAccumulator, AbsMeanAccumulator)


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

    def synchronize(self) -> None:
        """Make ``lo``/``hi`` the extremes over every data-parallel worker's rows (no-op in one process)."""
        if self.lo is None:
            raise CalibrationDataError("an observer saw no calibration rows on this worker, so there is no range to combine")
        self.lo, self.hi = dist.all_min(self.lo), dist.all_max(self.hi)


@dataclass(frozen=True)
class Collect:
    """What an :class:`InputObserver` records beyond per-channel min/max.

    ``hessian``: ``XᵀX`` for GPTQ; ``absmean``: mean ``|x|`` per channel for AWQ;
    ``sample_rows``: keep about that many evenly strided input rows (0: none).
    """

    hessian: bool = False
    absmean: bool = False
    sample_rows: int = 0


@dataclass(frozen=True)
class RowOrigin:
    """Where an observer's rows sit in the whole calibration set: they are the sequences
    ``windows`` (global indices, ascending, int64) of ``total``, in that order. ``grouped``:
    the helper runs them in fixed groups (``windows_per_forward``), each call the same as in
    one process; otherwise in one call, which in one process would have covered every window."""

    windows: np.ndarray
    total: int
    grouped: bool = False


class InputObserver(nn.Cell):
    """Pass-through wrapper of a layer that records statistics of its input rows.

    Always per-channel min/max (``stats``); with :class:`Collect` options also ``hessian``
    (:class:`~gscore.quant.HessianAccumulator`), ``absmean``
    (:class:`~gscore.quant.AbsMeanAccumulator`) and ``sample`` (float32 ``[rows, in]``).
    Rows at the leading ``skip_leading`` positions of every sequence are left out of all of them.
    ``origin`` (set by data-parallel calibration before a run) places the rows in the whole set.
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
        self.sample_positions: np.ndarray | None = None  # global row positions of ``sample`` (with an origin)
        self.set_origin(None)

    def construct(self, x: Tensor) -> Tensor:
        self.record(x)
        return self.layer(x)

    def record(self, x: Tensor) -> None:
        """Add the rows of ``x`` ``[..., in]`` to every statistic (what a call does before running the layer)."""
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
            picked, positions = self._pick(rows)
            self.sample = picked if self.sample is None else np.concatenate([self.sample, picked])
            if positions is not None:
                self.sample_positions = positions if self.sample_positions is None else np.concatenate([self.sample_positions, positions])

    def set_origin(self, origin: RowOrigin | None) -> None:
        """Place the rows of the next run in the whole calibration set (None: no placement, one process)."""
        self.origin = origin
        self._windows_seen = 0

    def _pick(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """About ``sample_rows`` evenly strided rows (float32) and, with an origin, their global positions.

        One process keeps every ``stride``-th row of each call, ``stride`` = the call's rows /
        ``sample_rows``. With an origin, each call's rows are placed: row ``j`` of a call covering
        sequences ``windows[a:b]`` (``k`` rows kept per sequence) has global position
        ``windows[a + j // k] * k + j % k``. If the helper runs fixed groups of windows
        (``origin.grouped``), each call is the very call one process makes and keeps the same
        rows. Otherwise the worker's one call stands for the one call over every window in one
        process, so it keeps the rows whose global position is a multiple of the whole set's
        stride. Either way, all workers' rows sorted by position are exactly the rows one process
        keeps, in its order.
        """
        tokens, origin = self.tokens_per_sequence, self.origin
        per_sequence = tokens - min(self.skip_leading, tokens)
        placed = origin is not None and per_sequence and len(rows) % per_sequence == 0
        windows = origin.windows[self._windows_seen : self._windows_seen + len(rows) // per_sequence] if placed else None
        if not placed or len(windows) * per_sequence != len(rows):
            return rows[:: max(1, len(rows) // self.collect.sample_rows)].astype(np.float32), None
        self._windows_seen += len(windows)
        local = np.arange(len(rows))
        positions = windows[local // per_sequence] * per_sequence + local % per_sequence
        if origin.grouped:
            keep = local % max(1, len(rows) // self.collect.sample_rows) == 0
        else:
            keep = positions % max(1, origin.total * per_sequence // self.collect.sample_rows) == 0
        return rows[keep].astype(np.float32), positions[keep]

    def synchronize(self) -> None:
        """Combine this observer's statistics with every other data-parallel worker's (module doc).

        Every worker calls it once after the observation pass; in one process it changes nothing.
        """
        self.stats.synchronize()
        if self.collect.hessian:
            self.hessian = _all_workers(self.hessian)
        if self.collect.absmean:
            self.absmean = _all_workers(self.absmean)
        if self.collect.sample_rows:
            self.sample = dist.gather_rows(self.sample)
            if self.sample_positions is not None:
                self.sample = self.sample[np.argsort(dist.gather_rows(self.sample_positions), kind="stable")]


def _all_workers(accumulator: Sums) -> Sums:
    """Every data-parallel worker's share of a row-sum accumulator merged in rank order
    (compensated sums: the same bits as one process adding every window; see :mod:`gscore.quant.stats`)."""
    if accumulator is None:
        raise CalibrationDataError("an observer saw no calibration rows on this worker, so there are no sums to combine")
    if not dist.active():
        return accumulator
    kind = type(accumulator)
    shares = zip(dist.gather(accumulator.total), dist.gather(accumulator.residual), dist.gather(np.array([accumulator.count])))
    merged = None
    for total, residual, count in shares:
        share = kind.from_sums(total, float(count[0]), residual)
        if merged is None:
            merged = share
        else:
            merged.merge(share)
    return merged


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

    def synchronize(self) -> None:
        """Combine the key and value ranges with every other data-parallel worker's."""
        self.key_stats.synchronize()
        self.value_stats.synchronize()
