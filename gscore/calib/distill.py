"""End-to-end tuning of a quantized network's weight scales against its float model.

Why: GPTQ, the clipping search and the scale refit each fit one layer to its own inputs, but
what users lose is the sum of every layer's error as the network's output distribution sees
it. Keeping every integer code and training only the weight scales (one per output row, or per
row and group of inputs) toward the float model's output distribution recovers part of that:
on SmolLM2-135M at W4 g128 about two points of perplexity after the best layer-wise recipe
(``bench/results/ptq_distill_option.md``). This is the step-size idea of EfficientQAT's end-to-end
phase and PEQA, after post-training quantization.

Loss: ``KL(teacher || student)`` over the last axis (the classes, e.g. a vocabulary), averaged
over every other position; Adam, one calibration sample per step, in a seeded random order
each epoch. The learning rate is relative: each layer's Adam step is ``learning_rate`` times
its mean ``|scale|``. Adam's steps have the size of the learning rate whatever the gradient,
and scales differ by more than ten times between int8 per-channel layers (SmolLM2: median
5e-3) and int4 per-group ones (median 7e-2), and between layers; one absolute rate cannot
suit both. The teacher's log-probabilities are computed once from the float network before
calibration changes it, and kept as float16 (a 512-token window of a 49152-token vocabulary is
50 MB). Training runs the deployed network on MindSpore ops (:func:`gscore.nn.ops_path.ops_path`):
native kernels have no backward.

A few calibration windows are soon learnt by heart: on SmolLM2 W4 the KL on 8 windows kept
falling after the perplexity stopped improving (``bench/results/ptq_distill.md``). Windows the
float model writes itself (:func:`sampled_windows`, LLM-QAT's data-free idea) add text without
adding data: each is sampled at temperature 1 from the float model, prompted by a few tokens of a
calibration window, so the student learns the teacher's distribution on text the teacher finds
likely.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from tqdm import tqdm

from gscore.errors import GscoreWarning
from gscore.eval.perplexity import log_softmax
from gscore.nn.ops_path import ops_path
from gscore.nn.quant_linear import QuantLinear

LogitsOf = Callable[[Any], Tensor]
"""Logits of one calibration sample: a differentiable float tensor ``[..., classes]``."""

Sample = Callable[[np.ndarray, int, int], np.ndarray]
"""``sample(prompts, new_tokens, seed)``: the float model's continuations of token ids ``prompts``
``[batch, tokens]``, sampled at temperature 1 from a generator seeded by ``seed``, exactly
``new_tokens`` each: ids ``[batch, new_tokens]``."""

PROMPT_TOKENS = 8
"""Tokens of a calibration window that begin each sampled window: enough to set its topic and
language, few enough that the rest is the float model's own text."""

SAMPLE_BATCH = 16
"""Windows sampled together: a decode step reads the weights once for the whole batch."""

_FLOAT16_FLOOR = -6.0e4
"""Log-probabilities below this (probability under e^-60000, nothing) are stored as this, so
float16 never holds -inf."""


def teacher_log_probs(logits_of: LogitsOf, samples: Sequence[Any]) -> list[np.ndarray]:
    """The float network's log-probabilities of every sample, float16 ``[..., classes]``."""
    return [np.maximum(log_softmax(logits_of(sample).asnumpy()).astype(np.float32), _FLOAT16_FLOOR).astype(np.float16) for sample in samples]


