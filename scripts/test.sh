#!/usr/bin/env bash
# Set up (or reuse) the environment, then run the whole test suite. Extra args go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${GSCORE_VENV:-.venv}/bin/python" -m pytest "$@"
