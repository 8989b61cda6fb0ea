"""Benchmark: what running each deployed decoder block as one operator buys a decode step.

``CompiledDecoder`` runs a deployed SmolLM2 block as one native operator (``gsk_decoder_layer``)
while it holds the preallocated caches; ``fuse_blocks=False`` keeps the five linear-group and
attention operators it calls, with bit-identical results. ``bench/ptq_latency.py`` times that
step only over a few tokens; this script measures it as an A/B: for every preset, a fused and
an unfused network (deployed alike) and FP32, all compiled in one process, timed over
``--rounds`` rounds (each in a new seeded random order) of ``--steps`` greedy decode steps
after a ``--prompt``-token prompt. Per round: the median step of each network; reported: the
median over rounds of the paired ratio unfused / fused (above 1: fusing is faster) and of
FP32 / each, and every round's ratio (this 2-core VM's compiled steps are bimodal; see
bench/results/qat_step.md).

``--baseline REV`` adds, per preset, a fused network deployed on the kernels of git revision
REV (built from its sources; :func:`gscore.kernels.ops.built_from`) and reports this tree's
step over REV's, paired per round: a kernel change measured where it counts, in a whole decode
step (below 1: this tree is faster). The networks are this tree's Python, so REV's entry points
must take the inputs this tree passes them (a change of an operator's inputs cannot be raced
this way: its kernel refuses them and MindSpore stops with the kernel's error).

Usage (from bench/): python decode_fusion.py [--rounds 7] [--steps 48] [--prompt 64] [--configs a16w8 ...]
       [--baseline REV] [--output STEM]
Writes bench/results/decode_fusion.json and .md (``--output`` names another stem).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from _common import baseline_library, interleaved_rounds, load_info, md_table, provenance, write_results
from gscore import kernels
from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.models.llama import LlamaConfig
from gscore.kernels.ops import built_from
from gscore.models.smollm2 import load_smollm2
from gscore.nn.decoding import CompiledDecoder
from ptq_latency import CONFIGS, build, greedy

DEFAULT_CONFIGS = ["a16w8", "a16w4-g128", "a8w8-dynamic", "a8w8-rotation"]


def step_ms(decoder: CompiledDecoder, prompt: np.ndarray, steps: int) -> float:
    """Median milliseconds of one greedy decode step after ``prompt``."""
    return float(np.median(greedy(decoder, prompt, steps)[1]) * 1e3)


def run(args: argparse.Namespace, baseline: Path | None) -> dict[str, Any]:
    """Step times of every network; ``baseline``: REV's kernel library (``--baseline``)."""
    ms.runtime.launch_blocking()
    load_start = load_info()
    weights, config, tokenizer = load_smollm2()
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), 512, 8)
    prompt = token_windows(tokenizer, split_articles(articles, "evaluation"), 512, 1)[:, : args.prompt]
    model_config = LlamaConfig(**config)
    capacity = args.prompt + args.steps
    decoders = {"fp32": CompiledDecoder(build("fp32", model_config, weights, tokenizer, calibration)[0], capacity)}
    for name in args.configs:
        for fused in (False, True):
            decoders[f"{name}{'' if fused else ' unfused'}"] = CompiledDecoder(build(name, model_config, weights, tokenizer, calibration)[0], capacity, fuse_blocks=fused)
        if baseline is not None:
            with built_from(baseline):
                decoders[f"{name} {args.baseline}"] = CompiledDecoder(build(name, model_config, weights, tokenizer, calibration)[0], capacity)
        print(f"built {name}", flush=True)
    for decoder in decoders.values():
        step_ms(decoder, prompt, 2)  # compile both graphs before timing
    rounds = interleaved_rounds({name: (lambda d=decoder: step_ms(d, prompt, args.steps)) for name, decoder in decoders.items()}, args.rounds)
    results = {}
    for name in args.configs:
        fused, unfused, fp32 = (np.array(rounds[key]) for key in (name, f"{name} unfused", "fp32"))
        results[name] = {
            "fused_ms": fused.tolist(),
            "unfused_ms": unfused.tolist(),
            "unfused_over_fused": (unfused / fused).tolist(),
            "median_unfused_over_fused": float(np.median(unfused / fused)),
            "median_fp32_over_fused": float(np.median(fp32 / fused)),
            "median_fp32_over_unfused": float(np.median(fp32 / unfused)),
        }
        if baseline is not None:
            theirs = np.array(rounds[f"{name} {args.baseline}"])
            results[name].update({"baseline_ms": theirs.tolist(), "fused_over_baseline": (fused / theirs).tolist(), "median_fused_over_baseline": float(np.median(fused / theirs))})
    return {
        **provenance(load_start),
        "kernel_level": kernels.level(),
        "args": vars(args),
        "fp32_ms": rounds["fp32"],
        "results": results,
    }


def markdown(res: dict[str, Any]) -> str:
    args, load = res["args"], (res["load_start"]["loadavg_1_5_15"][0], res["load_end"]["loadavg_1_5_15"][0])
    rev = args.get("baseline")
    header = ["preset", "five operators, ms", "one operator, ms", "five / one", "five / one, each round", "FP32 / five", "FP32 / one"]
    if rev:
        header += [f"one operator on {rev}'s kernels, ms", f"this / {rev}", f"this / {rev}, each round"]
    rows = []
    for name, r in res["results"].items():
        row = [
            name,
            f"{np.median(r['unfused_ms']):.1f}",
            f"{np.median(r['fused_ms']):.1f}",
            f"**{r['median_unfused_over_fused']:.2f}x**",
            " / ".join(f"{x:.2f}" for x in r["unfused_over_fused"]),
            f"{r['median_fp32_over_unfused']:.2f}x",
            f"{r['median_fp32_over_fused']:.2f}x",
        ]
        if rev:
            row += [f"{np.median(r['baseline_ms']):.1f}", f"**{r['median_fused_over_baseline']:.3f}x**", " / ".join(f"{x:.3f}" for x in r["fused_over_baseline"])]
        rows.append(row)
    return (
        "# A deployed block as one operator vs five: SmolLM2-135M decode step\n\n"
        f"Command: `{res['command']}` (git {res['git'][:12]}); native kernel level `{res['kernel_level']}`; "
        f"{res['machine']['cpu_model']}, {res['machine']['usable_cores']} cores, load average {load[0]:.1f} at start and {load[1]:.1f} at end.\n\n"
        f"{args['rounds']} rounds of {args['steps']} greedy steps after a {args['prompt']}-token prompt, the networks in a new random order each round; "
        f"per round the median step of each network. FP32 step: median {np.median(res['fp32_ms']):.1f} ms. Ratios are paired per round, then the median over rounds."
        + (f" '{rev}': the same preset deployed on the kernels built from git {rev}'s sources, in the same process." if rev else "")
        + "\n\n"
        + md_table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=CONFIGS)
    parser.add_argument("--baseline", help="git revision whose kernels a third network per preset is deployed on")
    parser.add_argument("--output", default="decode_fusion", help="stem of the result files in bench/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = baseline_library(args.baseline, kernels.level(), Path(tmp)) if args.baseline else None
        write_results(args.output, run(args, baseline), markdown)


if __name__ == "__main__":
    main()
