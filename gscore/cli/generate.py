"""``gscore generate RUN --prompt TEXT``: greedy continuation by the deployed checkpoint
(``--compare`` adds the float model's)."""

from __future__ import annotations

import argparse
from typing import Any

from gscore.cli import runs


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("generate", parents=[common], help="greedy text from a quantized checkpoint")
    parser.add_argument("run_dir", metavar="RUN", help="the --out folder of gscore quantize")
    parser.add_argument("--prompt", default="The capital of France is", help="text to continue (default: %(default)r)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate (default: %(default)s)")
    parser.add_argument("--compare", action="store_true", help="also continue the prompt with the float model")
    parser.set_defaults(run=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_ = runs.open_run(args.run_dir)
    runs.require(bool(args.prompt), "--prompt must not be empty")
    runs.require(args.max_new_tokens >= 1, f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    import mindspore as ms

    from gscore.models.llama_helper import LlamaHelper

    ms.runtime.launch_blocking()
    result: dict[str, Any] = {"prompt": args.prompt, "recipe": run_.recipe.name}
    deployed, tokenizer = runs.deployed_network(run_)
    helper = LlamaHelper(tokenizer)
    result["completion"] = helper.complete(deployed, args.prompt, max_new_tokens=args.max_new_tokens)
    if args.compare:
        del deployed
        float_net, _ = runs.float_network(run_.model)
        result["float_completion"] = helper.complete(float_net, args.prompt, max_new_tokens=args.max_new_tokens)
    return result


def render(r: dict[str, Any]) -> str:
    lines = [f"{r['recipe']}: {r['prompt']}{r['completion']}"]
    if "float_completion" in r:
        lines.append(f"FP32: {r['prompt']}{r['float_completion']}")
    return "\n".join(lines)
