"""Algorithm classes importable by name, for programs ported from Golden Stick.

``from gscore.registered import RoundToNearest as RTN`` resolves ``RoundToNearest`` through
the registry (it is an alias of ``rtn``), so the core never imports a plugin yet a ported
program only changes its import lines. Any registered name or alias works.
"""

from __future__ import annotations

from gscore.plugins import get


def __getattr__(name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    return get(name)
