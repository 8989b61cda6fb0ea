"""Deployed forward latency (and calibration time) of PTQ options against FP32, in one process.

bench/ptq.py measures each option in its own process, minutes apart, so machine load moves
between them; this script keeps FP32 and every quantized network in memory together and
times them round-robin on the same 512-token window, so each ratio shares the load. Calibration time is also put next to plain float forwards
over the same calibration windows, measured in this process.

Usage: python bench/ptq_latency.py [--repeat 5] [--tokens 512] [--calib 8]
Writes bench/results/ptq_latency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor

import gscore
from gscore import PTQConfig
from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.models.llama import LlamaConfig, build_llama
from gscore.models.llama_helper import LlamaHelper
from gscore.models.smollm2 import load_smollm2

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {
    "a16w8": {},
    "a16w4-g128": {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128},
    "a8w8-smooth": {"act_quant_dtype": "int8", "outliers_suppression": "smooth"},
    "a8w8-dynamic": {"act_quant_dtype": "int8", "act_quant_granularity": "per_token"},
    "kv-int8-static": {"weight_quant_dtype": None, "kvcache_quant_dtype": "int8"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--calib", type=int, default=8)
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    weights, config, tokenizer = load_smollm2()
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), args.tokens, args.calib)
    window = Tensor(token_windows(tokenizer, split_articles(articles, "evaluation"), args.tokens, 1))
    model_config = LlamaConfig(**config)
    nets = {"fp32": build_llama(model_config, weights)}
    start = time.perf_counter()
    for ids in calibration:
        nets["fp32"].reset_cache()
        nets["fp32"](Tensor(ids[None]), 0)
    nets["fp32"].reset_cache()
    calibration_s = {"float forwards": time.perf_counter() - start}
    for name, kwargs in CONFIGS.items():
        net = build_llama(model_config, weights)
        algo = gscore.get("ptq")(PTQConfig(**kwargs, algo_args={"progress": False}))
        start = time.perf_counter()
        algo.apply(net, LlamaHelper(tokenizer), datasets=calibration)
        calibration_s[name] = time.perf_counter() - start
        algo.convert(net)
        nets[name] = net
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.repeat):
        for name, net in nets.items():
            net.reset_cache()
            start = time.perf_counter()
            net(window, 0).asnumpy()
            times[name].append(time.perf_counter() - start)
            net.reset_cache()
    median = {name: float(np.median(t)) for name, t in times.items()}
    report = {
        "command": "python bench/ptq_latency.py " + " ".join(sys.argv[1:]),
        "tokens": args.tokens,
        "load_average": os.getloadavg(),
        "median_s": median,
        "ratio_to_fp32": {name: median[name] / median["fp32"] for name in median},
        "calibration_s": calibration_s,
    }
    (RESULTS / "ptq_latency.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Deployed forward latency, SmolLM2-135M, one {args.tokens}-token window (round-robin, median of {args.repeat})",
        "",
        f"Command: `{report['command']}`; load average at the end {report['load_average'][0]:.1f}.",
        "",
        "| network | median s | × FP32 |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {median[name]:.2f} | {median[name] / median['fp32']:.2f}× |" for name in median]
    lines += ["", f"Calibration on {args.calib} windows, same process:", "", "| what | s | × float forwards |", "|---|---|---|"]
    base = calibration_s["float forwards"]
    lines += [f"| {name} | {sec:.1f} | {sec / base:.2f}× |" for name, sec in calibration_s.items()]
    (RESULTS / "ptq_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
