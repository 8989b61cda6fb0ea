"""A quantized network's float output head on gscore's kernel against MindSpore's MatMul.

``CompiledDecoder`` groups a deployed network's blocks, and ``LlamaForCausalLM.group_linears``
then moves a float output head onto the ``f32_linear`` kernel: MindSpore runs such a graph of a
few dozen operators on the calling thread, where its MatMul split the head between that thread
and both pool threads (three threads on two cores). This script builds the same preset twice,
sets one copy's head back to MindSpore's MatMul (``head_kernel = None`` before its first,
compiling call) and races the two in one process, each round in a new random order: a
``--tokens``-token prefill (every token's logits) and ``--new`` greedy decode steps after a
``--prompt``-token prompt. Reported per preset: medians, and the kernel head's time over the
MatMul head's per round (paired), mean ± standard error.

Usage: python bench/head_kernel.py [--configs a16w8 ...] [--rounds 9] [--tokens 512] [--prompt 64]
       [--new 64] [--output head_kernel]
Writes bench/results/<output>.json and .md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from mindspore import Tensor

from _common import load_info, md_table, provenance, write_results
from gscore import kernels
from gscore.data.wikipedia import token_windows
from gscore.nn.decoding import CompiledDecoder
from ptq_latency import CONFIGS, build, load_inputs

HEADS = ("kernel", "MatMul")


def prefill_s(decoder: CompiledDecoder, window: Tensor) -> float:
    decoder.reset_cache()
    start = time.perf_counter()
    decoder(window, 0).asnumpy()
    return time.perf_counter() - start


def decode_s(decoder: CompiledDecoder, prompt: np.ndarray, new: int) -> float:
    """Seconds per greedy decode step after ``prompt``."""
    decoder.reset_cache()
    logits = decoder(Tensor(prompt), 0, last=True).asnumpy()
    start = time.perf_counter()
    for position in range(prompt.shape[1], prompt.shape[1] + new):
        logits = decoder(Tensor(np.array([[int(logits[0, -1].argmax())]], np.int32)), position, last=True).asnumpy()
    return (time.perf_counter() - start) / new


def paired(kernel: list[float], matmul: list[float]) -> dict[str, float]:
    ratio = np.array(kernel) / np.array(matmul)
    return {"kernel_s": float(np.median(kernel)), "matmul_s": float(np.median(matmul)), "ratio_mean": float(ratio.mean()), "ratio_se": float(ratio.std(ddof=1) / np.sqrt(len(ratio)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["a16w8", "a16w4-g128", "a8w8-dynamic"], choices=CONFIGS)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--output", default="head_kernel")
    args = parser.parse_args()
    load_start = load_info()
    weights, model_config, tokenizer, calibration, articles = load_inputs(args.tokens, 8)
    window = token_windows(tokenizer, articles, args.tokens, 1)[:1]
    prompt = window[:, : args.prompt]
    results: dict[str, Any] = {}
    for name in args.configs:
        decoders: dict[str, CompiledDecoder] = {}
        for head in HEADS:
            net, _ = build(name, model_config, weights, tokenizer, calibration)
            decoders[head] = CompiledDecoder(net, capacity=max(args.tokens, args.prompt + args.new))
            if head == "MatMul":
                net.head_kernel = None
        runs = [(head, form) for head in HEADS for form in ("prefill", "decode")]
        times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
        measure = {"prefill": lambda d: prefill_s(d, Tensor(window)), "decode": lambda d: decode_s(d, prompt, args.new)}
        for head, form in runs:
            measure[form](decoders[head])  # compiles
        order = np.random.default_rng(0)
        for _ in range(args.rounds):
            for index in order.permutation(len(runs)):
                head, form = runs[index]
                times[(head, form)].append(measure[form](decoders[head]))
        results[name] = {form: paired(times[("kernel", form)], times[("MatMul", form)]) for form in ("prefill", "decode")}
        print(name, results[name], flush=True)
        for decoder in decoders.values():
            decoder.close()
    report = {**provenance(load_start), "level": kernels.level(), "rounds": args.rounds, "tokens": args.tokens, "prompt": args.prompt, "new": args.new, "results": results}
    write_results(args.output, report, markdown)


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for name, forms in report["results"].items():
        pre, dec = forms["prefill"], forms["decode"]
        rows.append([name, f"{pre['matmul_s']:.3f}", f"{pre['kernel_s']:.3f}", f"{pre['ratio_mean']:.3f} ± {pre['ratio_se']:.3f}",
                     f"{1 / dec['matmul_s']:.1f}", f"{1 / dec['kernel_s']:.1f}", f"{dec['ratio_mean']:.3f} ± {dec['ratio_se']:.3f}"])
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    return (
        "# Float output head: gscore's f32_linear against MindSpore's MatMul, same network, one process\n\n"
        f"Command: `{report['command']}` (git {report['git'][:12]}); kernel level `{report['level']}`; "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores; load average {load[0]:.1f} at start, {load[1]:.1f} at end.\n\n"
        f"{report['rounds']} rounds, each running both heads' prefill ({report['tokens']} tokens, every token's logits) and decode "
        f"({report['new']} greedy steps after a {report['prompt']}-token prompt) once, in a new random order. "
        "'kernel / MatMul' = the per-round ratio of the kernel head's time to the MatMul head's, mean ± standard error (below 1: the kernel is faster).\n\n"
        + md_table(["preset", "prefill s, MatMul head", "prefill s, kernel head", "prefill kernel / MatMul", "decode tokens/s, MatMul head", "decode tokens/s, kernel head", "decode step kernel / MatMul"], rows)
    )


if __name__ == "__main__":
    main()
