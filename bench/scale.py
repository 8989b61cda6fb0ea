"""Benchmark: calibration on 1 vs 2 data-parallel workers, and streaming calibration memory by depth.

Questions answered:

1. How much faster is PTQ calibration of SmolLM2-135M (all 30 layers, the default preset:
   static A8W8, rotation, float BOS prefix) on 2 ``msrun`` workers than in one process, on this 2-core machine shared with
   other jobs? ``examples/ptq_data_parallel.py`` runs alternately alone and on 2 workers
   (``--rounds`` times, the order swapped every round); each run reports the seconds its
   calibration took between barriers (start-up and model loading excluded) and the job's wall
   time. The speed-up cannot exceed the cores the job gets: the machine's load average and CPU
   pressure are recorded before and after. The checkpoints are compared too: with the default
   forwards (all of a worker's windows at once) they differ from one process's in the last
   bits, and quantization amplifies that through the depth (activation scales move, a zero
   point steps by one; the table counts differing int8 codes and float tensors); with
   ``--windows-per-forward 1`` they are identical.
2. Does streaming calibration's peak memory stay flat with depth, where in-memory calibration
   holds the whole model? SmolLM2's real weights cut to 4, 8, 16 and 30 layers (folders
   written once into a temporary directory), each calibrated streaming and in memory by
   ``examples/ptq_streaming.py`` in a fresh process; peak RSS is the process's VmHWM. Config:
   static A8W8 + SmoothQuant (streaming refuses rotation and a float prefix, which need the
   whole model at once).

Results: ``bench/results/scale.json`` and ``.md``. Run from the repository root with
``nice -n 10 python bench/scale.py`` (``--rounds 2 --windows 8 --tokens 512 --depths 4,8,16,30``);
``--parts memory`` or ``--parts speed`` runs one part and keeps the other's earlier results (each
part records its own command, revision and load).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

EXAMPLES = common.REPO / "examples"
SPEED_PRESET = "a8w8-rotation"  # gscore_ptq.presets.DEFAULT
MEMORY_CONFIG = {"act_quant_dtype": "int8", "outliers_suppression": "smooth"}


def run_job(workers: int, out: Path, args: argparse.Namespace, windows_per_forward: int | None) -> dict[str, Any]:
    """One calibration job; its report plus the job's wall seconds."""
    from gscore.dist.launch import launch

    command = [str(EXAMPLES / "ptq_data_parallel.py"), "--out", str(out), "--windows", str(args.windows), "--tokens", str(args.tokens), "--presets", SPEED_PRESET]
    if windows_per_forward is not None:
        command += ["--windows-per-forward", str(windows_per_forward)]
    start = time.perf_counter()
    if workers == 1:
        subprocess.run([sys.executable, *command], check=True, capture_output=True)
    else:
        launch(command, workers, log_dir=out / "logs", timeout=7200)
    wall = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    return {"workers": workers, "windows_per_forward": windows_per_forward, "calibrate_s": report["calibrate_seconds"][SPEED_PRESET], "job_wall_s": wall, "load": common.load_info()}


def compare(one: Path, two: Path) -> dict[str, Any]:
    """How far two checkpoints are apart: differing int8 codes; float tensors (scales, zero
    points, norms) that differ, and the largest difference relative to the larger of the two
    tensors' magnitudes (a zero point of 0 against 1 counts as 1.0, not as a division by zero)."""
    import mindspore as ms
    import numpy as np

    a, b = ms.load_checkpoint(str(one)), ms.load_checkpoint(str(two))
    codes = differing = tensors = differing_tensors = 0
    worst = 0.0
    for name, value in a.items():
        if name == "gscore_quant_description":
            continue
        x, y = value.asnumpy(), b[name].asnumpy()
        if x.dtype == np.int8:
            codes += x.size
            differing += int((x != y).sum())
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        tensors += 1
        if not np.array_equal(x, y):
            differing_tensors += 1
            worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), np.abs(y).max())))
    return {"int8_codes": codes, "differing_codes": differing, "float_tensors": tensors, "differing_float_tensors": differing_tensors,
            "max_rel_float_difference": worst, "identical": differing == 0 and differing_tensors == 0}


def speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rounds = []
    for r in range(args.rounds):
        runs = {}
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[workers] = run_job(workers, work / f"r{r}-w{workers}", args, None)
            print(f"  round {r}, {workers} worker(s): calibration {runs[workers]['calibrate_s']:.1f} s", flush=True)
        rounds.append(runs)
    reproducible = [run_job(w, work / f"k1-w{w}", args, 1) for w in (1, 2)]
    print(f"  windows_per_forward=1: {reproducible[0]['calibrate_s']:.1f} s alone, {reproducible[1]['calibrate_s']:.1f} s on 2", flush=True)
    median = {w: statistics.median(runs[w]["calibrate_s"] for runs in rounds) for w in (1, 2)}
    return {
        "runs": [runs[w] for runs in rounds for w in sorted(runs)],
        "speedup_median": median[1] / median[2],
        "speedup_per_round": [runs[1]["calibrate_s"] / runs[2]["calibrate_s"] for runs in rounds],
        "checkpoints_default": compare(work / "r0-w1" / f"{SPEED_PRESET}.ckpt", work / "r0-w2" / f"{SPEED_PRESET}.ckpt"),
        "reproducible_runs": reproducible,
        "checkpoints_windows_per_forward_1": compare(work / "k1-w1" / f"{SPEED_PRESET}.ckpt", work / "k1-w2" / f"{SPEED_PRESET}.ckpt"),
    }