def sampled_windows(sample: Sample, windows: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` token windows as long as the calibration ``windows`` ``[n, tokens]``: window
    ``j`` continues the :data:`PROMPT_TOKENS` tokens of calibration window ``j % n`` that start
    at ``0``, ``tokens/2``, ``tokens/4`` or ``3 tokens/4`` (in that order, one more per pass over
    the windows), sampled in batches of :data:`SAMPLE_BATCH`, batch ``b`` seeded ``seed + b``.
    Returns int32 ``[count, tokens]``.

    Raises ValueError when ``windows`` are not integer ``[n, tokens]`` with tokens above
    :data:`PROMPT_TOKENS`.
    """
    windows = np.asarray(windows)
    if windows.ndim != 2 or not np.issubdtype(windows.dtype, np.integer) or len(windows) == 0 or windows.shape[1] <= PROMPT_TOKENS:
        raise ValueError(f"sampled windows continue calibration token windows [n, tokens > {PROMPT_TOKENS}] of ints, got {windows.dtype} {windows.shape}")
    n, tokens = windows.shape
    if count == 0:
        return np.zeros((0, tokens), np.int32)
    starts = [0, tokens // 2, tokens // 4, 3 * tokens // 4]
    prompts = np.stack([windows[j % n, starts[(j // n) % len(starts)]:][:PROMPT_TOKENS] for j in range(count)]).astype(np.int32)
    out = [np.concatenate([prompts[b:b + SAMPLE_BATCH], np.asarray(sample(prompts[b:b + SAMPLE_BATCH], tokens - PROMPT_TOKENS, seed + b), np.int32)], 1)
           for b in range(0, count, SAMPLE_BATCH)]
    return np.concatenate(out)


def weight_scales(network: nn.Cell) -> list[Parameter]:
    """The weight-scale parameters of every deployed quantized linear layer, in cell order."""
    return [cell._weight_quantizer.scale for _, cell in network.cells_and_names() if isinstance(cell, QuantLinear)]


@dataclass
class DistillResult:
    """What a tuning run did: mean KL per epoch (over its steps, measured before each step's
    update), the relative learning rate, how many numbers it trained, on how many samples (one
    step each per epoch), its seconds, and whether it gave up (a non-finite loss, or a scale that
    became non-finite or changed sign: the untuned scales are then kept)."""

    epochs: int
    learning_rate: float
    trained_scales: int
    samples: int = 0
    kl_per_epoch: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False


def tune_weight_scales(network: nn.Cell, logits_of: LogitsOf, samples: Sequence[Any], teacher: Sequence[np.ndarray],
                       epochs: int, learning_rate: float, seed: int = 0, progress: bool = False) -> DistillResult:
    """Train the weight scales of deployed ``network`` (codes and all else frozen) for ``epochs``
    passes over ``samples`` toward ``teacher`` (:func:`teacher_log_probs` of the float network
    on the same samples), each layer's step ``learning_rate`` times its mean ``|scale|``; the
    scales are changed in place.

    Raises ValueError when ``network`` has no deployed quantized linear layer or the teacher
    does not match the samples.
    """
    scales = weight_scales(network)
    if not scales:
        raise ValueError(f"{type(network).__name__} has no deployed quantized linear layer whose scales could be tuned")
    if len(teacher) != len(samples):
        raise ValueError(f"{len(teacher)} teacher outputs for {len(samples)} samples")
    result = DistillResult(epochs, learning_rate, int(sum(int(np.prod(p.shape)) for p in scales)), len(samples))
    untuned = [p.asnumpy().copy() for p in scales]
    start = time.perf_counter()
    with ops_path(network):
        for p in scales:
            p.requires_grad = True
        try:
            result.diverged = not _train(scales, [learning_rate * float(np.abs(v).mean()) for v in untuned], logits_of, samples, teacher,
                                             epochs, seed, progress, result.kl_per_epoch)
        finally:
            for p in scales:
                p.requires_grad = False
    if not result.diverged:  # a scale that crossed zero flips its codes' sign: that is not tuning
        result.diverged = not all(np.isfinite(v := p.asnumpy()).all() and np.array_equal(v > 0, u > 0) for p, u in zip(scales, untuned))
    if result.diverged:
        for p, value in zip(scales, untuned):
            p.set_data(Tensor(value))
        warnings.warn("weight-scale distillation diverged (a non-finite loss, or a scale that changed sign); "
                      "the untuned scales are kept: lower the learning rate", GscoreWarning, stacklevel=2)
    result.seconds = time.perf_counter() - start
    return result


def _train(scales: list[Parameter], rates: list[float], logits_of: LogitsOf, samples: Sequence[Any], teacher: Sequence[np.ndarray],
           epochs: int, seed: int, progress: bool, kl_per_epoch: list[float]) -> bool:
    """The Adam loop, ``rates[i]`` the absolute learning rate of ``scales[i]``; appends each
    epoch's mean KL. False as soon as a loss is not finite."""

    def kl(sample: Any, teacher_logp: Tensor) -> Tensor:
        logp = ops.log_softmax(logits_of(sample), -1)
        return (ops.exp(teacher_logp) * (teacher_logp - logp)).sum(-1).mean()

    grad_fn = ms.value_and_grad(kl, None, weights=scales)
    optimizer = nn.Adam([{"params": [p], "lr": rate} for p, rate in zip(scales, rates)], learning_rate=max(rates))
    rng = np.random.default_rng(seed)
    with tqdm(total=epochs * len(samples), desc="distill", leave=False, disable=not progress) as bar:
        for _ in range(epochs):
            losses = []
            for i in rng.permutation(len(samples)):
                loss, grads = grad_fn(samples[i], Tensor(teacher[i].astype(np.float32)))
                losses.append(float(loss.asnumpy()))
                if not np.isfinite(losses[-1]):
                    return False
                optimizer(grads)
                bar.update()
            kl_per_epoch.append(float(np.mean(losses)))
    return True
