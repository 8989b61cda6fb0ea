"""PTQ on SmolLM2-135M: perplexity, size, memory, calibration time and latency of every option.

Each configuration runs in its own subprocess (so peak RSS is its own); all of them run in
one bench invocation so the latency ratios against FP32 are measured on the same machine
state. Windows: ``--eval`` windows of ``--tokens`` tokens from the evaluation articles,
``--calib`` windows from the calibration articles (see gscore.data.wikipedia for the split).

Also measures layer-by-layer calibration memory on synthetic Llamas of two depths: peak RSS
minus the weights' bytes must not grow with depth.

Perplexity changes are paired: per-window NLL differences against FP32 on the same windows,
reported as Δ ± its standard error over windows. Calibration time is compared with the float
forwards over the same calibration windows, measured in the same process just before.

Usage: python bench/ptq.py [--eval 16] [--calib 16] [--tokens 512] [--rows fp32,a16w8,...] [--resume]
       [--config NAME='{"act_quant_dtype": "int8", ...}'] (an extra row, repeatable)
       [--pair CANDIDATE:BASELINE] (a paired perplexity change between two rows, repeatable)
       python bench/ptq.py --output STEM --render [--pair ...] (rewrite STEM.md from STEM.json)
Writes bench/results/ptq.json and bench/results/ptq.md (``--output`` names another stem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from gscore_ptq.presets import PRESETS, preset

RESULTS = Path(__file__).resolve().parent / "results"

ROWS: dict[str, dict | None] = {"fp32": None, **{name: preset(name) for name in PRESETS}}
EXTRA_ROWS: dict[str, dict] = {}


def windows_file(args: argparse.Namespace, path: Path) -> Path:
    """Token windows computed once per bench run and shared by the row subprocesses."""
    import numpy as np

    from gscore.data.wikipedia import load_articles, split_articles, token_windows
    from gscore.models.smollm2 import load_smollm2

    _, _, tokenizer = load_smollm2()
    articles = load_articles()
    np.savez(
        path,
        calibration=token_windows(tokenizer, split_articles(articles, "calibration"), args.tokens, args.calib),
        evaluation=token_windows(tokenizer, split_articles(articles, "evaluation"), args.tokens, args.eval),
    )
    return path


def run_row(name: str, windows: str, out: str) -> None:
    """One configuration, in a fresh process: quantize, save, deploy from the file, measure."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    import gscore
    from gscore import PTQConfig
    from gscore.eval.perplexity import llama_forward, window_nll
    from gscore.io import load_checkpoint, save_checkpoint
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore.models.smollm2 import load_smollm2
    from gscore.observers.phase_timer import peak_rss_mib

    ms.runtime.launch_blocking()
    data = np.load(windows)
    calibration, evaluation = data["calibration"], data["evaluation"]
    weights, config, tokenizer = load_smollm2()
    model_config = LlamaConfig(**config)
    net = build_llama(model_config, weights)
    row: dict = {"name": name}
    kwargs = {**ROWS, **EXTRA_ROWS}[name]
    row["config"] = kwargs
    ckpt = Path(out).with_suffix(".ckpt")
    row["float_calibration_forward_s"] = float_forwards(net, calibration)
    if kwargs is None:
        save_checkpoint(net, ckpt)
        deployed = net
    else:
        algo = gscore.get("ptq")(PTQConfig(**kwargs))
        start = time.perf_counter()
        algo.apply(net, LlamaHelper(tokenizer), datasets=calibration)
        row["calibration_s"] = time.perf_counter() - start
        start = time.perf_counter()
        algo.convert(net)
        row["convert_s"] = time.perf_counter() - start
        if algo.distillation is not None:
            row["distillation"] = dataclasses.asdict(algo.distillation)
        save_checkpoint(net, ckpt, description=algo.describe(net))
        del net
        deployed = build_llama(model_config, weights)
        row["float_calibration_forward_after_s"] = float_forwards(deployed, calibration)
        deploy = gscore.get("ptq")(PTQConfig(mode="deploy", **kwargs))
        deploy.convert(deploy.apply(deployed, LlamaHelper(tokenizer)))
        load_checkpoint(ckpt, deployed)
    row["ckpt_bytes"] = ckpt.stat().st_size
    row["weight_bytes"] = int(sum(p.nbytes for p in deployed.get_parameters()))
    row["nll"] = window_nll(llama_forward(deployed), evaluation).tolist()
    row["ppl"] = float(np.exp(np.mean(row["nll"])))
    latencies = []
    for _ in range(3):
        deployed.reset_cache()
        start = time.perf_counter()
        deployed(Tensor(evaluation[:1]), 0).asnumpy()
        latencies.append(time.perf_counter() - start)
    row["kv_cache_bytes_per_window"] = deployed.cache_bytes()
    deployed.reset_cache()
    row["forward_s"] = sorted(latencies)[1]
    row["greedy"] = LlamaHelper(tokenizer).complete(deployed, "The capital of France is", max_new_tokens=4)
    row["peak_rss_mib"] = peak_rss_mib()
    ckpt.unlink()
    Path(out).write_text(json.dumps(row))


