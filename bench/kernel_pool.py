"""What the kernel pool's burst waiting (``GSCORE_KERNEL_SPIN_US``) does to compiled decoding.

The pool reads ``GSCORE_KERNEL_SPIN_US`` once, when its threads start, so every setting runs in
its own process: SmolLM2-135M FP32 (whose MatMuls run on MindSpore's threads between sparse
kernel calls) and A16W8 with an int8 head (every operator of a step a native kernel), each with
the helper sleeping after every job (``0``) and with the default (wait up to 300 µs while jobs
come in a burst). Settings alternate over ``--rounds`` rounds, so machine load is shared; each
process decodes ``--steps`` greedy tokens after a 64-token prompt through a compiled decoder and
reports the median milliseconds per step.

Usage: python bench/kernel_pool.py [--rounds 2] [--steps 40]
Writes bench/results/kernel_pool.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from _common import command_line, git_revision, load_info, machine_info, md_table, write_results

NETWORKS = ("fp32", "a16w8+int8-head")
SPINS = ("0", "default")


def child(network: str, steps: int) -> dict[str, float]:
    """Median ms per decode step of ``network`` in this process (its pool setting)."""
    import time

    import mindspore as ms
    from mindspore import Tensor

    import gscore
    from gscore import PTQConfig
    from gscore.data.wikipedia import load_articles, split_articles, token_windows
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore.models.smollm2 import load_smollm2
    from gscore.nn.decoding import CompiledDecoder
    from gscore_ptq.presets import preset

    ms.runtime.launch_blocking()
    weights, config, tokenizer = load_smollm2()
    prompt = token_windows(tokenizer, split_articles(load_articles(), "evaluation"), 64, 1)
    net = build_llama(LlamaConfig(**config), weights)
    if network != "fp32":
        algo = gscore.get("ptq")(PTQConfig(**preset("a16w8", progress=False, head="int8")))
        algo.convert(algo.apply(net, LlamaHelper(tokenizer)))
    seconds = []
    with CompiledDecoder(net, capacity=64 + steps + 3) as decoder:
        logits = decoder(Tensor(prompt), 0).asnumpy()
        for position in range(64, 64 + steps + 3):
            token = Tensor(np.array([[int(logits[0, -1].argmax())]], np.int32))
            start = time.perf_counter()
            logits = decoder(token, position).asnumpy()
            seconds.append(time.perf_counter() - start)
    return {"ms_per_step": 1e3 * float(np.median(seconds[3:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    report: dict[str, Any] = {"command": command_line(), "git": git_revision(), "machine": machine_info(), "load_start": load_info()}
    samples: dict[str, dict[str, list[float]]] = {n: {s: [] for s in SPINS} for n in NETWORKS}
    for _ in range(args.rounds):
        for network in NETWORKS:
            for spin in SPINS:
                env = {k: v for k, v in os.environ.items() if k != "GSCORE_KERNEL_SPIN_US"}
                if spin != "default":
                    env["GSCORE_KERNEL_SPIN_US"] = spin
                out = subprocess.run([sys.executable, __file__, "--child", network, "--steps", str(args.steps)], env=env, capture_output=True, text=True, check=True)
                samples[network][spin].append(json.loads(out.stdout.strip().splitlines()[-1])["ms_per_step"])
                print(network, spin, samples[network][spin][-1], flush=True)
    report["load_end"] = load_info()
    report["ms_per_step"] = samples
    report["median_ms_per_step"] = {n: {s: float(np.median(v)) for s, v in d.items()} for n, d in samples.items()}
    write_results("kernel_pool", report, markdown)


def markdown(report: dict[str, Any]) -> str:
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    median = report["median_ms_per_step"]
    rows = [
        [n, " / ".join(f"{v:.1f}" for v in report["ms_per_step"][n]["0"]), " / ".join(f"{v:.1f}" for v in report["ms_per_step"][n]["default"]), f"{median[n]['default'] / median[n]['0']:.2f}x"]
        for n in NETWORKS
    ]
    return "\n".join(
        [
            "# Kernel pool: helpers that sleep after every job vs burst waiting, SmolLM2-135M compiled decode",
            "",
            f"Command: `{report['command']}` (git {report['git'][:12]}); {report['machine']['cpu_model']}, "
            f"{report['machine']['usable_cores']} cores, load average {load[0]} at start and {load[1]} at end. One process per cell, settings alternating.",
            "",
            md_table(["network", "ms per step, GSCORE_KERNEL_SPIN_US=0 (each round)", "ms per step, default (each round)", "default / 0 (medians)"], rows),
        ]
    )


if __name__ == "__main__":
    main()
