"""The temperature schedule of the SLB search, and the two ways to drive it.

Over a run of ``total_steps`` optimizer steps, with ``p = step / total_steps``:

* ``p <= t_start_time``: ``T = t_start`` (soft search);
* ``t_start_time < p < t_end_time``: ``T`` rises geometrically from ``t_start`` to ``t_end``;
* ``p >= t_end_time``: weights are hard (argmax), the remaining steps fine-tune what is still
  continuous (scales, biases, BatchNorm) around the chosen discrete weights.

Drive it per step either functionally, ``schedule.step(network)`` before each optimizer step
in a ``value_and_grad`` loop, or with :class:`TemperatureCallback` in ``mindspore.train.Model``.
"""

from __future__ import annotations

import math

import numpy as np

from mindspore import Tensor, nn, ops
from mindspore.train import Callback

from gscore.nn.walk import iter_cells
from gscore_slb.config import SLBConfig
from gscore_slb.search import SlbWeight


class TemperatureSchedule:
    """Temperature and hard/soft mode as a function of the training step (module docstring)."""

    def __init__(self, config: SLBConfig, total_steps: int) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int (optimizer steps of the whole run), got {total_steps!r}")
        self.config = config
        self.total_steps = total_steps
        self.current = 0

    def at(self, step: int) -> tuple[float, bool]:
        """``(temperature, hard)`` at optimizer step ``step`` (0-based)."""
        cfg = self.config
        p = step / self.total_steps
        if p >= cfg.t_end_time:
            return cfg.t_end, True
        if p <= cfg.t_start_time:
            return cfg.t_start, False
        frac = (p - cfg.t_start_time) / (cfg.t_end_time - cfg.t_start_time)
        return cfg.t_start * math.exp(frac * math.log(cfg.t_end / cfg.t_start)), False

    def apply(self, network: nn.Cell, step: int) -> tuple[float, bool]:
        """Set every SLB weight of ``network`` to the schedule's state at ``step``."""
        temperature, hard = self.at(step)
        value = Tensor(np.float32(temperature))
        for _, weight in iter_cells(network, lambda c: isinstance(c, SlbWeight)):
            ops.assign(weight.temperature, value)
            weight.hard = hard
        return temperature, hard

    def step(self, network: nn.Cell) -> tuple[float, bool]:
        """The functional driver: apply the state of the next step, then advance the counter."""
        state = self.apply(network, self.current)
        self.current += 1
        return state


class TemperatureCallback(Callback):
    """``mindspore.train.Model`` callback that applies the schedule at each step's beginning."""

    def __init__(self, schedule: TemperatureSchedule, network: nn.Cell) -> None:
        super().__init__()
        self.schedule = schedule
        self.network = network

    def on_train_step_begin(self, run_context: object) -> None:
        self.schedule.step(self.network)
