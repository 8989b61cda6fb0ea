#!/usr/bin/env bash
# Set up (or reuse) the environment, then run the main job through the gscore CLI: quantize
# SmolLM2-135M with the best static A8W8 recipe into a checked checkpoint, evaluate FP32 and
# the deployed checkpoint side by side, and write the report with its plots.
# Extra arguments go to `gscore quantize` (e.g. --calib 4 --tokens 256); GSCORE_OUT sets the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GSCORE="${GSCORE_VENV:-.venv}/bin/gscore"
OUT="${GSCORE_OUT:-runs/main}"
"$GSCORE" quantize smollm2-135m --recipe recipes/a8w8-rotation.yaml --out "$OUT" --force "$@"
"$GSCORE" eval "$OUT"
"$GSCORE" generate "$OUT" --compare --max-new-tokens 8
"$GSCORE" report "$OUT"
