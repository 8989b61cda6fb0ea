"""Importing gscore chooses inline host dispatch for MindSpore, unless the user chose already."""

import os
import subprocess
import sys

import pytest

from gscore import host_dispatch

PRINT_SETTING = f"import gscore, os; print(os.environ.get({host_dispatch.VARIABLE!r}))"


def setting_after_import(value: str | None) -> str:
    """The variable's value in a fresh interpreter that imported gscore, started with ``value`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != host_dispatch.VARIABLE}
    if value is not None:
        env[host_dispatch.VARIABLE] = value
    done = subprocess.run([sys.executable, "-c", PRINT_SETTING], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_chooses_inline_when_unset():
    assert setting_after_import(None) == "1"


@pytest.mark.parametrize("chosen", ["0", "1"])
def test_import_keeps_the_users_choice(chosen):
    assert setting_after_import(chosen) == chosen
