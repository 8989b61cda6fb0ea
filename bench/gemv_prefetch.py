"""How far ahead the decode GEMV should prefetch weight rows (``GSCORE_KERNEL_PREFETCH``).

The kernels read ``GSCORE_KERNEL_PREFETCH`` (GEMV blocks ahead, 0 = no software prefetch) once,
when the library loads, so every setting runs in its own process; settings alternate over
``--rounds`` rounds so machine load is shared. Each process measures:

* the int8 GEMV alone (ctypes, no framework) streaming the int8 weights of SmolLM2-135M's 30
  blocks at M = 1 (106 MB, random codes; what one decode step reads), weight-only (w8) and
  dynamic A8W8: GB/s, median of 12 passes after 3 warm-up passes;
* a compiled SmolLM2 A16W8 + int8-head decode step (``kernel_pool.child``): median ms per step.

Usage: python bench/gemv_prefetch.py [--rounds 2] [--steps 40]
Writes bench/results/gemv_prefetch.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from _common import command_line, git_revision, load_info, machine_info, md_table, write_results

SETTINGS = ("0", "1", "2", "4")
BLOCK_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # (N, K): q k v o gate up down


def stream_gb_s(kind: str) -> float:
    """GB/s of kernel ``kind`` (w8 or a8w8) over SmolLM2's 30 blocks of int8 weights, M = 1."""
    from gscore import kernels
    from gscore.kernels.direct import Call

    rng = np.random.default_rng(0)
    calls, total = [], 0
    for n, k in BLOCK_SHAPES * 30:
        x, y = rng.standard_normal((1, k)).astype(np.float32), np.empty((1, n), np.float32)
        q = rng.integers(-127, 128, (n, k)).astype(np.int8)
        scale, zp = (rng.random(n) * 0.01 + 1e-3).astype(np.float32), np.zeros(n, np.float32)
        inputs = [x, q, scale, zp] if kind == "w8" else [x, q, scale, zp, np.ones(k, np.float32)]
        calls.append(Call("w8_linear" if kind == "w8" else "a8w8_dynamic_linear", kernels.level(), inputs, [y]))
        total += n * k
    seconds = []
    for _ in range(15):
        start = time.perf_counter()
        for call in calls:
            call.run()
        seconds.append(time.perf_counter() - start)
    return total / float(np.median(seconds[3:])) / 1e9


def child(steps: int) -> dict[str, float]:
    from kernel_pool import child as decode_step

    return {"w8_gb_s": stream_gb_s("w8"), "a8w8_gb_s": stream_gb_s("a8w8"), **decode_step("a16w8+int8-head", steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    from gscore import kernels

    report: dict[str, Any] = {"command": command_line(), "git": git_revision(), "machine": machine_info(), "kernel_level": kernels.level(), "load_start": load_info()}
    samples: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            env = {**os.environ, "GSCORE_KERNEL_PREFETCH": setting}
            out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps)], env=env, capture_output=True, text=True, check=True)
            samples[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(setting, samples[setting][-1], flush=True)
    report["load_end"] = load_info()
    report["samples"] = samples
    report["median"] = {s: {key: float(np.median([r[key] for r in rows])) for key in rows[0]} for s, rows in samples.items()}
    write_results("gemv_prefetch", report, markdown)


def markdown(report: dict[str, Any]) -> str:
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    median = report["median"]
    rows = [
        [s, f"{m['w8_gb_s']:.1f}", f"{m['a8w8_gb_s']:.1f}", f"{m['ms_per_step']:.1f}", " / ".join(f"{r['ms_per_step']:.1f}" for r in report["samples"][s])]
        for s, m in median.items()
    ]
    return "\n".join(
        [
            "# Decode GEMV software prefetch distance (GSCORE_KERNEL_PREFETCH), SmolLM2-135M shapes",
            "",
            f"Command: `{report['command']}` (git {report['git'][:12]}); kernel level `{report['kernel_level']}`; {report['machine']['cpu_model']}, "
            f"{report['machine']['usable_cores']} cores, load average {load[0]} at start and {load[1]} at end. One process per setting, settings alternating; medians over rounds.",
            "",
            md_table(["blocks ahead", "w8 GEMV GB/s", "dynamic A8W8 GEMV GB/s", "A16W8 + int8 head decode ms/step", "ms/step each round"], rows),
        ]
    )


if __name__ == "__main__":
    main()
