"""Run MindSpore's host task queue inline, because on small CPUs its worker threads starve the compute.

MindSpore hands host work (launching a compiled graph's kernels, PyNative operators) to a
worker thread through a queue; the Python thread then busy-waits for the queue to drain while
an actor thread spins in ``sched_yield``. On a 2-core machine those two spinning threads leave
the thread doing the arithmetic a fraction of a core: a share of compiled LeNet5 training
steps took 5-15 times their normal time, float ones included (perf: 46 % of the cycles in the
wait loop, about 40 % yielding, 8 % in kernels). ``MS_DEV_HOST_BLOCKING_RUN=1``, a documented
MindSpore variable, runs each task inline on the calling thread instead; the measurements are in
bench/results/host_dispatch.md.
"""

from __future__ import annotations

import os

VARIABLE = "MS_DEV_HOST_BLOCKING_RUN"
"""MindSpore's switch: ``1`` runs host tasks inline, ``0`` (MindSpore's default) on worker threads."""


def prefer_inline() -> None:
    """Choose inline host dispatch unless the user chose already (``MS_DEV_HOST_BLOCKING_RUN=0``
    keeps MindSpore's worker threads).

    MindSpore reads the variable once per process, when it queues its first task, so this only
    takes effect if no MindSpore operator has run yet; importing gscore first is enough.
    """
    os.environ.setdefault(VARIABLE, "1")
