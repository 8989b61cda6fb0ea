"""oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, gscore's default) vs every ISA the CPU has.

Question answered: on a CPU with AVX-512, does capping oneDNN (the library MindSpore's CPU
kernels call for convolutions, pooling and op-by-op MatMul) at AVX2 speed up or slow down what
gscore users run? With AVX-512 allowed, MindSpore 2.9's oneDNN (v3.10) runs float32 convolutions
on MindSpore's plain NCHW tensors with its ``jit_uni_ncsp:conv+ref:any`` implementation, and
capped at AVX2 with im2col + GEMM (``gemm:jit``; ``ONEDNN_VERBOSE=1`` shows both). MatMul loses its AVX-512 GEMM under the cap, which is what
the language-model workloads check.

The variable is read once per process (at oneDNN's first primitive), so every workload runs in
its own child process per setting, settings alternated ABBA (:mod:`_settings_race`).
Workloads: training steps (Adam, batch 64, op by op) of the DigitCNN of ``bench/scop.py``, of
LeNet5 and of the digit ResNet; SmolLM2-135M FP32: an op-by-op forward of a 512-token window
(what perplexity evaluation and calibration run), the compiled 512-token prefill and compiled
decode steps.

Usage: python bench/onednn_isa.py [--rounds 4]
Writes bench/results/onednn_isa.json and .md.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from _settings_race import main
from gscore.onednn import VARIABLE

SETTINGS = {"every ISA": "ALL", "AVX2": "AVX2"}
"""oneDNN's own default (every ISA the CPU has) and gscore's default."""


def training_steps(make: Callable[[], Any], count: int = 20) -> list[float]:
    """Seconds of ``count`` op-by-op training steps (Adam, batch 64) after three warm-up steps."""
    import mindspore as ms
    from qat import Trainer, batches

    from gscore.data.mnist import load_mnist_5k

    data = load_mnist_5k()
    ms.set_seed(0)
    net = make()
    net.set_train(True)
    trainer = Trainer(net, 5e-4, compiled=False)
    times = []
    for idx in batches(len(data.train_x), 64, 1, seed=99)[: count + 3]:
        start = time.perf_counter()
        trainer.step(data.train_x[idx], data.train_y[idx])
        times.append(time.perf_counter() - start)
    return times[3:]


def digit_cnn() -> Any:
    from scop import make_cnn

    return make_cnn()


def lenet() -> Any:
    from gscore.models.convnets import LeNet5

    return LeNet5()


def resnet() -> Any:
    from gscore.models.convnets import DigitsResNet

    return DigitsResNet((16, 32, 64))


def smollm2() -> tuple[Any, Any]:
    """SmolLM2 FP32 and one 512-token evaluation window, int32 ``[1, 512]``."""
    from ptq_latency import load_inputs

    from gscore.data.wikipedia import token_windows
    from gscore.models.llama import build_llama

    weights, config, tokenizer, _, articles = load_inputs(512, 1)
    return build_llama(config, weights), token_windows(tokenizer, articles, 512, 1)


def eager_forward(count: int = 4) -> list[float]:
    """Seconds of op-by-op SmolLM2 FP32 forwards of one 512-token window."""
    from gscore.eval.perplexity import llama_forward

    net, window = smollm2()
    forward = llama_forward(net)
    forward(window[0])
    times = []
    for _ in range(count):
        start = time.perf_counter()
        forward(window[0])
        times.append(time.perf_counter() - start)
    return times


def compiled_prefill(count: int = 5) -> list[float]:
    """Seconds of compiled 512-token FP32 prefills (every token's logits)."""
    from mindspore import Tensor

    from gscore.nn.decoding import CompiledDecoder

    net, window = smollm2()
    decoder = CompiledDecoder(net, capacity=512)
    times = []
    for _ in range(count + 1):
        start = time.perf_counter()
        decoder(Tensor(window), 0).asnumpy()
        times.append(time.perf_counter() - start)
        decoder.reset_cache()
    return times[1:]


def decode_steps(new: int = 32) -> list[float]:
    """Seconds of greedy FP32 decode steps of the compiled decoder after a 64-token prompt."""
    from ptq_latency import greedy

    from gscore.nn.decoding import CompiledDecoder

    net, window = smollm2()
    decoder = CompiledDecoder(net, capacity=128)
    greedy(decoder, window[:, :64], 2)
    return greedy(decoder, window[:, :64], new)[1]


WORKLOADS: dict[str, Callable[[], list[float]]] = {
    "DigitCNN training step": lambda: training_steps(digit_cnn),
    "LeNet5 training step": lambda: training_steps(lenet),
    "digit ResNet training step": lambda: training_steps(resnet, 10),
    "SmolLM2 op-by-op forward, 512 tokens": eager_forward,
    "SmolLM2 compiled prefill, 512 tokens": compiled_prefill,
    "SmolLM2 compiled decode step": decode_steps,
}


if __name__ == "__main__":
    main(__file__, __doc__, "onednn_isa", "oneDNN capped at AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`, gscore's default) vs every ISA", "Ratios below 1 mean the AVX2 cap is faster.", WORKLOADS, VARIABLE, SETTINGS)
