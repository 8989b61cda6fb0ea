"""pytest fixtures for gscore and its plugins.

* ``gscore_host`` — a freshly discovered plugin host, forgotten again after the test, so
  env switches set with ``monkeypatch`` take effect and nothing leaks between tests.
* ``register_inline_plugin`` — register a module or object holding ``@gscore.hookimpl``
  functions into that host for one test, as if an installed plugin had provided it.
* ``kernel_path`` — runs the test twice, once with the native kernels and once on the portable
  MindSpore path (``GSCORE_KERNELS=portable``), so deployed networks are checked on both.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Iterator

import pytest

from gscore import kernels, plugins
from gscore.plugins import PluginHost
from gscore.registry import PluginSource


@pytest.fixture
def gscore_host() -> Iterator[PluginHost]:
    plugins.reset_host()
    yield plugins.host()
    plugins.reset_host()


@pytest.fixture
def register_inline_plugin(gscore_host: PluginHost) -> Callable[..., Any]:
    def register(plugin: Any, name: str, distribution: str = "inline-test-plugin") -> Any:
        gscore_host._register(plugin, name, PluginSource(name, distribution, "0"))
        return plugin

    return register


@pytest.fixture(params=["native", "portable"])
def kernel_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Build the test's networks with the native kernels, then (second run) on the portable path.

    ``native`` is ``GSCORE_KERNELS`` when that names a native level, else ``auto``; a machine
    that cannot build the kernels runs the portable path there too (the fallback warning is
    tested on its own in the core suite, so it is silenced here). Yields the active level.
    """
    choice = kernels.PORTABLE
    if request.param == "native":
        requested = os.environ.get(kernels.ENV, "").strip().lower()
        choice = requested if requested not in ("", kernels.PORTABLE) else kernels.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced(choice) as level:
            yield level
