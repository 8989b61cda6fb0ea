#!/usr/bin/env bash
# Set up (or reuse) the environment, then run the main job: a real compression run with a report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${GSCORE_VENV:-.venv}/bin/python" examples/ptq_smollm2.py "$@"
