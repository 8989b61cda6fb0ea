"""MindSpore's host task queue run inline (``MS_DEV_HOST_BLOCKING_RUN=1``, gscore's default) vs on its worker threads.

Question answered: does gscore's default of running MindSpore's host task queue inline
(:mod:`gscore.host_dispatch`) speed up or slow down what gscore users run? With the worker
threads (MindSpore's own default), the Python thread busy-waits for the queue to drain and an
actor thread spins in ``sched_yield`` while a third thread computes; on a 2-core machine a share
of compiled training steps then takes 5-15 times its normal time (bench/results/qat_step.md at
36872d572d9e).

The variable is read once per process, so every workload runs in its own child process, once
per setting, the two settings alternating (ABBA order across rounds) so that drifts in the
machine's load fall on both alike. Workloads: LeNet5 training steps (Adam, batch 64) compiled
and op by op, float and SimQAT A8W8; SmolLM2-135M greedy decode steps through the compiled
decoder (FP32 and PTQ A16W8 with the int8 head); an op-by-op SmolLM2 forward of a 256-token
window (what calibration and perplexity evaluation run). Per workload: median, lower
quartile and slow share ('slow': above twice the median of the fastest half) of the pooled
step times per setting, and the median over rounds of the per-round ratio inline / threads.

Usage: python bench/host_dispatch.py [--rounds 4]
Writes bench/results/host_dispatch.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from _common import load_info, md_table, provenance, slow_share, write_json, write_text
from gscore.host_dispatch import VARIABLE

SETTINGS = {"threads": "0", "inline": "1"}
"""The two settings compared: MindSpore's worker threads, and gscore's default (inline)."""


def lenet_steps(variant: str, compiled: bool, count: int = 50) -> list[float]:
    """Seconds of ``count`` LeNet5 training steps after three warm-up steps."""
    from qat import Trainer, batches
    from qat_step import variants

    import mindspore as ms
    from gscore.data.mnist import load_mnist_5k
    from gscore.models.convnets import LeNet5

    data = load_mnist_5k()
    ms.set_seed(0)
    net = variants(LeNet5, {})[variant]()
    net.set_train(True)
    trainer = Trainer(net, 5e-4, compiled=compiled)
    plan = batches(len(data.train_x), 64, 1, seed=99)[: count + 3]
    times = []
    for idx in plan:
        start = time.perf_counter()
        trainer.step(data.train_x[idx], data.train_y[idx])
        times.append(time.perf_counter() - start)
    return times[3:]


def smollm2_setup() -> tuple[Any, Any, Any, np.ndarray, np.ndarray]:
    """SmolLM2's config, weights, tokenizer, two calibration and two evaluation windows of 512 tokens."""
    from gscore.data.wikipedia import load_articles, split_articles, token_windows
    from gscore.models.llama import LlamaConfig
    from gscore.models.smollm2 import load_smollm2

    weights, config, tokenizer = load_smollm2()
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), 512, 2)
    evaluation = token_windows(tokenizer, split_articles(articles, "evaluation"), 512, 2)
    return LlamaConfig(**config), weights, tokenizer, calibration, evaluation


def decode_steps(name: str, new: int = 48, repeats: int = 3) -> list[float]:
    """Seconds of greedy decode steps of the compiled decoder after a 64-token prompt."""
    from ptq_latency import build, greedy

    from gscore.nn.decoding import CompiledDecoder

    model_config, weights, tokenizer, calibration, evaluation = smollm2_setup()
    net, _ = build(name, model_config, weights, tokenizer, calibration)
    decoder = CompiledDecoder(net, capacity=128)
    prompt = evaluation[1:, :64]
    greedy(decoder, prompt, 2)
    return [s for _ in range(repeats) for s in greedy(decoder, prompt, new)[1]]


def eager_forward(count: int = 6) -> list[float]:
    """Seconds of op-by-op SmolLM2 FP32 forwards of one 256-token window."""
    from gscore.eval.perplexity import llama_forward
    from gscore.models.llama import build_llama

    model_config, weights, _, _, evaluation = smollm2_setup()
    forward = llama_forward(build_llama(model_config, weights))
    forward(evaluation[0, :256])
    times = []
    for _ in range(count):
        start = time.perf_counter()
        forward(evaluation[0, :256])
        times.append(time.perf_counter() - start)
    return times


