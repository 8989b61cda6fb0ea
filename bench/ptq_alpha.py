"""SmoothQuant migration strength: fixed alpha=0.5 against the per-group alpha search (A8W8 static).

Usage: python bench/ptq_alpha.py [--eval 4] [--calib 4] [--tokens 512]
Writes bench/results/ptq_alpha.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mindspore as ms

import gscore
from gscore import PTQConfig
from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.eval.perplexity import llama_forward, perplexity
from gscore.models.llama import LlamaConfig, build_llama
from gscore.models.llama_helper import LlamaHelper
from gscore.models.smollm2 import load_smollm2

RESULTS = Path(__file__).resolve().parent / "results"
ALPHAS = (0.5, 0.75, [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", type=int, default=4)
    parser.add_argument("--calib", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    weights, config, tokenizer = load_smollm2()
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), args.tokens, args.calib)
    evaluation = token_windows(tokenizer, split_articles(articles, "evaluation"), args.tokens, args.eval)
    model_config = LlamaConfig(**config)
    fp32 = perplexity(llama_forward(build_llama(model_config, weights)), evaluation)
    rows = []
    for alpha in ALPHAS:
        net = build_llama(model_config, weights)
        algo = gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"alpha": alpha, "progress": False}))
        start = time.perf_counter()
        algo.convert(algo.apply(net, LlamaHelper(tokenizer), datasets=calibration))
        seconds = time.perf_counter() - start
        ppl = perplexity(llama_forward(net), evaluation)
        rows.append({"alpha": alpha, "ppl": ppl, "delta_pct": (ppl / fp32 - 1) * 100, "quantize_s": seconds})
        print(rows[-1], flush=True)
    report = {"command": "python bench/ptq_alpha.py " + " ".join(sys.argv[1:]), "fp32_ppl": fp32, "windows": vars(args), "rows": rows}
    (RESULTS / "ptq_alpha.json").write_text(json.dumps(report, indent=2))
    lines = [f"# A8W8 static + SmoothQuant on SmolLM2: alpha ({args.eval} eval / {args.calib} calibration windows x {args.tokens} tokens)", "",
             f"Command: `{report['command']}`. FP32 perplexity {fp32:.3f}.", "", "| alpha | PPL | Δ vs FP32 | quantize s |", "|---|---|---|---|"]
    lines += [f"| {r['alpha']} | {r['ppl']:.3f} | {r['delta_pct']:+.2f} % | {r['quantize_s']:.0f} |" for r in rows]
    (RESULTS / "ptq_alpha.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