def calibration_parser(description: str) -> argparse.ArgumentParser:
    """The options every calibration-time script takes: a preset, the windows, the result stem."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--calib", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--output", default=None)
    return parser


def calibration_setup(calib: int, tokens: int) -> tuple:
    """SmolLM2's ``(weights, config, tokenizer)`` and ``calib`` calibration windows of ``tokens``
    (the fixed split), for the calibration-time scripts; MindSpore waits for every operator."""
    import mindspore as ms

    from gscore.data.wikipedia import load_articles, split_articles, token_windows
    from gscore.models.smollm2 import load_smollm2

    ms.runtime.launch_blocking()
    weights, config, tokenizer = load_smollm2()
    return weights, config, tokenizer, token_windows(tokenizer, split_articles(load_articles(), "calibration"), tokens, calib)


def float_forwards(net, windows) -> float:
    """Seconds of float forwards of ``net`` over ``windows`` [n, tokens], one window at a time."""
    from mindspore import Tensor

    start = time.perf_counter()
    for window in windows:
        net.reset_cache()
        net(Tensor(window[None]), 0)
    net.reset_cache()
    return time.perf_counter() - start


def calibration_ratio(row: dict) -> float:
    """Calibration seconds over the float forwards of the same windows: timed just before
    calibration and (rows measured since it was added) on a fresh float network just after;
    their mean is the reference, so a load change during the row moves both sides."""
    forwards = [row["float_calibration_forward_s"], *([row["float_calibration_forward_after_s"]] if "float_calibration_forward_after_s" in row else [])]
    return row["calibration_s"] / (sum(forwards) / len(forwards))


PROBE_PRESETS = ("a8w8-rotation", "a16w4-g128-gptq")
"""Presets whose calibration memory is probed: the default, and GPTQ (one Hessian per layer)."""


def memory_probe(name: str, depth: int, out: str) -> None:
    """Calibration with preset ``name`` of a random SmolLM2-shaped Llama of ``depth`` blocks."""
    import mindspore as ms
    import numpy as np

    import gscore
    from gscore import PTQConfig
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore.observers.phase_timer import peak_rss_mib

    ms.runtime.launch_blocking()
    net = build_llama(LlamaConfig(num_layers=depth))
    weight_mib = sum(p.nbytes for p in net.get_parameters()) / 2**20
    before = peak_rss_mib()
    calibration = np.random.default_rng(0).integers(0, 49152, (8, 256), dtype=np.int32)
    algo = gscore.get("ptq")(PTQConfig(**preset(name, progress=False)))
    algo.apply(net, LlamaHelper(), datasets=calibration)
    Path(out).write_text(json.dumps({"preset": name, "depth": depth, "weights_mib": weight_mib, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib()}))


def _child(args: list[str], out: Path, resume: bool) -> dict:
    """Run one measurement in a fresh process; with ``resume``, reuse a result already on disk."""
    if not (resume and out.exists()):
        subprocess.run([sys.executable, __file__, *args, "--out", str(out)], check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", type=int, default=16)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--config", action="append", default=[], help="NAME=JSON: an extra row with these PTQConfig fields")
    parser.add_argument("--output", default="ptq", help="stem of the result files in bench/results")
    parser.add_argument("--resume", action="store_true", help="keep rows measured by an interrupted run (same windows)")
    parser.add_argument("--no-probe-memory", dest="probe_memory", action="store_false", help="skip the layer-by-layer memory probe")
    parser.add_argument("--pair", action="append", default=[], help="CANDIDATE:BASELINE: also report the paired perplexity change between two rows")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown of an existing --output JSON (with its --pair lines)")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--windows", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for item in args.config:
        name, _, fields = item.partition("=")
        EXTRA_ROWS[name] = json.loads(fields)
    if args.row:
        return run_row(args.row, args.windows, args.out)
    if args.probe:
        name, depth = args.probe.split(":")
        return memory_probe(name, int(depth), args.out)

    pairs = [item.split(":") for item in args.pair]
    if args.render:
        report = json.loads((RESULTS / f"{args.output}.json").read_text())
        report["pairs"] = pairs
        (RESULTS / f"{args.output}.json").write_text(json.dumps(report, indent=2))
        (RESULTS / f"{args.output}.md").write_text(markdown(report))
        return
    RESULTS.mkdir(exist_ok=True)
    windows = RESULTS / f".{args.output}-windows.npz"
    if not (args.resume and windows.exists()):
        windows = windows_file(args, windows)
    rows = []
    for name in args.rows.split(","):
        print(f"bench ptq: {name}", flush=True)
        extra = [f"--config={name}={json.dumps(EXTRA_ROWS[name])}"] if name in EXTRA_ROWS else []
        rows.append(_child(["--row", name, "--windows", str(windows), *extra], RESULTS / f".{args.output}-{name}.json", args.resume))
    probes = [
        _child(["--probe", f"{name}:{depth}"], RESULTS / f".{args.output}-probe-{name}-{depth}.json", args.resume)
        for name in PROBE_PRESETS
        for depth in (4, 16)
    ] if args.probe_memory else []
    for tmp in RESULTS.glob(f".{args.output}-*"):
        tmp.unlink()
    report = {
        "command": "python bench/ptq.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
        "windows": {"eval": args.eval, "calib": args.calib, "tokens": args.tokens},
        "rows": rows,
        "memory_probe": probes,
        "pairs": pairs,
    }
    (RESULTS / f"{args.output}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{args.output}.md").write_text(markdown(report))
    print(markdown(report))


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def markdown(report: dict) -> str:
    import numpy as np

    from gscore.eval.perplexity import paired_delta

    rows = report["rows"]
    fp32 = next(r for r in rows if r["name"] == "fp32")
    w = report["windows"]
    lines = [
        f"# PTQ on SmolLM2-135M ({w['eval']} eval windows x {w['tokens']} tokens, {w['calib']} calibration windows)",
        "",
        f"Command: `{report['command']}` on {report['machine']['cpu']} ({report['machine']['cores']} cores).",
        "",
        "Δ: perplexity change against FP32 on the same windows ± its paired standard error over windows.",
        "Calibration: seconds, and in brackets the ratio to the float forwards over the calibration windows measured in the same process "
        "(the mean of the forwards timed just before calibration and, on a fresh float network, just after).",
        "",
        "| config | PPL | Δ vs FP32 | checkpoint MiB | weights MiB | KV cache KiB / window | calibration s (× float fwd) | peak RSS MiB | forward s (× FP32) | greedy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = paired_delta(np.array(r["nll"]), np.array(fp32["nll"]))
        calib = f"{r['calibration_s']:.1f} ({calibration_ratio(r):.2f}×)" if "calibration_s" in r else f"({r['float_calibration_forward_s']:.1f} s float fwd)"
        lines.append(
            f"| {r['name']} | {r['ppl']:.3f} | {delta} | {r['ckpt_bytes'] / 2**20:.1f} | {r['weight_bytes'] / 2**20:.1f} | "
            f"{r['kv_cache_bytes_per_window'] / 1024:.0f} | {calib} | {r['peak_rss_mib']:.0f} | {r['forward_s']:.2f} ({r['forward_s'] / fp32['forward_s']:.2f}×) | {r['greedy']!r} |"
        )
    by_name = {r["name"]: r for r in rows}
    if report.get("pairs"):
        lines += ["", "Paired changes between configs (per-window NLL differences on the same windows; the ± is over windows only, not over "
                  "what a different rotation or calibration sample would give):", "", "| config | against | Δ PPL |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {paired_delta(np.array(by_name[a]['nll']), np.array(by_name[b]['nll']))} |" for a, b in report["pairs"]]
    distilled = [r for r in rows if r.get("distillation")]
    if distilled:
        lines += ["", "Weight-scale distillation, run by `convert` after calibration (KL(float || quantized) per token on the calibration "
                  "windows, the mean over each epoch's steps; seconds of the whole convert):", "",
                  "| config | epochs | learning rate | scales trained | KL per epoch | diverged | convert s (× float fwd) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {d['epochs']} | {d['learning_rate']:g} | {d['trained_scales']:,} | {' → '.join(f'{v:.4f}' for v in d['kl_per_epoch'])} | "
                  f"{'yes' if d['diverged'] else 'no'} | {r['convert_s']:.0f} ({r['convert_s'] / r['float_calibration_forward_s']:.1f}×) |"
                  for r in distilled for d in [r["distillation"]]]
    lines += ["", "Configs:", ""] + [f"- {r['name']}: `{json.dumps(r['config'])}`" for r in rows]
    if not report["memory_probe"]:
        return "\n".join(lines) + "\n"
    lines += ["", "Layer-by-layer calibration memory (random SmolLM2-shaped weights, 8 × 256 tokens):", "",
              "| preset | depth | weights MiB | peak RSS MiB | peak − weights MiB |", "|---|---|---|---|---|"]
    for p in report["memory_probe"]:
        lines.append(f"| {p['preset']} | {p['depth']} | {p['weights_mib']:.0f} | {p['peak_rss_mib']:.0f} | {p['peak_rss_mib'] - p['weights_mib']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