WORKLOADS: dict[str, Callable[[], list[float]]] = {
    "LeNet5 compiled step, float": lambda: lenet_steps("float", True),
    "LeNet5 compiled step, SimQAT A8W8": lambda: lenet_steps("simqat-a8w8, fused kernels", True),
    "LeNet5 op-by-op step, float": lambda: lenet_steps("float", False, 30),
    "LeNet5 op-by-op step, SimQAT A8W8": lambda: lenet_steps("simqat-a8w8, fused kernels", False, 30),
    "SmolLM2 compiled decode step, FP32": lambda: decode_steps("fp32"),
    "SmolLM2 compiled decode step, A16W8 + int8 head": lambda: decode_steps("a16w8+int8-head"),
    "SmolLM2 op-by-op forward, 256 tokens": eager_forward,
}


def child(workload: str) -> None:
    """Run one workload in this process (the variable is already set) and print its step seconds."""
    import mindspore as ms

    ms.set_device("CPU")
    ms.runtime.launch_blocking()
    print(json.dumps(WORKLOADS[workload]()))


def run_child(workload: str, setting: str) -> list[float]:
    """Step seconds of ``workload`` in a fresh process with ``setting``."""
    env = dict(os.environ, **{VARIABLE: SETTINGS[setting]})
    done = subprocess.run([sys.executable, __file__, "--child", workload], env=env, capture_output=True, text=True, check=False, cwd=Path(__file__).parent)
    if done.returncode != 0:
        raise RuntimeError(f"{workload!r} with {setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def statistics(samples: list[float]) -> dict[str, float]:
    """Median, lower quartile (seconds) and slow share of pooled step times."""
    return {"median_s": float(np.median(samples)), "lower_quartile_s": float(np.percentile(samples, 25)), "slow_share": slow_share(samples)}


def measure(rounds: int) -> dict[str, Any]:
    """Every workload under both settings, ABBA-alternated over ``rounds``."""
    results = {}
    for workload in WORKLOADS:
        per_round: dict[str, list[list[float]]] = {s: [] for s in SETTINGS}
        for r in range(rounds):
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for setting in order:
                per_round[setting].append(run_child(workload, setting))
            print(workload, r, {s: round(1e3 * float(np.median(per_round[s][-1])), 2) for s in SETTINGS}, flush=True)
        ratios = [float(np.median(i) / np.median(t)) for i, t in zip(per_round["inline"], per_round["threads"])]
        results[workload] = {
            **{s: statistics([x for run in runs for x in run]) for s, runs in per_round.items()},
            "round_ratios": ratios,
            "ratio_inline_over_threads": float(np.median(ratios)),
            "samples_s": per_round,
        }
    return results


def markdown(report: dict[str, Any], rounds: int) -> str:
    """The results table with how it was made."""
    rows = []
    for workload, r in report["workloads"].items():
        t, i = r["threads"], r["inline"]
        rows.append(
            [
                workload,
                f"{t['median_s'] * 1e3:.1f}",
                f"{i['median_s'] * 1e3:.1f}",
                f"{r['ratio_inline_over_threads']:.2f}x",
                " / ".join(f"{x:.2f}" for x in r["round_ratios"]),
                f"{t['lower_quartile_s'] * 1e3:.1f} / {i['lower_quartile_s'] * 1e3:.1f}",
                f"{t['slow_share']:.0%} / {i['slow_share']:.0%}",
            ]
        )
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    headers = ["workload", "median ms, threads", "median ms, inline", "inline / threads (median of rounds)", "per-round ratios", "lower quartile ms (threads / inline)", "slow share (threads / inline)"]
    return (
        "# MindSpore host task queue: inline (`MS_DEV_HOST_BLOCKING_RUN=1`, gscore's default) vs worker threads\n\n"
        f"Command: `{report['command']}` (git {report['git'][:12]}); load average {load[0]:.1f} at start, {load[1]:.1f} at end; "
        f"{rounds} rounds, each workload in a fresh process per setting, settings alternated ABBA. Ratios below 1 mean inline is faster.\n\n"
        + md_table(headers, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    load_start = load_info()
    workloads = measure(args.rounds)
    report = {**provenance(load_start), "workloads": workloads}
    write_json("host_dispatch", report)
    text = markdown(report, args.rounds)
    write_text("host_dispatch.md", text)
    print(text)


if __name__ == "__main__":
    main()
