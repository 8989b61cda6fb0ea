"""Native kernels against FP32 MindSpore on the same shapes, and against memory bandwidth.

Questions answered, for every kernel at decode (M = 1, 4) and prefill (M = 64, 512) shapes:

* how long one call takes as a MindSpore operator (PyNative, ``launch_blocking``: what a
  network pays per layer), next to ``ops.MatMul(transpose_b=True)`` on float32 weights of the
  same shape — the ratio is the issue's "vs FP32";
* how long the kernel alone takes (called through ctypes on the same arrays, no framework), so
  the per-call framework overhead is the difference;
* at M = 1, how close it gets to the memory-bandwidth limit: the weight bytes it must read
  divided by the bandwidth of a numpy copy measured in this run (goal: int8 GEMV 1x4096x4096
  at >= 70 % of that limit);
* attention over a KV cache at decode (1 new token, 128 and 1024 cached) and at a 512-token
  prefill, float and int8, against the MindSpore ops a float cache runs without kernels.

All contenders of one shape are timed round-robin in one process (``--rounds`` rounds of
``--calls`` calls each); the tables give medians over rounds of the per-call time, and ratios of
medians. The machine is shared: the load average is recorded.

``--baseline REV`` also builds the kernels from git revision REV's sources and races each
kernel alone against that build, interleaved in the same process: the way to show what a
kernel change gained on a noisy machine (column 'x REV').

Usage: python bench/kernels.py [--rounds 7] [--calls 5] [--level auto] [--rows 1,4,64,512]
       [--shapes 4096x4096,576x1536,1536x576] [--baseline REV] [--output kernels]
Writes bench/results/<output>.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from _common import baseline_library, copy_bandwidth, load_info, md_table, provenance, write_json, write_text
from gscore import kernels
from gscore.kernels.direct import Call
from gscore.kernels.ops import primitive
from gscore.nn.kv_cache import attention_ops
from gscore.quant import pack_int4

SHAPES = "4096x4096,576x1536,1536x576"  # K (in) x N (out): the issue's GEMV, SmolLM2's MLP
ROWS = [1, 4, 64, 512]
# attention (new query tokens, cached tokens): decode on a short and a long cache, a 512-token prefill
ATTENTION_SHAPES = [(1, 128), (1, 1024), (512, 512)]
GROUP = 128


def linear_contenders(m: int, k: int, n: int, level: str, rng: np.random.Generator, baseline: tuple[str, Path] | None) -> tuple[dict[str, Callable[[], Any]], dict[str, int]]:
    """Callables (MindSpore op and direct, and the baseline build's direct call) per contender,
    and the weight bytes each reads."""
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    q = rng.integers(-127, 128, (n, k)).astype(np.int8)
    scale, zp = (rng.random(n) * 0.01 + 1e-3).astype(np.float32), np.zeros(n, np.float32)
    groups = -(-k // GROUP)
    packed = pack_int4(rng.integers(-8, 8, (n, k)).astype(np.int8))
    gscale, gzp = (rng.random((n, groups)) * 0.01).astype(np.float32), rng.integers(-7, 8, (n, groups)).astype(np.float32)
    group = np.array([GROUP], np.int32)
    xs, xz, ones = np.array([0.02], np.float32), np.array([-3.0], np.float32), np.ones(k, np.float32)
    y = np.empty((m, n), np.float32)
    inputs = {
        "w8": ("w8_linear", [x, q, scale, zp], n * k),
        "w4-g128": ("w4_linear", [x, packed, gscale, gzp, group], n * k // 2),
        "a8w8-static": ("a8w8_static_linear", [x, q, scale, zp, xs, xz, ones], n * k),
        "a8w8-dynamic": ("a8w8_dynamic_linear", [x, q, scale, zp, ones], n * k),
    }
    matmul = ops.MatMul(transpose_b=True)
    tx, tw = Tensor(x), Tensor(w)
    fns: dict[str, Callable[[], Any]] = {"fp32 MatMul": lambda: matmul(tx, tw).asnumpy()}
    weight_bytes = {"fp32 MatMul": 4 * n * k}
    for name, (kernel, arrays, nbytes) in inputs.items():
        op, tensors = primitive(kernel, level), [Tensor(a) for a in arrays]
        direct = Call(kernel, level, arrays, [y])
        fns[name] = lambda op=op, tensors=tensors: op(*tensors).asnumpy()
        fns[f"{name} (kernel alone)"] = direct.run
        weight_bytes[name] = weight_bytes[f"{name} (kernel alone)"] = nbytes
        if baseline:
            revision, path = baseline
            fns[f"{name} (kernel alone, {revision})"] = Call(kernel, level, arrays, [y], library_path=path).run
            weight_bytes[f"{name} (kernel alone, {revision})"] = nbytes
    return fns, weight_bytes


def attention_contenders(queries: int, cached: int, level: str, rng: np.random.Generator, baseline: tuple[str, Path] | None) -> dict[str, Callable[[], Any]]:
    """Attention of ``queries`` new tokens (9 heads over 3 kv heads of 64; causal: the last
    ``queries`` of ``cached`` positions) on a cache of ``cached``: MindSpore ops on a float
    cache, each kernel as an operator, and each kernel alone (and the baseline build's)."""
    q_np = rng.standard_normal((1, 9, queries, 64)).astype(np.float32)
    kf, vf = rng.standard_normal((2, 1, 3, cached, 64)).astype(np.float32)
    kq, vq = rng.integers(-127, 128, (2, 1, 3, cached, 64)).astype(np.int8)
    ch_scale, ch_zp = (rng.random((3, 1, 64)) * 0.05).astype(np.float32), np.zeros((3, 1, 64), np.float32)
    tok_scale = (rng.random((1, 3, cached, 1)) * 0.05).astype(np.float32)
    positions = np.arange(cached - queries, cached)[:, None]
    mask_np = np.where(np.arange(cached)[None, :] > positions, np.float32(-1e9), np.float32(0.0))
    softmax_scale = np.array([0.125], np.float32)
    inputs = {
        "float": [q_np, kf, vf, mask_np, softmax_scale],
        "channel": [q_np, kq, ch_scale, ch_zp, vq, ch_scale, ch_zp, mask_np, softmax_scale],
        "token": [q_np, kq, tok_scale, vq, tok_scale, mask_np, softmax_scale],
    }
    label = {"float": "float cache", "channel": "int8 per channel", "token": "int8 per token"}
    q, tk, tv, mask = Tensor(q_np), Tensor(kf), Tensor(vf), Tensor(mask_np)
    fns: dict[str, Callable[[], Any]] = {"MindSpore ops, float cache": lambda: attention_ops(q, tk, tv, mask, 0.125).asnumpy()}
    out = np.empty((1, queries, 9 * 64), np.float32)
    for kind, arrays in inputs.items():
        op, tensors = primitive(f"attention_{kind}", level), [Tensor(a) for a in arrays]
        fns[f"kernel, {label[kind]}"] = lambda op=op, tensors=tensors: op(*tensors).asnumpy()
        fns[f"kernel, {label[kind]} (kernel alone)"] = Call(f"attention_{kind}", level, arrays, [out]).run
        if baseline:
            revision, path = baseline
            fns[f"kernel, {label[kind]} (kernel alone, {revision})"] = Call(f"attention_{kind}", level, arrays, [out], library_path=path).run
    return fns


def race(fns: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """Per-call seconds of each contender, round-robin: median and best over rounds.

    Each round runs the contenders in a new (seeded) random order: in a fixed order, one that
    follows another on the same arrays always found them in cache (a build raced against
    itself came out 10-20 % apart)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for name in order.permutation(list(fns)):
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: {"median_s": float(np.median(s)), "best_s": float(min(s))} for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--level", default="auto", choices=kernels.CHOICES[:-1])
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="comma-separated M values")
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated KxN weight shapes (in x out) of the linear kernels")
    parser.add_argument("--baseline", help="git revision whose kernels each kernel alone is raced against")
    parser.add_argument("--output", default="kernels")
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    with kernels.forced(args.level) as level, tempfile.TemporaryDirectory() as tmp:
        baseline = (args.baseline, baseline_library(args.baseline, level, Path(tmp))) if args.baseline else None
        rng = np.random.default_rng(0)
        load_start = load_info()
        bandwidth = copy_bandwidth()
        linear: list[dict[str, Any]] = []
        for k, n in (map(int, shape.split("x")) for shape in args.shapes.split(",")):
            for m in map(int, args.rows.split(",")):
                fns, weight_bytes = linear_contenders(m, k, n, level, rng, baseline)
                times = race(fns, args.rounds, args.calls if m < 512 else max(1, args.calls // 5))
                for name, t in times.items():
                    linear.append({"M": m, "K": k, "N": n, "contender": name, **t, "weight_bytes": weight_bytes[name], "bandwidth_limit_s": weight_bytes[name] / bandwidth})
                print(f"{m}x{k}x{n}: " + ", ".join(f"{name} {t['median_s'] * 1e3:.3f} ms" for name, t in times.items()), flush=True)
        attention: list[dict[str, Any]] = []
        for queries, cached in ATTENTION_SHAPES:
            calls = args.calls * 4 if queries == 1 else args.calls
            for name, t in race(attention_contenders(queries, cached, level, rng, baseline), args.rounds, calls).items():
                attention.append({"queries": queries, "cached_tokens": cached, "contender": name, **t})
    report = {
        **provenance(load_start),
        "level": level,
        "baseline": args.baseline,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "linear": linear,
        "attention": attention,
    }
    write_json(args.output, report)
    write_text(f"{args.output}.md", markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    fp32 = {(r["M"], r["K"], r["N"]): r["median_s"] for r in report["linear"] if r["contender"] == "fp32 MatMul"}
    by_name = {(r["M"], r["K"], r["N"], r["contender"]): r for r in report["linear"]}
    revision = report.get("baseline")
    rows = []
    for r in report["linear"]:
        base = fp32[(r["M"], r["K"], r["N"])]
        limit = f"{100 * r['bandwidth_limit_s'] / r['median_s']:.0f} %" if r["M"] == 1 else ""
        row = [f"{r['M']}x{r['K']}x{r['N']}", r["contender"], f"{r['median_s'] * 1e3:.3f}", f"{r['best_s'] * 1e3:.3f}", f"{r['median_s'] / base:.2f}x", limit]
        if revision:
            old = by_name.get((r["M"], r["K"], r["N"], r["contender"].replace("(kernel alone)", f"(kernel alone, {revision})")))
            row.append(f"{r['median_s'] / old['median_s']:.2f}x" if old and old is not r else "")
        rows.append(row)
    gemv = by_name.get((1, 4096, 4096, "w8 (kernel alone)"))
    goal = (f"**{100 * gemv['bandwidth_limit_s'] / gemv['median_s']:.0f} %** (kernel alone, median), {100 * gemv['bandwidth_limit_s'] / gemv['best_s']:.0f} % best"
            if gemv else "not measured in this run (needs M = 1)")
    def shape(r: dict[str, Any]) -> tuple[int, int]:
        return r["queries"], r["cached_tokens"]

    base_attention = {shape(r): r["median_s"] for r in report["attention"] if r["contender"].startswith("MindSpore")}
    by_attention = {(*shape(r), r["contender"]): r for r in report["attention"]}
    attention_rows = []
    for r in report["attention"]:
        row = [shape(r)[0], r["cached_tokens"], r["contender"], f"{r['median_s'] * 1e3:.3f}", f"{r['median_s'] / base_attention[shape(r)]:.2f}x"]
        if revision:
            old = by_attention.get((*shape(r), r["contender"].replace("(kernel alone)", f"(kernel alone, {revision})")))
            row.append(f"{r['median_s'] / old['median_s']:.2f}x" if old and old is not r else "")
        attention_rows.append(row)
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    return (
        "# Native kernels vs FP32 MindSpore, and vs memory bandwidth\n\n"
        f"Command: `{report['command']}` (git {report['git'][:12]}); level `{report['level']}`; "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores; load average {load[0]:.1f} at start, {load[1]:.1f} at end "
        "(the machine is shared: absolute times move, ratios within one row group were measured round-robin).\n\n"
        f"Copy bandwidth (numpy, 256 MiB, best of 7): {report['copy_bandwidth_gb_s']:.1f} GB/s. "
        "'of limit' = (weight bytes / copy bandwidth) / time, for M = 1.\n\n"
        f"Goal: int8 GEMV 1x4096x4096 >= 70 % of the bandwidth limit: {goal}.\n\n"
        "## Linear layers (per call, ms; M x K x N)\n\n"
        + md_table(["shape", "contender", "median ms", "best ms", "x FP32 MatMul", "of limit"] + ([f"x {revision}"] if revision else []), rows)
        + "\nRows 'kernel alone' call the C++ entry point through ctypes; the difference to the row above is MindSpore's per-operator cost."
        + (f" Rows '(kernel alone, {revision})' run the kernels built from git {revision}'s sources; 'x {revision}' is this build's median over that one's, same shape and rows, raced in the same rounds." if revision else "")
        + "\n\n"
        "## Attention (9 query heads over 3 KV heads of 64; new tokens attend causally over the cache)\n\n"
        + md_table(["new tokens", "cached tokens", "contender", "median ms", "x MindSpore ops"] + ([f"x {revision}"] if revision else []), attention_rows)
    )


if __name__ == "__main__":
    main()
