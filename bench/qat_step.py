"""SimQAT A8W8 training-step time against the float step, fused fake-quant kernels vs MindSpore ops.

Question answered: what does the fused fake-quant operator (one forward pass with the range
observation fused, one straight-through backward pass; :mod:`gscore.nn.fake_quant`) buy a
SimQAT training step? The goal of issue 11 is a SimQAT A8W8 step at most 1.5x the float step
(bench/results/qat.md measured 2.85x on LeNet5 and 2.76x on DigitsResNet with the
element-wise ops).

Per network, these train side by side in one process, interleaved in rounds on the same MNIST
batches (Adam, batch 64; training steps as in bench/qat.py, whose Trainer is reused), each once
op by op (PyNative) and once with the whole step compiled into one graph: float;
SimQAT A8W8 with native kernels (fused fake quantization); SimQAT A8W8 built with
``GSCORE_KERNELS=portable`` (MindSpore element-wise ops, the state before); and SimQAT with
weights only, both ways. Ratios are of median step times, against the float step run the
same way (and against the op-by-op float step). Accuracy is bench/qat.py's subject;
the forward values of the two implementations are identical (tests/test_qat_fake_quant.py).

Usage: python bench/qat_step.py [--rounds 7] [--steps 4] [--no-resnet]
Writes bench/results/qat_step.json and .md.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any, Callable

import numpy as np

from _common import load_info, md_table, provenance, slow_share, write_json, write_text
from gscore import host_dispatch
from qat import Trainer, batches


def variants(make_net: Callable[[], Any], config: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Builders of each contender's network (kernel choice is made when the cells are built)."""
    import gscore
    from gscore import kernels

    def simqat(act: bool, choice: str) -> Callable[[], Any]:
        def build() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
                with kernels.forced(choice):
                    net = make_net()
                    algo = gscore.get("simqat")
                    algo(algo.config_cls(**config, **({} if act else {"act_bits": None}))).apply(net)
            return net

        return build

    return {
        "float": make_net,
        "simqat-a8w8, fused kernels": simqat(True, kernels.AUTO),
        "simqat-a8w8, MindSpore ops": simqat(True, kernels.PORTABLE),
        "simqat-w8, fused kernels": simqat(False, kernels.AUTO),
        "simqat-w8, MindSpore ops": simqat(False, kernels.PORTABLE),
    }


MODES = ("op by op", "compiled")
"""How each contender's training step runs: op by op (PyNative, ``Trainer(compiled=False)``),
or as one compiled graph (forward, backward and Adam update; ``compiled=True``)."""


def time_steps(builders: dict[str, Callable[[], Any]], data: Any, rounds: int, steps: int) -> dict[str, dict[str, dict[str, float]]]:
    """Median and lower-quartile step seconds of every contender in both modes, all
    interleaved round-robin; ratios are to the float step of the same mode (and statistic).

    Why the lower quartile and the slow share too: with MindSpore's host task queue on worker
    threads (``MS_DEV_HOST_BLOCKING_RUN=0``), compiled step times on a 2-core VM were bimodal,
    a share of the steps, float ones included, taking 5-15 times their normal time, because
    the Python thread busy-waits for the queue while an actor thread spins and the compute
    thread gets a fraction of a core (:mod:`gscore.host_dispatch`). gscore now runs the queue
    inline; the two statistics show whether a run is still bimodal. ``slow_share`` is the
    fraction of steps above twice the median of the fastest half."""
    import mindspore as ms

    plan = batches(len(data.train_x), 64, 1, seed=99)
    trainers = {}
    for mode in MODES:
        for name, build in builders.items():
            ms.set_seed(0)
            net = build()
            net.set_train(True)
            trainers[mode, name] = Trainer(net, 5e-4, compiled=mode == "compiled")
            for idx in plan[:3]:  # warm-up: graphs compile, kernels load
                trainers[mode, name].step(data.train_x[idx], data.train_y[idx])
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in trainers}
    for r in range(rounds):
        for key, trainer in trainers.items():
            for idx in plan[3 + r * steps : 3 + (r + 1) * steps]:
                start = time.perf_counter()
                trainer.step(data.train_x[idx], data.train_y[idx])
                samples[key].append(time.perf_counter() - start)
    median = {key: float(np.median(s)) for key, s in samples.items()}
    quartile = {key: float(np.percentile(s, 25)) for key, s in samples.items()}
    slow = {key: slow_share(s) for key, s in samples.items()}
    return {
        mode: {
            name: {
                "median_step_s": median[mode, name],
                "x_float": median[mode, name] / median[mode, "float"],
                "x_float_op_by_op": median[mode, name] / median["op by op", "float"],
                "lower_quartile_step_s": quartile[mode, name],
                "x_float_lower_quartile": quartile[mode, name] / quartile[mode, "float"],
                "slow_share": slow[mode, name],
            }
            for name in builders
        }
        for mode in MODES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--no-resnet", action="store_true")
    args = parser.parse_args()
    import mindspore as ms

    from gscore import kernels
    from gscore.data.mnist import load_mnist_5k
    from gscore.models.convnets import DigitsResNet, LeNet5

    ms.runtime.launch_blocking()
    data = load_mnist_5k()
    load_start = load_info()
    results = {"LeNet5": time_steps(variants(LeNet5, {}), data, args.rounds, args.steps)}
    if not args.no_resnet:
        results["DigitsResNet"] = time_steps(variants(DigitsResNet, {"bn_fold": True}), data, args.rounds, args.steps)
    report = {**provenance(load_start), "kernel_level": kernels.level(), "steps": results}
    write_json("qat_step", report)
    load = load_start["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    text = (
        "# SimQAT training step vs float: fused fake-quant kernels vs MindSpore element-wise ops\n\n"
        f"Command: `{report['command']}` (git {report['git'][:12]}); kernel level `{report['kernel_level']}`; "
        f"load average {load[0]:.1f} at start, {load[1]:.1f} at end; {args.rounds} rounds x {args.steps} interleaved steps (batch 64).\n\n"
        "Goal (issue 11): SimQAT A8W8 step <= 1.5x the float step.\n\n"
        f"Host dispatch: `{host_dispatch.VARIABLE}={os.environ.get(host_dispatch.VARIABLE, '')}` (gscore's default `1` runs MindSpore's host task queue inline; "
        "with its worker threads, compiled step times on this 2-core VM were bimodal, see bench/results/host_dispatch.md). "
        "'slow' is the share of steps above twice the median of the fastest half (see `time_steps`).\n\n"
    )
    for network, modes in results.items():
        rows = [
            [mode, n, f"{s['median_step_s'] * 1e3:.1f}", f"{s['x_float']:.2f}x", f"{s['x_float_op_by_op']:.2f}x", f"{s['lower_quartile_step_s'] * 1e3:.1f}", f"{s['x_float_lower_quartile']:.2f}x", f"{s['slow_share']:.0%}"]
            for mode, steps in modes.items()
            for n, s in steps.items()
        ]
        headers = ["step", "variant", "median step ms", "x float (same step)", "x float op by op", "lower quartile ms", "x float (lower quartile)", "slow"]
        text += f"## {network}\n\n" + md_table(headers, rows) + "\n"
    write_text("qat_step.md", text)
    print(text)


if __name__ == "__main__":
    main()
