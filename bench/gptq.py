"""Benchmark: the numpy precision-recovery math of ``gscore.quant`` on SmolLM2-135M's layer shapes.

Questions answered:

1. How long does :func:`gscore.quant.gptq_quantize` take per linear layer of SmolLM2
   (``[out, in]`` = q/o ``[576, 576]``, k/v ``[192, 576]``, gate/up ``[1536, 576]``, down
   ``[576, 1536]``) for per-channel int8, per-group-128 int4 (params computed during the loop)
   and per-group-128 int4 with act order + static groups? Extrapolated to all 210 linears of
   the 30 blocks (2 of each shape per block, 1 down_proj).
2. How long does :class:`gscore.quant.HessianAccumulator` take for 4096 rows (8 windows of
   512 tokens), in one call and in 8 calls of 512 rows; 4 Hessians per block (q/k/v share
   one input, gate/up another, o and down their own)?
3. How long does the AWQ clipping search take per shape (int4 g128, 512 sample rows)?
4. Online rotation of 4096 rows: the factored Hadamard form (dense matmul on the
   power-of-two factor) vs one dense ``x @ H`` vs a numpy fast Walsh-Hadamard transform on the
   power-of-two factor: which structure is faster in numpy.

Weights are SmolLM2's real layer-0 weights; inputs are synthetic correlated rows
(``Z @ A``, random mixing ``A``; timing does not depend on the values). Everything is
repeated ``--repeat`` times, interleaved in one process; the best wall time counts. GPTQ's
output error relative to RTN on those inputs is recorded as a sanity check only.
Results: ``bench/results/gptq.json`` and ``bench/results/gptq.md``.

Run from the repository root: ``nice -n 10 python bench/gptq.py`` (default ``--repeat 3``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from gscore.models.smollm2 import load_smollm2  # noqa: E402
from gscore.quant import HessianAccumulator, QuantScheme, factored_hadamard, gptq_quantize, hadamard, search_weight_clip  # noqa: E402

SHAPES = {  # name: (HF weight of layer 0, linears of this shape per block)
    "q/o [576, 576]": ("model.layers.0.self_attn.q_proj.weight", 2),
    "k/v [192, 576]": ("model.layers.0.self_attn.k_proj.weight", 2),
    "gate/up [1536, 576]": ("model.layers.0.mlp.gate_proj.weight", 2),
    "down [576, 1536]": ("model.layers.0.mlp.down_proj.weight", 1),
}
BLOCKS = 30
HESSIANS_PER_BLOCK = {576: 3, 1536: 1}  # inputs: qkv, o, gate/up (576 wide); down (1536 wide)
INT4_G128 = QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=128)
CONFIGS: dict[str, tuple[QuantScheme, dict[str, Any]]] = {
    "int8 per channel": (QuantScheme(bits=8), {}),
    "int4 g128": (INT4_G128, {}),
    "int4 g128 act_order + static_groups": (INT4_G128, {"act_order": True, "static_groups": True}),
}
ROWS = 4096
CLIP_ROWS = 512


def correlated_rows(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    return (rng.standard_normal((rows, n)) @ rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)


def hessian_of(x: np.ndarray, chunk: int) -> np.ndarray:
    acc = HessianAccumulator(x.shape[1])
    for start in range(0, x.shape[0], chunk):
        acc.add(x[start : start + chunk])
    return acc.hessian()


def fwht_last_axis(x: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform along the last axis (a power of two),
    log2(b) numpy passes: the alternative the factored form's dense matmul is compared with."""
    out = x.copy()
    b = out.shape[-1]
    half = 1
    while half < b:
        view = out.reshape(-1, b // (2 * half), 2, half)
        first = view[:, :, 0, :].copy()
        view[:, :, 0, :] += view[:, :, 1, :]
        np.subtract(first, view[:, :, 1, :], out=view[:, :, 1, :])
        half *= 2
    return out


def factored_with_fwht(x: np.ndarray, n: int) -> np.ndarray:
    f = factored_hadamard(n)
    a, b = f.dense.shape[0], f.sylvester.shape[0]
    inner = fwht_last_axis(x.reshape(-1, b)).reshape(-1, a, b)
    return np.tensordot(inner, f.dense, axes=(1, 0)).transpose(0, 2, 1).reshape(x.shape) / np.float32(np.sqrt(n))


def best_of(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: min(values) for name, values in samples.items()}


def timing(name: str, best: dict[str, float], best_cpu: dict[str, float]) -> list[str]:
    """``[best wall s, best CPU s]`` cells of one case."""
    return [f"{best[name]:.3f}", f"{best_cpu[name]:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    weights, _, _ = load_smollm2()
    rng = np.random.default_rng(args.seed)
    inputs = {n: correlated_rows(rng, ROWS, n) for n in (576, 1536)}
    hessians = {n: hessian_of(x, ROWS) for n, x in inputs.items()}
    layer_weights = {name: weights[key] for name, (key, _) in SHAPES.items()}

    cases: dict[str, Callable[[], Any]] = {}
    for n, x in inputs.items():
        cases[f"hessian {ROWS}x{n}, 1 call"] = lambda x=x: hessian_of(x, ROWS)
        cases[f"hessian {ROWS}x{n}, 8 calls of 512"] = lambda x=x: hessian_of(x, 512)
    for config, (scheme, kwargs) in CONFIGS.items():
        for shape, w in layer_weights.items():
            cases[f"gptq {config} | {shape}"] = lambda w=w, s=scheme, k=kwargs: gptq_quantize(w, hessians[w.shape[1]], s, scale_dtype=np.float16, **k)
    for shape, w in layer_weights.items():
        sample = inputs[w.shape[1]][:CLIP_ROWS]
        cases[f"clip search int4 g128 | {shape}"] = lambda w=w, x=sample: search_weight_clip(w, x, INT4_G128, scale_dtype=np.float16)
    for n, x in inputs.items():
        dense = hadamard(n).astype(np.float32)
        factored = factored_hadamard(n)
        cases[f"rotate {ROWS}x{n}: factored (dense {factored.dense.shape[0]} x matmul {factored.sylvester.shape[0]})"] = lambda x=x, f=factored: f.apply(x)
        cases[f"rotate {ROWS}x{n}: factored with FWHT on {factored.sylvester.shape[0]}"] = lambda x=x, n=n: factored_with_fwht(x, n)
        cases[f"rotate {ROWS}x{n}: one dense x @ H"] = lambda x=x, h=dense: x @ h

    for n, x in inputs.items():  # the three rotations agree
        reference = x @ hadamard(n).astype(np.float32)
        assert np.allclose(factored_hadamard(n).apply(x), reference, atol=1e-4)
        assert np.allclose(factored_with_fwht(x, n), reference, atol=1e-4)

    load_start = common.load_info()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    cpu_samples: dict[str, list[float]] = {name: [] for name in cases}
    results: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            seconds, cpu, out = common.clocked(fn)
            samples[name].append(seconds)
            cpu_samples[name].append(cpu)
            results[name] = out
    best, best_cpu = best_of(samples), best_of(cpu_samples)

    gptq_rows = []
    totals: dict[str, float] = {}
    cpu_totals: dict[str, float] = {}
    for config in CONFIGS:
        totals[config] = cpu_totals[config] = 0.0
        for shape, (_, per_block) in SHAPES.items():
            name = f"gptq {config} | {shape}"
            d = results[name].diagnostics
            totals[config] += best[name] * per_block * BLOCKS
            cpu_totals[config] += best_cpu[name] * per_block * BLOCKS
            gptq_rows.append([config, shape, *timing(name, best, best_cpu), f"{d.error / d.error_rtn:.3f}", d.fallback_rows])
    hessian_name = f"hessian {ROWS}x{{}}, 8 calls of 512"
    hessian_total = sum(best[hessian_name.format(n)] * count * BLOCKS for n, count in HESSIANS_PER_BLOCK.items())
    hessian_cpu = sum(best_cpu[hessian_name.format(n)] * count * BLOCKS for n, count in HESSIANS_PER_BLOCK.items())

    report = {
        "command": common.command_line(),
        "git": common.git_revision(),
        "machine": common.machine_info(),
        "load_start": load_start,
        "load_end": common.load_info(),
        "repeat": args.repeat,
        "rows": ROWS,
        "best_s": best,
        "best_cpu_s": best_cpu,
        "samples_s": samples,
        "cpu_samples_s": cpu_samples,
        "gptq_all_210_linears_s": totals,
        "gptq_all_210_linears_cpu_s": cpu_totals,
        "hessians_all_blocks_s": hessian_total,
        "hessians_all_blocks_cpu_s": hessian_cpu,
        "gptq_error_over_rtn": {name: results[name].diagnostics.error / results[name].diagnostics.error_rtn for name in cases if name.startswith("gptq")},
    }
    common.write_json("gptq", report)

    machine, load_end = report["machine"], report["load_end"]
    lines = [
        "# GPTQ, Hessian, clipping and rotation math (numpy) on SmolLM2-135M layer shapes",
        "",
        f"Command: `{report['command']}` (git {report['git'][:12]})",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores, numpy {np.__version__}. Load average at start/end: "
        f"{load_start['loadavg_1_5_15'][0]:.1f} / {load_end['loadavg_1_5_15'][0]:.1f} (CPU pressure {load_start['cpu_pressure_some_avg10_pct']:.0f}% / "
        f"{load_end['cpu_pressure_some_avg10_pct']:.0f}%: other work shared the cores). Best of {args.repeat} interleaved repetitions, "
        "seconds: wall time, and CPU time of this process (all threads; less sensitive to other tenants, about 2x wall when "
        "BLAS has both cores to itself).",
        "",
        f"Weights: SmolLM2 layer 0; Hessians from {ROWS} synthetic correlated input rows; float16 scales (as deployed).",
        "",
        "## GPTQ per layer",
        "",
        common.md_table(["config", "shape [out, in]", "best s", "best CPU s", "error / RTN error (sanity)", "rows kept as RTN"], gptq_rows),
        "All 210 linears of the 30 blocks (2 per block of each shape, 1 down_proj), wall (CPU): "
        + "; ".join(f"{config} **{totals[config]:.1f} s** ({cpu_totals[config]:.1f} s)" for config in CONFIGS)
        + ".",
        "",
        "## Hessian accumulation (float64 XᵀX)",
        "",
        common.md_table(["what", "best s", "best CPU s"], [[name, *timing(name, best, best_cpu)] for name in cases if name.startswith("hessian")]),
        f"All 30 blocks (3 Hessians of width 576 and 1 of width 1536 per block, 8 calls of 512 rows), wall (CPU): "
        f"**{hessian_total:.1f} s** ({hessian_cpu:.1f} s).",
        "",
        "## AWQ clipping search (int4 g128, 10 ratios, 512 sample rows)",
        "",
        common.md_table(["shape [out, in]", "best s", "best CPU s"], [[name.split(" | ")[1], *timing(name, best, best_cpu)] for name in cases if name.startswith("clip")]),
        "## Online rotation of 4096 rows (float32)",
        "",
        common.md_table(["what", "best s", "best CPU s"], [[name, *timing(name, best, best_cpu)] for name in cases if name.startswith("rotate")]),
        "The factored form applies the power-of-two factor as a dense matmul: faster in numpy than the fast "
        "Walsh-Hadamard transform's log2(b) passes over the array.",
    ]
    text = "\n".join(lines) + "\n"
    common.write_text("gptq.md", text)
    print(text)


if __name__ == "__main__":
    main()
