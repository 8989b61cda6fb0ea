"""Benchmark: how much of a decode step is MindSpore's graph launch, and what skipping it buys.

A deployed SmolLM2 decode step through :class:`CompiledDecoder`'s graph (``native_steps=False``)
is one MindSpore graph launch: the token lookup, one ``gsk_decoder_layer`` operator per block,
the final norm and the float output head (``f32_linear``). ``bench/ptq_latency.py`` splits a
step by MindSpore's profiler, which slows the step it measures. Here the same kernels are called
back to back through ctypes (:class:`gscore.kernels.direct.Call`) on the network's own weights
(numpy views of its parameters, no copies; its KV caches written in place, each pass from the
prompt's length, and the graph's next pass refills them): that is the step's kernel floor. The
rest of the graph step (launch, binding every operator's inputs, output allocation, the Python
loop with its position inputs and argmax) is what the framework costs. The default decoder runs
single-token steps as :class:`gscore.nn.native_step.NativeStep` (the same kernels without the
graph, bit-identical): its step is measured too, as greedy decoding runs it.

Per round, in a new seeded random order: FP32's graph step (for context) and, per preset, the
graph step, the native step (a second network deployed alike) and the kernel floor, each the
median over ``--steps`` greedy steps after a ``--prompt``-token prompt. Reported: medians over
rounds, and ratios paired per round.

Usage (from bench/): python decode_floor.py [--configs a16w4-g128 a16w8] [--rounds 7] [--steps 32]
       [--prompt 64] [--output STEM]
Writes bench/results/decode_floor.json and .md (``--output`` names another stem).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import mindspore as ms
import numpy as np

from _common import interleaved_rounds, load_info, md_table, provenance, write_results
from gscore import kernels
from gscore.data.wikipedia import token_windows
from gscore.nn.decoding import CompiledDecoder
from gscore.nn.native_step import NativeStep
from ptq_latency import build, greedy, load_inputs

DEFAULT_CONFIGS = ["a16w4-g128", "a16w8"]


class KernelFloor:
    """A deployed network's decode step as its kernels alone: the calls of its
    :class:`NativeStep` (every block's ``decoder_layer``, the final norm, the float head) run back
    to back, each pass from the KV caches' length after a ``prompt``-token prompt."""

    def __init__(self, net: Any, capacity: int, prompt: int) -> None:
        self.calls = NativeStep(net, capacity).calls
        self.lengths = [layer.self_attn.kv_cache.length.asnumpy() for layer in net.model.layers]  # views: the calls advance them
        self.prompt = prompt

    def steps(self, count: int) -> list[float]:
        """Seconds of each of ``count`` floor steps."""
        for length in self.lengths:
            length[0] = self.prompt
        seconds = []
        for _ in range(count):
            begin = time.perf_counter()
            for call in self.calls:
                call.run()
            seconds.append(time.perf_counter() - begin)
        return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    ms.runtime.launch_blocking()
    load_start = load_info()
    weights, model_config, tokenizer, calibration, evaluation = load_inputs(512, 8)
    prompt = token_windows(tokenizer, evaluation, 512, 1)[:, : args.prompt]
    capacity = args.prompt + args.steps

    def decoder(name: str, native_steps: bool) -> CompiledDecoder:
        return CompiledDecoder(build(name, model_config, weights, tokenizer, calibration)[0], capacity, native_steps=native_steps)

    def greedy_steps(run_: CompiledDecoder) -> Callable[[int], list[float]]:
        return lambda count: greedy(run_, prompt, count)[1]

    steps: dict[str, Callable[[int], list[float]]] = {"fp32 graph": greedy_steps(decoder("fp32", False))}  # seconds of each of `count` steps
    for name in args.configs:
        graph, native = decoder(name, False), decoder(name, True)
        if native.native is None:
            raise SystemExit(f"{name}: the decoder cannot run its steps natively (blocks not fused into one operator, or a head or rotation it does not run)")
        steps |= {f"{name} graph": greedy_steps(graph), f"{name} native": greedy_steps(native), f"{name} floor": KernelFloor(graph.network, capacity, args.prompt).steps}
    for run_steps in steps.values():
        run_steps(2)  # compile the graphs before timing
    timed = interleaved_rounds({key: (lambda s=run_steps: float(np.median(s(args.steps)) * 1e3)) for key, run_steps in steps.items()}, args.rounds)
    fp32 = np.array(timed["fp32 graph"])
    results = {}
    for name in args.configs:
        graph, native, floor = (np.array(timed[f"{name} {kind}"]) for kind in ("graph", "native", "floor"))
        results[name] = {
            "graph_ms": graph.tolist(), "native_ms": native.tolist(), "floor_ms": floor.tolist(),
            "framework_share": (1 - floor / graph).tolist(), "native_over_graph": (native / graph).tolist(),
            "median_graph_ms": float(np.median(graph)), "median_native_ms": float(np.median(native)), "median_floor_ms": float(np.median(floor)),
            "median_framework_ms": float(np.median(graph - floor)), "median_framework_share": float(np.median(1 - floor / graph)),
            "median_native_over_graph": float(np.median(native / graph)),
            "median_fp32_over_graph": float(np.median(fp32 / graph)), "median_fp32_over_native": float(np.median(fp32 / native)),
        }
    return {**provenance(load_start), "kernel_level": kernels.level(), "args": vars(args), "fp32_graph_ms": timed["fp32 graph"], "results": results}


def markdown(res: dict[str, Any]) -> str:
    args, load = res["args"], (res["load_start"]["loadavg_1_5_15"][0], res["load_end"]["loadavg_1_5_15"][0])
    rows = [
        [
            name, f"{r['median_graph_ms']:.2f}", f"{r['median_floor_ms']:.2f}", f"{r['median_framework_ms']:.2f}",
            f"**{100 * r['median_framework_share']:.0f} %**", " / ".join(f"{100 * s:.0f}" for s in r["framework_share"]),
            f"{r['median_native_ms']:.2f}", f"**{r['median_native_over_graph']:.3f}x**", " / ".join(f"{x:.2f}" for x in r["native_over_graph"]),
            f"{r['median_fp32_over_graph']:.2f}x", f"**{r['median_fp32_over_native']:.2f}x**",
        ]
        for name, r in res["results"].items()
    ]
    header = [
        "preset", "graph step, ms", "kernels alone, ms", "framework, ms", "framework share", "share each round, %",
        "native step, ms", "native / graph", "native / graph, each round", "FP32 / graph step", "FP32 / native step",
    ]
    return (
        "# A decode step: the kernels' part, MindSpore's graph launch, and the step without it; SmolLM2-135M\n\n"
        f"Command: `{res['command']}` (git {res['git'][:12]}); native kernel level `{res['kernel_level']}`; "
        f"{res['machine']['cpu_model']}, {res['machine']['usable_cores']} cores, load average {load[0]:.1f} at start and {load[1]:.1f} at end.\n\n"
        f"{args['rounds']} rounds of {args['steps']} greedy steps after a {args['prompt']}-token prompt, in a new random order each round; per "
        "round the median step. 'graph step': `CompiledDecoder(native_steps=False)`, as greedy decoding runs it (the Python loop, position "
        "inputs and argmax included). 'kernels alone': the same step's kernels (every block's `decoder_layer`, the final `rms_norm`, the "
        "float head `f32_linear`; not the one-row token lookup) called back to back through ctypes on the network's weights. 'framework' = "
        "graph step − kernels alone. 'native step': the default `CompiledDecoder`, whose single-token steps run those kernels without the "
        "graph (`gscore.nn.native_step`, bit-identical logits), as greedy decoding runs it. Ratios are paired per round, then the median "
        f"over rounds; FP32's step goes through its graph (median {np.median(res['fp32_graph_ms']):.1f} ms): its blocks are MindSpore MatMuls, not one operator each.\n\n"
        + md_table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--output", default="decode_floor")
    args = parser.parse_args()
    write_results(args.output, run(args), markdown)


if __name__ == "__main__":
    main()
