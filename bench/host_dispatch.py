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

import time
from typing import Any, Callable

import numpy as np

from _settings_race import main
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


if __name__ == "__main__":
    main(__file__, __doc__, "host_dispatch", "MindSpore host task queue: inline (`MS_DEV_HOST_BLOCKING_RUN=1`, gscore's default) vs worker threads", "Ratios below 1 mean inline is faster.", WORKLOADS, VARIABLE, SETTINGS)
