"""``gscore eval RUN``: perplexity of the float model and of the deployed checkpoint on the
same windows, with the paired standard error of the difference (saved as ``eval.json``)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from gscore.cli import runs, sources


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("eval", parents=[common], help="perplexity of FP32 and the quantized checkpoint, side by side")
    parser.add_argument("run_dir", metavar="RUN", help="the --out folder of gscore quantize")
    parser.add_argument("--data", default=sources.WIKIPEDIA, help="'wikipedia' (the embedded evaluation split), a .txt or .jsonl file")
    parser.add_argument("--windows", type=int, default=4, help="evaluation windows (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per window (default: %(default)s)")
    parser.set_defaults(run=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_ = runs.open_run(args.run_dir)
    import mindspore as ms

    from gscore.eval.perplexity import llama_forward, paired_delta, window_nll

    ms.runtime.launch_blocking()
    float_net, tokenizer = runs.float_network(run_.model)
    windows = sources.windows(tokenizer, args.data, "evaluation", args.tokens, args.windows)
    progress = not args.quiet
    float_nll = window_nll(llama_forward(float_net), windows, progress=progress)
    del float_net
    deployed, _ = runs.deployed_network(run_)
    quant_nll = window_nll(llama_forward(deployed), windows, progress=progress)
    delta = paired_delta(quant_nll, float_nll)
    result = {
        "recipe": run_.recipe.name,
        "model": run_.model,
        "source": args.data,
        "windows": args.windows,
        "tokens": args.tokens,
        "fp32_ppl": float(np.exp(float_nll.mean())),
        "quant_ppl": float(np.exp(quant_nll.mean())),
        "delta_percent": delta.percent,
        "delta_stderr": delta.stderr,
    }
    runs.write_json(run_.path / runs.EVAL_FILE, result)
    return result


def render(r: dict[str, Any]) -> str:
    stderr = "n/a (one window)" if not np.isfinite(r["delta_stderr"]) else f"{r['delta_stderr']:.2f}"
    return "\n".join([
        f"## {r['model']}, {r['recipe']} ({r['windows']} windows x {r['tokens']} tokens of {r['source']})",
        "",
        "| network | perplexity | Δ vs FP32 (± paired standard error over windows) |",
        "|---|---|---|",
        f"| FP32 | {r['fp32_ppl']:.3f} | |",
        f"| {r['recipe']}, deployed from the checkpoint | {r['quant_ppl']:.3f} | {r['delta_percent']:+.2f} % ± {stderr} |",
    ])
