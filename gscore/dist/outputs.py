"""Writing a result once from a data-parallel job: rank 0 writes, after every worker showed it holds the same."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, TypeVar

from gscore.dist.collectives import agree, barrier
from gscore.dist.runtime import active, is_root

Save = TypeVar("Save", bound=Callable[..., Any])


def written_by_root(save: Save) -> Save:
    """Wrap ``save(network, path, ...)`` for data-parallel jobs.

    Under ``msrun``, every worker computes the digest of its network's parameters and the
    workers compare them (:class:`~gscore.errors.DistributedMismatchError` on every worker if
    any differs); then rank 0 alone calls ``save``, and every worker returns only once the
    file is written (the others return ``Path(path)``). Outside ``msrun`` it is ``save`` itself.
    """

    @functools.wraps(save)
    def write_once(network: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        if not active():
            return save(network, path, *args, **kwargs)
        from gscore.io.digest import parameters_digest

        agree(f"the parameters saved to {path}", parameters_digest(network))
        result = save(network, path, *args, **kwargs) if is_root() else None
        barrier()
        return result if is_root() else Path(path)

    return write_once  # type: ignore[return-value]
