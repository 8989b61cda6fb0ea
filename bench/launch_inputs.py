"""Benchmark: what MindSpore charges per operator input when a compiled graph launches it.

A decode step of a deployed SmolLM2 runs each block as one native operator, and profiles of
that step (``bench/ptq_latency.py``) show a gap of tens of microseconds before every block
operator. This script isolates the cause: graphs of ``--ops`` AOT custom operators (a
one-line C++ kernel that copies its first input, built with the system compiler like the
native kernels) chained one after another, each also reading ``n`` small float32 Parameters it
ignores, for several ``n``. The graph launch costs the same whatever the operators compute, so
the slope of time per graph call against ``n`` is MindSpore's cost per operator input per
launch. The networks are timed in a new random order each round; reported: the median call
time per ``n`` and the least-squares slope in microseconds per input per operator.

Usage (from bench/): python launch_inputs.py [--ops 30] [--inputs 1 10 20 40] [--rounds 7] [--calls 50]
Writes bench/results/launch_inputs.json and .md.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from _common import interleaved_rounds, load_info, md_table, provenance, write_results
from gscore.kernels.build import compiler

SOURCE = """#include <cstdint>
#include <cstring>
extern "C" int copy_first(int nparam, void** params, int* ndims, int64_t** shapes, const char**, void*, void*) {
  int64_t n = 1;
  for (int d = 0; d < ndims[0]; ++d) n *= shapes[0][d];
  std::memcpy(params[nparam - 1], params[0], static_cast<size_t>(n) * sizeof(float));
  return 0;
}
"""


class Chain(nn.Cell):
    """``ops`` operators in a row, each reading the running tensor and ``inputs`` Parameters."""

    def __init__(self, op: ops.Custom, count: int, inputs: int) -> None:
        super().__init__()
        self.op, self.count = op, count
        self.extra = ParameterTuple([Parameter(Tensor(np.zeros(64, np.float32)), name=f"p{i}") for i in range(count * inputs)])
        self.inputs = inputs

    def construct(self, x: Tensor) -> Tensor:
        for i in range(self.count):
            x = self.op(x, *self.extra[i * self.inputs : (i + 1) * self.inputs])
        return x


def run(args: argparse.Namespace) -> dict[str, Any]:
    ms.runtime.launch_blocking()
    load_start = load_info()
    with tempfile.TemporaryDirectory() as tmp:
        source, library = Path(tmp) / "copy_first.cc", Path(tmp) / "copy_first.so"
        source.write_text(SOURCE)
        subprocess.run([compiler(), "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
        op = ops.Custom(f"{library}:copy_first", out_shape=lambda x, *_: x, out_dtype=lambda x, *_: x, func_type="aot")
        x = Tensor(np.ones(64, np.float32))
        graphs = {n: ms.jit(Chain(op, args.ops, n).construct) for n in args.inputs}
        for graph in graphs.values():
            graph(x).asnumpy()  # compile before timing

        def median_call_us(graph: Any) -> float:
            calls = []
            for _ in range(args.calls):
                start = time.perf_counter()
                graph(x).asnumpy()
                calls.append(time.perf_counter() - start)
            return float(np.median(calls)) * 1e6

        samples = interleaved_rounds({n: (lambda g=graph: median_call_us(g)) for n, graph in graphs.items()}, args.rounds)
    medians = {n: float(np.median(s)) for n, s in samples.items()}
    slope, intercept = np.polyfit(list(medians), list(medians.values()), 1)
    return {
        **provenance(load_start),
        "args": vars(args),
        "call_us": samples,
        "median_call_us": medians,
        "us_per_input_per_op": float(slope / args.ops),
        "us_per_graph_with_one_input_ops": float(intercept + slope),
    }


def markdown(res: dict[str, Any]) -> str:
    args, load = res["args"], (res["load_start"]["loadavg_1_5_15"][0], res["load_end"]["loadavg_1_5_15"][0])
    rows = [[n, f"{res['median_call_us'][n]:.0f}", " / ".join(f"{s:.0f}" for s in res["call_us"][n])] for n in res["median_call_us"]]
    return (
        "# MindSpore's launch cost per operator input (compiled graph, CPU)\n\n"
        f"Command: `{res['command']}` (git {res['git']}); {res['machine']['cpu_model']}, {res['machine']['usable_cores']} cores, "
        f"load average {load[0]:.1f} at start and {load[1]:.1f} at end.\n\n"
        f"A graph of {args['ops']} AOT custom operators in a row (each copies its first input), each also reading n float32 Parameters of 64 "
        f"values it ignores; {args['rounds']} rounds (the graphs in a new random order each), per round the median of {args['calls']} calls.\n\n"
        + md_table(["n inputs besides the running tensor", "median us per graph call", "each round"], rows)
        + f"\nSlope: **{res['us_per_input_per_op']:.2f} us per input per operator launch**. A deployed SmolLM2 A16W4 block as one operator "
        f"takes 41 inputs: about {41 * res['us_per_input_per_op']:.0f} us per block, {30 * 41 * res['us_per_input_per_op'] / 1e3:.1f} ms per decode step of 30 blocks.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=30)
    parser.add_argument("--inputs", type=int, nargs="+", default=[1, 10, 20, 40])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--output", default="launch_inputs", help="stem of the result files in bench/results")
    args = parser.parse_args()
    write_results(args.output, run(args), markdown)


if __name__ == "__main__":
    main()
