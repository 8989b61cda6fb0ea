"""Which calibration windows (or batch rows) one worker holds.

Items are dealt in groups of ``group`` consecutive items (1 by default): worker ``r`` of ``n``
holds groups ``r, r + n, r + 2n, ...``. Strided rather than contiguous, so the first few items
(a search scored on the first windows) are spread over the workers instead of all landing on
rank 0; in groups, so that a helper that runs a fixed number of windows per forward pass runs
exactly the forwards one process runs. Every quantity a worker computes on its items is keyed
by their global indices, which is how gathered rows are put back in the order one process
holding everything would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gscore.dist.runtime import rank, size
from gscore.errors import CalibrationDataError


@dataclass(frozen=True)
class Shard:
    """Worker ``rank`` of ``size`` and the ``total`` items it shares out in groups of ``group``."""

    rank: int
    size: int
    total: int
    group: int = 1

    @classmethod
    def of(cls, total: int, group: int = 1, what: str = "calibration windows") -> "Shard":
        """This process's shard of ``total`` items; every worker must hold at least one group."""
        workers = size()
        if -(-total // group) < workers:
            raise CalibrationDataError(
                f"{workers} data-parallel workers need at least {workers} groups of {group} {what} (one each), got {total} {what}"
            )
        return cls(rank(), workers, total, group)

    @property
    def indices(self) -> np.ndarray:
        """Global indices of the items this worker holds, ascending (int64)."""
        starts = np.arange(self.rank * self.group, self.total, self.size * self.group, dtype=np.int64)
        items = (starts[:, None] + np.arange(self.group, dtype=np.int64)).ravel()
        return items[items < self.total]

    def held_below(self, count: int) -> int:
        """How many of the global first ``count`` items this worker holds (they are its first ones)."""
        return int(np.count_nonzero(self.indices < count))

    def take(self, items: Any) -> Any:
        """This worker's items of a sequence that numpy can index (array, list)."""
        if isinstance(items, np.ndarray):
            return items[self.indices]
        return [items[int(i)] for i in self.indices]
