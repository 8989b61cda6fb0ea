#!/usr/bin/env bash
# Create or reuse .venv and install gscore, every plugin in plugins/, pinned MindSpore and the
# data assets. A stamp of the inputs' hash makes a second run skip what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${GSCORE_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.gscore-setup-stamp"
want=$(cat requirements/*.txt pyproject.toml plugins/*/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup: installing requirements into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check -r requirements/runtime.txt
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/assets.txt
editables=(-e .)
for plugin in plugins/*/; do editables+=(-e "$plugin"); done
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation "${editables[@]}"
echo "$want" > "$stamp"
echo "setup: done"
