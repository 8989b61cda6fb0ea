"""pytest fixtures for gscore and its plugins.

* ``gscore_host`` — a freshly discovered plugin host, forgotten again after the test, so
  env switches set with ``monkeypatch`` take effect and nothing leaks between tests.
* ``register_inline_plugin`` — register a module or object holding ``@gscore.hookimpl``
  functions into that host for one test, as if an installed plugin had provided it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from gscore import plugins
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