def memory(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from gscore.models.hf_folder import open_llama_folder, save_llama_folder
    from gscore.models.smollm2 import smollm2_folder

    source = open_llama_folder(smollm2_folder())
    weights = source.weights()
    rows = []
    for depth in args.depths:
        folder = work / f"smollm2-{depth}"
        kept = {name: weights[name] for name in weights if not name.startswith("model.layers.") or int(name.split(".")[2]) < depth}
        save_llama_folder(folder, replace(source.config, num_layers=depth), kept, (source.path / "tokenizer.json").read_text())
        del kept
        row: dict[str, Any] = {"depth": depth, "float_weights_mib": round((folder / "model.safetensors").stat().st_size / 2**20, 1)}
        for mode in ("streaming", "in_memory"):
            out = work / f"out-{depth}-{mode}" if mode == "streaming" else work / f"out-{depth}.ckpt"
            report = work / f"report-{depth}-{mode}.json"
            command = [sys.executable, str(EXAMPLES / "ptq_streaming.py"), str(folder), str(out), "--windows", str(args.memory_windows), "--tokens", str(args.memory_tokens),
                       "--config", json.dumps(MEMORY_CONFIG), "--report", str(report)]
            subprocess.run(command + (["--in-memory"] if mode == "in_memory" else []), check=True, capture_output=True)
            measured = json.loads(report.read_text())
            row[f"{mode}_peak_rss_mib"] = round(measured["peak_rss_mib"], 1)
            row[f"{mode}_s"] = round(measured["seconds"], 1)
        print(f"  depth {depth}: streaming {row['streaming_peak_rss_mib']:.0f} MiB, in memory {row['in_memory_peak_rss_mib']:.0f} MiB", flush=True)
        rows.append(row)
        shutil.rmtree(folder)
    return rows


def _header(part: dict[str, Any]) -> list[str]:
    load = " / ".join(f"{v:.1f}" for v in part["load_before"]["loadavg_1_5_15"])
    return [f"Command: `{part['command']}` on {part['machine']['cpu_model']} ({part['machine']['logical_cores']} cores), "
            f"revision {part['revision']}; load average 1/5/15 before: {load}.", ""]


def speed_markdown(part: dict[str, Any]) -> list[str]:
    s = part["result"]
    lines = [f"## Calibration of SmolLM2-135M, 1 process vs 2 msrun workers ({part['windows']} windows x {part['tokens']} tokens, preset {SPEED_PRESET}, 30 layers)", "", *_header(part),
             "Calibration seconds exclude start-up and model loading (timed between barriers); job wall time includes them. "
             "The load average is the machine's (other jobs share the 2 cores).", ""]
    table = [[r["workers"], r["windows_per_forward"] or "all", f"{r['calibrate_s']:.1f}", f"{r['job_wall_s']:.0f}", " / ".join(f"{v:.1f}" for v in r["load"]["loadavg_1_5_15"])] for r in s["runs"] + s["reproducible_runs"]]
    lines.append(common.md_table(["workers", "windows per forward", "calibration s", "job wall s", "load avg 1/5/15 after"], table))
    lines += [
        f"Speed-up of 2 workers (median calibration seconds, default forwards): **{s['speedup_median']:.2f}x**; per round: "
        + ", ".join(f"{v:.2f}x" for v in s["speedup_per_round"]) + ".",
        "",
        "Checkpoint of 2 workers against 1 process:",
        "",
    ]
    comparisons = [["all windows in one forward (default)", s["checkpoints_default"]], ["windows_per_forward=1", s["checkpoints_windows_per_forward_1"]]]
    lines.append(common.md_table(["forwards", "int8 codes", "differing codes", "float tensors differing", "largest relative float difference", "identical"],
                                 [[name, c["int8_codes"], c["differing_codes"], f"{c['differing_float_tensors']} of {c['float_tensors']}",
                                   f"{c['max_rel_float_difference']:.2e}", c["identical"]] for name, c in comparisons]))
    return lines


def memory_markdown(part: dict[str, Any]) -> list[str]:
    m = part["result"]
    return [
        f"## Peak RSS by depth: streaming vs in-memory calibration (SmolLM2 weights cut to each depth, {part['memory_windows']} windows x {part['memory_tokens']} tokens, static A8W8 + SmoothQuant)",
        "",
        *_header(part),
        "Each run is a fresh process; peak RSS is its VmHWM (imports and MindSpore included).",
        "",
        common.md_table(["layers", "float weights MiB", "streaming peak RSS MiB", "in-memory peak RSS MiB", "streaming s", "in-memory s"],
                        [[r["depth"], r["float_weights_mib"], r["streaming_peak_rss_mib"], r["in_memory_peak_rss_mib"], r["streaming_s"], r["in_memory_s"]] for r in m]),
    ]


PARTS = {"memory": (memory, memory_markdown), "speed": (speed, speed_markdown)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=lambda v: v.split(","), default=list(PARTS), help="which parts to run (memory,speed); the others keep their earlier results")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--depths", type=lambda v: [int(d) for d in v.split(",")], default=[4, 8, 16, 30])
    parser.add_argument("--memory-windows", type=int, default=4)
    parser.add_argument("--memory-tokens", type=int, default=256)
    args = parser.parse_args()
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; parts: {', '.join(PARTS)}")
    previous = common.RESULTS / "scale.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    for name in [p for p in PARTS if p in args.parts]:
        print(name, flush=True)
        part: dict[str, Any] = {"command": common.command_line(), "machine": common.machine_info(), "revision": common.git_revision(), "load_before": common.load_info(),
                                "windows": args.windows, "tokens": args.tokens, "rounds": args.rounds, "memory_windows": args.memory_windows, "memory_tokens": args.memory_tokens}
        with tempfile.TemporaryDirectory(prefix="gscore-scale-") as tmp:
            part["result"] = PARTS[name][0](args, Path(tmp))
        part["load_after"] = common.load_info()
        results[name] = part
        common.write_json("scale", results)
    text = "\n".join(["# Scaling out: data-parallel calibration and streaming calibration memory", ""] + [line for name in PARTS if name in results for line in PARTS[name][1](results[name]) + [""]])
    common.write_text("scale.md", text)
    print(text)


if __name__ == "__main__":
    main()
