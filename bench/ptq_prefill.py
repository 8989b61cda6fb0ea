"""Compiled 512-token prefill of deployed presets against FP32, with the spread of each ratio.

``bench/ptq_latency.py`` gives prefill as the median of a few calls next to everything else it
times; between its runs the same ratio moved by about 5-10 % on a shared machine, as much as
the distance to the issue's goals (A16W8 and A16W4 <= 1.0x FP32's time, A8W8 <= 0.6x). This
script times only the compiled prefill (``CompiledDecoder``, the networks of
``ptq_latency.build``), many rounds, every network once per round in a new random order, and
gives each network's ratio to FP32 per round (paired: the same round's FP32 call), then their
mean and standard error over rounds, next to the ratio of medians.

Both forms of a prefill are timed: every token's logits (what perplexity needs) and the last
token's only (``last=True``, what generation asks for).

Usage: python bench/ptq_prefill.py [--rounds 15] [--tokens 512] [--calib 8] [--configs a16w8 ...]
       [--output ptq_prefill]
Writes bench/results/<output>.json and .md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

from _common import load_info, md_table, provenance, write_results
from gscore import kernels
from gscore.data.wikipedia import token_windows
from gscore.nn.decoding import CompiledDecoder
from ptq_latency import CONFIGS, build, load_inputs

DEFAULT_CONFIGS = ["a16w8", "a16w8+int8-head", "a16w4-g128", "a16w4-g128+int8-head", "a8w8", "a8w8-dynamic"]


def race(decoders: dict[str, CompiledDecoder], window: Tensor, rounds: int) -> dict[bool, dict[str, list[float]]]:
    """Seconds per prefill, per form (``last``) and network, ``rounds`` rounds in a new seeded
    random order each (after one compiling call of each graph)."""
    for decoder in decoders.values():
        for last in (False, True):
            decoder(window, 0, last=last).asnumpy()
            decoder.reset_cache()
    times: dict[bool, dict[str, list[float]]] = {last: {name: [] for name in decoders} for last in (False, True)}
    order = np.random.default_rng(0)
    runs = [(name, last) for name in decoders for last in (False, True)]
    for _ in range(rounds):
        for index in order.permutation(len(runs)):
            name, last = runs[index]
            start = time.perf_counter()
            decoders[name](window, 0, last=last).asnumpy()
            times[last][name].append(time.perf_counter() - start)
            decoders[name].reset_cache()
    return times


def ratios(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per network: median seconds, ratio of medians to FP32, and the per-round paired ratio's
    mean and standard error."""
    fp32 = np.array(times["fp32"])
    out = {}
    for name, samples in times.items():
        paired = np.array(samples) / fp32
        out[name] = {
            "median_s": float(np.median(samples)),
            "ratio_of_medians": float(np.median(samples) / np.median(fp32)),
            "paired_ratio_mean": float(paired.mean()),
            "paired_ratio_se": float(paired.std(ddof=1) / np.sqrt(len(paired))) if len(paired) > 1 else 0.0,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--calib", type=int, default=8)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=CONFIGS, help="presets to time against FP32")
    parser.add_argument("--output", default="ptq_prefill", help="stem of the result files in bench/results")
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    load_start = load_info()
    weights, model_config, tokenizer, calibration, evaluation_articles = load_inputs(args.tokens, args.calib)
    window = Tensor(token_windows(tokenizer, evaluation_articles, args.tokens, 1))
    decoders = {name: CompiledDecoder(build(name, model_config, weights, tokenizer, calibration)[0], capacity=args.tokens) for name in ["fp32", *args.configs]}
    times = race(decoders, window, args.rounds)
    for decoder in decoders.values():
        decoder.close()
    report = {
        **provenance(load_start),
        "kernel_level": kernels.level(),
        "tokens": args.tokens,
        "rounds": args.rounds,
        "every_token": ratios(times[False]),
        "last_token": ratios(times[True]),
        "seconds": {"every_token": times[False], "last_token": times[True]},
    }
    write_results(args.output, report, markdown)


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for name, every in report["every_token"].items():
        last = report["last_token"][name]
        rows.append([name] + [cell for r in (every, last) for cell in (f"{r['median_s']:.3f}", f"{r['ratio_of_medians']:.2f}x", f"{r['paired_ratio_mean']:.3f} ± {r['paired_ratio_se']:.3f}")])
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    return (
        f"# Compiled {report['tokens']}-token prefill against FP32, {report['rounds']} interleaved rounds\n\n"
        f"Command: `{report['command']}` (git {report['git'][:12]}); native kernel level `{report['kernel_level']}`; "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores; load average {load[0]:.1f} at start, {load[1]:.1f} at end.\n\n"
        "Every round times every network's two prefill forms once, in a new random order. 'paired' = the mean over rounds of "
        "the network's time over the same round's FP32 time, ± its standard error.\n\n"
        + md_table(["network", "every token's logits s", "x FP32 (medians)", "x FP32 (paired)", "last token's logits s", "x FP32 (medians)", "x FP32 (paired)"], rows)
    )


if __name__ == "__main__":
    main()
