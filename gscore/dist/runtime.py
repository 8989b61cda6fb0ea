"""Whether this process is one worker of an ``msrun`` job, and which.

``msrun`` starts one scheduler process and ``--worker_num`` worker processes, all running the
same script, and tells each its role through the environment (``MS_ROLE`` = ``MS_SCHED`` or
``MS_WORKER``). Nothing here imports MindSpore's communication stack unless that variable says
the process belongs to such a job, so single-process runs are untouched.

:func:`init` must run before any heavy work: in the scheduler process MindSpore's ``init()``
serves the cluster until the workers finish and then ends the process, so whatever a script
does before calling it, the scheduler does too.
"""

from __future__ import annotations

import os

ROLE_VARIABLE = "MS_ROLE"
WORKER_ROLE = "MS_WORKER"
SCHEDULER_ROLE = "MS_SCHED"

_joined: dict[str, int] = {}


def launched() -> bool:
    """True in every process ``msrun`` started (workers and the scheduler)."""
    return os.environ.get(ROLE_VARIABLE) in (WORKER_ROLE, SCHEDULER_ROLE)


def active() -> bool:
    """True in an ``msrun`` worker: calibration and training run data-parallel."""
    return os.environ.get(ROLE_VARIABLE) == WORKER_ROLE


def init() -> None:
    """Join the ``msrun`` job (outside one: nothing) and put MindSpore in data-parallel mode. Idempotent.

    In the scheduler process this never returns (MindSpore ends the process when the job is
    done), which is why scripts call it first.
    """
    if _joined or not launched():
        return
    from mindspore.communication import get_group_size, get_rank
    from mindspore.communication import init as join_cluster

    join_cluster()
    _joined["rank"], _joined["size"] = int(get_rank()), int(get_group_size())
    import mindspore as ms

    # MindSpore's data-parallel mode: Model.train and DistributedGradReducer average gradients over the workers
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)


def rank() -> int:
    """This worker's index, 0..size-1 (0 outside ``msrun``)."""
    if not active():
        return 0
    init()
    return _joined["rank"]


def size() -> int:
    """How many workers share the job (1 outside ``msrun``)."""
    if not active():
        return 1
    init()
    return _joined["size"]


def is_root() -> bool:
    """True in the worker that writes shared outputs (rank 0; the only process outside ``msrun``)."""
    return rank() == 0
