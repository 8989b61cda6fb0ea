"""Benchmark: RTN A16W8 (``gscore.get("rtn")``) on a stack of ``nn.Dense`` layers.

Question answered: how much slower than simply copying the weights once is gscore's RTN
``apply`` + ``convert``? The issue's target is at most 3x a plain numpy copy of the same bytes
(Golden Stick takes ~12 s here for the default size, about 13x a naive numpy pass).

Everything is measured in ONE process, interleaved per repetition, so that ratios compare
runs that saw the same machine state (the benchmark hosts are small and noisy):

1. numpy copy: ``w.copy()`` of every float32 weight, copies kept until all are done (like the
   int8 weights a conversion keeps) -- the baseline;
2. naive numpy RTN: per layer ``s = |w|.max(1)/127; q = clip(rint(w/s), -128, 127).astype(int8)``;
3. gscore: ``algo.apply(net)`` + ``algo.convert(net)`` on a freshly built network, with the
   peak RSS growth of the process during them (VmHWM, reset before via ``/proc/self/clear_refs``).

Each is repeated ``--repeat`` times, each right after :func:`settle_memory`; the best wall time
counts, and CPU times are recorded too (less sensitive to other tenants of the cores). Every
converted network is checked (every Dense replaced, int8 weights equal to the naive RTN codes);
the last one also runs forward (outputs close to the float network's, and equal to numpy math
on its int8 weights). Unless ``--no-profile``, one more instrumented run splits apply/convert
into their steps. Results: ``bench/results/rtn.json`` and ``bench/results/rtn.md``.

Run from the repository root: ``python bench/rtn.py`` (defaults: 16 layers of 4096x4096).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

MIB = 2**20


# --------------------------------------------------------------------------- the network


def make_weights(layers: int, dim: int, seed: int) -> list[np.ndarray]:
    """Float32 ``[dim, dim]`` weights, uniform in +-sqrt(3/dim) (std 1/sqrt(dim)).

    That spread keeps activations at the same scale through the whole stack, so the output
    error check means the same thing at every depth.
    """
    rng = np.random.default_rng(seed)
    bound = np.float32(np.sqrt(3.0 / dim))
    weights = []
    for _ in range(layers):
        w = rng.random((dim, dim), dtype=np.float32)
        w -= np.float32(0.5)
        w *= 2 * bound
        weights.append(w)
    return weights


def build_net(weights: list[np.ndarray]) -> Any:
    """An ``nn.SequentialCell`` of ``nn.Dense(dim, dim)`` (with bias) holding its own copy of ``weights``."""
    from mindspore import Tensor, nn

    dim = weights[0].shape[0]
    return nn.SequentialCell([nn.Dense(dim, dim, weight_init=Tensor.from_numpy(w)) for w in weights])


def net_weights(net: Any) -> list[np.ndarray]:
    """The network's weights as numpy arrays sharing its memory: read them, never write them."""
    return [cell.weight.asnumpy() for cell in net.cells()]


def float_reference(net: Any, x: np.ndarray) -> list[np.ndarray]:
    """Float64 numpy output after every layer of the (still float) network, for input ``x``.

    Computed outside MindSpore, so the check compares the int8 network with exact math.
    """
    outs, y = [], x.astype(np.float64)
    for cell in net.cells():
        y = y @ cell.weight.asnumpy().T.astype(np.float64) + cell.bias.asnumpy()
        outs.append(y)
    return outs


def ms_layer_outputs(net: Any, x: np.ndarray) -> list[np.ndarray]:
    """The MindSpore network's output after every layer for input ``x`` (numpy arrays)."""
    from mindspore import Tensor

    outs, y = [], Tensor(x)
    for cell in net.cells():
        y = cell(y)
        outs.append(y.asnumpy().copy())
    return outs


def settle_memory(nbytes: int) -> None:
    """Touch and free ``nbytes`` of memory twice, right before a timed section.

    The benchmark VMs use free page reporting: memory a process frees is handed back to the
    host within a few seconds, and the next first touch of it costs up to ~2 s per GiB instead of
    ~0.2 s. Which contender pays that would depend on what ran a few seconds before it; running
    each one right after this keeps the comparison about the code, not about that host effect.
    """
    chunk = 64 * MIB
    for _ in range(2):
        blocks = [np.ones(chunk // 4, np.float32) for _ in range(max(1, nbytes // chunk))]
        del blocks
    gc.collect()


# --------------------------------------------------------------------------- the three contenders


def numpy_copy(weights: list[np.ndarray]) -> list[np.ndarray]:
    """The baseline: one ``.copy()`` per weight, all kept (a new float32 model in memory)."""
    return [w.copy() for w in weights]


def naive_rtn(weights: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The issue's naive numpy RTN, per layer: ``(int8 codes, float32 scale [out, 1])``."""
    out = []
    for w in weights:
        s = np.abs(w).max(1, keepdims=True) / 127
        q = np.clip(np.rint(w / s), -128, 127).astype(np.int8)
        out.append((q, s))
    return out


def gscore_rtn(net: Any) -> dict[str, Any]:
    """``apply`` + ``convert`` with the RTN plugin: wall seconds of each, CPU seconds of both,
    peak RSS growth (MiB) and the core timing observer's phase records."""
    import gscore

    algo = gscore.get("rtn")(gscore.PTQConfig())
    with common.PeakRss() as mem:
        t_apply, cpu_apply, _ = common.clocked(lambda: algo.apply(net))
        t_convert, cpu_convert, _ = common.clocked(lambda: algo.convert(net))
    return {
        "apply_s": t_apply,
        "convert_s": t_convert,
        "total_s": t_apply + t_convert,
        "total_cpu_s": cpu_apply + cpu_convert,
        "memory": mem.as_dict(),
        "phase_records": [
            {"phase": r.phase, "seconds": round(r.seconds, 4), "peak_rss_mib": round(r.peak_rss_mib, 1)} for r in algo.phase_records
        ],
        "layers": list(algo.layers),
    }


# --------------------------------------------------------------------------- correctness


def check_structure(net: Any, layers: int, dim: int, naive: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Every ``nn.Dense`` became a ``QuantLinear`` whose int8 ``[dim, dim]`` weight equals naive RTN.

    A difference of 1 in a rare code would be tolerated (gscore computes the scale in float64
    and rounds it to float32, the naive pass divides in float32); raises AssertionError otherwise.
    """
    from mindspore import nn

    from gscore.nn.quant_linear import QuantLinear

    cells = list(net.cells())
    dense_left = [name for name, c in net.cells_and_names() if isinstance(c, nn.Dense)]
    assert not dense_left, f"Dense layers left unquantized: {dense_left}"
    assert len(cells) == layers and all(isinstance(c, QuantLinear) for c in cells), [type(c).__name__ for c in cells]
    diff_codes, max_code_diff = 0, 0
    for cell, (q_ref, _) in zip(cells, naive):
        q = cell.weight.asnumpy()
        assert q.dtype == np.int8 and q.shape == (dim, dim), (q.dtype, q.shape)
        d = np.abs(q.astype(np.int16) - q_ref)
        diff_codes += int(np.count_nonzero(d))
        max_code_diff = max(max_code_diff, int(d.max()))
    assert max_code_diff <= 1, f"codes differ from naive RTN by up to {max_code_diff}"
    return {
        "dense_replaced": layers,
        "weight_dtype": "int8",
        "codes_total": layers * dim * dim,
        "codes_differing_from_naive_rtn": diff_codes,
        "max_code_difference": max_code_diff,
    }


def check_outputs(net: Any, x: np.ndarray, ref: list[np.ndarray]) -> dict[str, Any]:
    """The int8 network's outputs against the float network's (relative L2 errors).

    * ``rel_l2_error_by_depth``: MindSpore forward of the int8 stack vs the float64 reference
      after each layer (the quantization errors of the layers add up through the stack);
    * ``rel_l2_error_single_layer_max``: worst single layer, fed the float input;
    * ``ms_vs_numpy_dequant_max``: MindSpore output vs numpy ``x @ (q * scale).T + b`` from the
      deployed parameters, i.e. the network really computes with its int8 weights (~1e-6).

    Also times the forward passes (seconds, batch of ``len(x)`` rows). Raises AssertionError
    when an error is out of bounds.
    """
    cells = list(net.cells())

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    def deployed(cell: Any) -> np.ndarray:
        wq = cell._weight_quantizer
        scale = wq.scale.asnumpy().astype(np.float64)[:, None]
        zp_neg = wq.zp_neg.asnumpy().astype(np.float64)[:, None]
        return (cell.weight.asnumpy().astype(np.float64) + zp_neg) * scale

    t_forward, outs = common.timed(lambda: ms_layer_outputs(net, x))
    weights = [deployed(c) for c in cells]
    biases = [c.bias.asnumpy().astype(np.float64) for c in cells]
    inputs = [x.astype(np.float64), *ref[:-1]]
    single = [rel(i @ w.T + b, r) for i, w, b, r in zip(inputs, weights, biases, ref)]
    emulated, y = [], inputs[0]
    for w, b in zip(weights, biases):
        y = y @ w.T + b
        emulated.append(y)
    stack = [rel(o, r) for o, r in zip(outs, ref)]
    ms_vs_numpy = max(rel(o, e) for o, e in zip(outs, emulated))
    assert max(single) < 0.02 and stack[-1] < 0.1 and ms_vs_numpy < 1e-4, (single, stack, ms_vs_numpy)
    return {
        "rel_l2_error_by_depth": [round(e, 6) for e in stack],
        "rel_l2_error_output": round(stack[-1], 6),
        "rel_l2_error_single_layer_max": round(max(single), 6),
        "ms_vs_numpy_dequant_max": float(f"{ms_vs_numpy:.3g}"),
        "int8_forward_s": round(t_forward, 3),
    }


# --------------------------------------------------------------------------- profile


class StepTimer:
    """Wall time spent inside selected gscore functions during apply/convert, by phase.

    It wraps module attributes (functions, or ``__init__`` of classes so that ``isinstance``
    keeps working) for the duration of a ``with`` block; times are inclusive, in seconds.
    A target that no longer exists (the code moved) is skipped and listed in ``missing``.
    """

    def __init__(self) -> None:
        self.phase = "-"
        self.totals: dict[str, list[float]] = {}
        self.missing: list[str] = []

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        import time

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry = self.totals.setdefault(f"{self.phase}/{label}", [0.0, 0])
                entry[0] += time.perf_counter() - start
                entry[1] += 1

        return wrapper

    @staticmethod
    def targets() -> dict[str, tuple[Any, str]]:
        """Label -> (module or class, attribute) of everything timed."""
        import gscore.nn.passes as passes
        import gscore.nn.quant_linear as ql
        import gscore.quant.native as native
        import gscore.quant.params as params

        names = {
            passes: ["find_weight_layers", "linear_view", "simulated_linear", "stored_params", "quant_params", "_weight_quantizer",
                     "replace_cell", "_integer_weight", "quantize", "view_of", "quantizers_of"],
            params: ["observe_minmax", "compute_params"],
            native: ["row_minmax", "quantize_rows"],
            ql: ["Parameter"],
        }
        out = {attr: (owner, attr) for owner, attrs in names.items() for attr in attrs}
        for cls in ("SimQuantLinear", "QuantLinear"):
            out[f"{cls}.__init__"] = (getattr(ql, cls), "__init__")
        return out

    @contextlib.contextmanager
    def installed(self) -> Iterator["StepTimer"]:
        saved = []
        for label, (owner, attr) in self.targets().items():
            original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
            if original is None:
                self.missing.append(label)
                continue
            saved.append((owner, attr, original))
            setattr(owner, attr, self._wrap(label, original))
        try:
            yield self
        finally:
            for owner, attr, original in reversed(saved):
                setattr(owner, attr, original)

    def seconds(self, phase: str, label: str) -> float:
        return self.totals.get(f"{phase}/{label}", [0.0, 0])[0]


# (label, what it does, children, what the rest of the parent is); labels are StepTimer targets.
STEP_TREE = [
    ("calibrate", "apply: the calibrate phase", [
        ("find_weight_layers", "walk the cell tree", [], ""),
        ("simulated_linear", "per layer: scales and the simulated cell", [
            ("stored_params", "quant_params, then the scale rounded to the store dtype", [
                ("observe_minmax", "each row's min and max", [
                    ("row_minmax", "native kernel: one pass over the fp32 weights, both cores", [], ""),
                ], "reshapes, finiteness check of the [out, 1] ranges"),
                ("compute_params", "scales from [out, 1] ranges", [], ""),
            ], "QuantParams checks, scale rounding"),
            ("_weight_quantizer", "WeightQuantizer cell with 2 small Parameters", [], ""),
            ("SimQuantLinear.__init__", "cell construction", [], ""),
        ], ""),
        ("replace_cell", "setattr + renaming the parameters", [], ""),
    ], "plugin hooks, linear_view, loop"),
    ("quantize", "convert: the quantize phase", [
        ("_integer_weight", "int8 codes of one layer from its stored scales", [
            ("quantize", "gscore.quant.quantize", [
                ("quantize_rows", "native kernel: divide, round, clip, int8 and a finiteness count in one pass", [], ""),
            ], "layout checks, reshapes"),
        ], "scale/zp asnumpy, QuantParams"),
        ("QuantLinear.__init__", "cell construction", [
            ("Parameter", "Parameter(Tensor.from_numpy(q)): copies q into MindSpore memory", [], ""),
        ], ""),
        ("replace_cell", "setattr + renaming the parameters", [], ""),
    ], "plugin hooks, iter_cells, view_of, quantizers_of"),
]


def _step_rows(phase: str, total: float, children: list[Any], rest: str, timer: StepTimer, depth: int) -> list[tuple[str, float, str]]:
    """Rows of one node's children, depth-first, plus an "other" row for what they leave out."""
    rows, covered = [], 0.0
    for label, what, grand, grand_rest in children:
        t = timer.seconds(phase, label)
        covered += t
        rows.append(("  " * depth + label, t, what))
        if grand:
            rows += _step_rows(phase, t, grand, grand_rest, timer, depth + 1)
    rows.append(("  " * depth + "(rest)", total - covered, rest))
    return rows


def profile_steps(weights: list[np.ndarray]) -> dict[str, Any]:
    """One instrumented apply+convert on a fresh network: seconds per step (summed over layers).

    The rows form a tree (indentation in the name); "(rest)" rows are the parent minus its
    listed children.
    """
    import gscore

    net = build_net(weights)
    algo = gscore.get("rtn")(gscore.PTQConfig())
    timer = StepTimer()
    settle_memory(sum(w.nbytes for w in weights))
    with timer.installed():
        timer.phase = "calibrate"
        t_apply, _ = common.timed(lambda: algo.apply(net))
        timer.phase = "quantize"
        t_convert, _ = common.timed(lambda: algo.convert(net))
    rows = []
    for (phase, what, children, rest), total in zip(STEP_TREE, (t_apply, t_convert)):
        rows.append((f"{'apply' if phase == 'calibrate' else 'convert'} ({phase} phase)", total, what))
        rows += _step_rows(phase, total, children, rest, timer, 1)
    del net
    gc.collect()
    return {
        "rows": [{"step": n, "seconds": round(t, 4), "what": w} for n, t, w in rows],
        "raw": {k: [round(v[0], 4), v[1]] for k, v in timer.totals.items()},
        "missing_targets": timer.missing,
    }


def profile_codes(weights: list[np.ndarray], repeat: int) -> dict[str, float]:
    """The full-array numpy operations a numpy ``observe_minmax``/``quantize`` needs, one by one,
    next to the two native kernels that replace them; best of ``repeat``, seconds over all layers.

    Uses gscore's own parameters for each weight; "divide (new buffer)" allocates a fresh
    64 MiB buffer per 4096x4096 layer (pages faulted in each time), "divide (reused buffer)"
    shows what that allocation costs.
    """
    from gscore.quant import QuantScheme, quant_params
    from gscore.quant.native import quantize_rows, row_minmax

    params = [quant_params(w, QuantScheme()) for w in weights]
    buf = np.empty_like(weights[0])

    def each(fn: Callable[[np.ndarray, Any], Any]) -> Callable[[], None]:
        """Apply ``fn(weight, params)`` to every layer, keeping no result."""

        def loop() -> None:
            for w, p in zip(weights, params):
                fn(w, p)

        return loop

    pieces = {
        "w.min() + w.max() (require_finite)": each(lambda w, p: (w.min(), w.max())),
        "w.min(1) + w.max(1) (observe_minmax)": each(lambda w, p: (w.min(1), w.max(1))),
        "np.divide into a new fp32 buffer": each(lambda w, p: np.divide(w, p.scale, dtype=np.float32)),
        "np.divide into a reused fp32 buffer": each(lambda w, p: np.divide(w, p.scale, out=buf)),
        "np.rint in place": each(lambda w, p: np.rint(buf, out=buf)),
        "np.clip in place": each(lambda w, p: np.clip(buf, -128, 127, out=buf)),
        "astype(int8) (new array)": each(lambda w, p: buf.astype(np.int8)),
        "native row_minmax (replaces the min/max pairs)": each(lambda w, p: row_minmax(w)),
        "native quantize_rows (replaces divide..astype)": each(lambda w, p: quantize_rows(w, p.scale, p.zero_point, p.scheme)),
    }
    out = {}
    for name, fn in pieces.items():
        settle_memory(weights[0].nbytes)
        out[name] = round(min(common.timed(fn)[0] for _ in range(repeat)), 4)
    return out


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=16, help="number of Dense layers in the stack")
    p.add_argument("--dim", type=int, default=4096, help="in = out features of every layer")
    p.add_argument("--repeat", type=int, default=5, help="repetitions of each measurement (each on a fresh network); the best counts")
    p.add_argument("--batch", type=int, default=8, help="rows of the random input used by the output check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-profile", action="store_true", help="skip the per-step profile")
    p.add_argument("--name", default="rtn", help="results go to bench/results/<name>.json and .md")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All measurements; returns the JSON-ready result."""
    import mindspore as ms

    import gscore

    logging.getLogger("gscore").setLevel(logging.WARNING)
    weights = make_weights(args.layers, args.dim, args.seed)
    x = np.random.default_rng(args.seed + 1).standard_normal((args.batch, args.dim), dtype=np.float32)
    nbytes = sum(w.nbytes for w in weights)
    print(f"{args.layers} x Dense({args.dim}, {args.dim}): {sum(w.size for w in weights) / 1e6:.0f}M fp32 weights, {nbytes / MIB:.0f} MiB")

    load_start = common.load_info()
    times: dict[str, list[float]] = {k: [] for k in ("copy", "copy_cpu", "naive", "naive_cpu", "apply", "convert", "total", "total_cpu")}
    mem: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    structure: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    float_forward_s = float("nan")
    for r in range(args.repeat):
        net = build_net(weights)
        ref = float_reference(net, x)
        if r == 0:
            float_forward_s, _ = common.timed(lambda: ms_layer_outputs(net, x))
        ws = net_weights(net)  # the very bytes gscore will read (views: read only)
        for name, fn in (("copy", numpy_copy), ("naive", naive_rtn)):
            settle_memory(nbytes)
            with common.PeakRss() as mem[name]:
                wall, cpu, result = common.clocked(lambda: fn(ws))
            times[name].append(wall)
            times[f"{name}_cpu"].append(cpu)
        naive = result
        del ws, result
        float_params = [weakref.ref(cell.weight) for cell in net.cells()]
        settle_memory(nbytes)
        run_ = gscore_rtn(net)
        runs.append(run_)
        gc.collect()
        run_["float_weights_still_referenced"] = sum(ref_() is not None for ref_ in float_params)
        for key in ("apply", "convert", "total"):
            times[key].append(run_[f"{key}_s"])
        times["total_cpu"].append(run_["total_cpu_s"])
        structure = {**check_structure(net, args.layers, args.dim, naive), "float_weights_still_referenced": run_["float_weights_still_referenced"]}
        print(
            f"rep {r}: copy {times['copy'][-1]:.3f} s, naive RTN {times['naive'][-1]:.3f} s, gscore apply {times['apply'][-1]:.3f} s + "
            f"convert {times['convert'][-1]:.3f} s = {times['total'][-1]:.3f} s, peak +{run_['memory']['peak_over_baseline_mib']:.0f} MiB, "
            f"{structure['codes_differing_from_naive_rtn']} codes differ from naive RTN"
        )
        if r == args.repeat - 1:  # once: the MindSpore int8 forward is slow (see the side finding)
            outputs = check_outputs(net, x, ref)
            print(f"output rel. L2 error {outputs['rel_l2_error_output']:.4f} after {args.layers} layers; int8 forward {outputs['int8_forward_s']:.1f} s")
        del net, naive, ref
        gc.collect()
    load_end = common.load_info()

    best = min(range(args.repeat), key=lambda i: times["total"][i])
    copy_best, copy_cpu_best = min(times["copy"]), min(times["copy_cpu"])
    ratio = min(times["total"]) / copy_best
    result: dict[str, Any] = {
        "benchmark": "rtn",
        "command": common.command_line(),
        "git_revision": common.git_revision(),
        "machine": common.machine_info(),
        "load": {"start": load_start, "end": load_end},
        "versions": {"mindspore": ms.__version__, "numpy": np.__version__, "gscore": gscore.__version__},
        "workload": {
            "layers": args.layers, "dim": args.dim, "parameters": args.layers * args.dim * args.dim,
            "weight_bytes": nbytes, "repeat": args.repeat, "seed": args.seed,
            "network": f"nn.SequentialCell of {args.layers} nn.Dense({args.dim}, {args.dim}) with bias, fp32",
            "algorithm": 'gscore.get("rtn")(gscore.PTQConfig()): apply + convert',
        },
        "units": "seconds for times (wall unless *_cpu), MiB for memory; best = fastest of the repetitions",
        "protocol": "per repetition: build a fresh network; then numpy copy, naive RTN and gscore, each right after settle_memory() (see its docstring)",
        "numpy_copy": {**common.summary(times["copy"]), "best_cpu_s": copy_cpu_best, "memory": mem["copy"].as_dict()},
        "naive_numpy_rtn": {**common.summary(times["naive"]), "best_cpu_s": min(times["naive_cpu"]), "memory": mem["naive"].as_dict()},
        "gscore_rtn": {
            "apply": common.summary(times["apply"]),
            "convert": common.summary(times["convert"]),
            "apply_plus_convert": {**common.summary(times["total"]), "best_cpu_s": min(times["total_cpu"])},
            "first_run_s": times["total"][0],
            "memory_of_best_run": runs[best]["memory"],
            "memory_peak_over_baseline_max_mib": max(r["memory"]["peak_over_baseline_mib"] for r in runs),
            "phase_records_of_best_run": runs[best]["phase_records"],
        },
        "ratios": {
            "gscore_apply_plus_convert_over_numpy_copy": ratio,
            "gscore_apply_plus_convert_over_numpy_copy_cpu": min(times["total_cpu"]) / copy_cpu_best,
            "gscore_apply_over_numpy_copy": min(times["apply"]) / copy_best,
            "gscore_convert_over_numpy_copy": min(times["convert"]) / copy_best,
            "naive_rtn_over_numpy_copy": min(times["naive"]) / copy_best,
            "gscore_over_naive_rtn": min(times["total"]) / min(times["naive"]),
            "target_gscore_over_copy": 3.0,
            "meets_target": ratio <= 3.0,
        },
        "correctness": {**structure, **outputs, "float_forward_s": round(float_forward_s, 3)},
    }
    if not args.no_profile:
        print("profiling the steps of apply/convert ...")
        net = build_net(weights)
        result["profile"] = {"steps": profile_steps(weights), "numpy_pieces_s": profile_codes(net_weights(net), args.repeat)}
        del net
    return result


def markdown(res: dict[str, Any]) -> str:
    """The human summary: main table, correctness, profile."""
    g, r, m, w = res["gscore_rtn"], res["ratios"], res["machine"], res["workload"]
    copy, copy_cpu = res["numpy_copy"]["best_s"], res["numpy_copy"]["best_cpu_s"]
    mem = g["memory_of_best_run"]
    load = res["load"]
    out = [
        f"# RTN A16W8 benchmark: {w['network']}\n\n",
        f"Command: `{res['command']}` (git {res['git_revision'][:12]})\n\n",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores, {m['mem_total_gib']} GiB, THP `{m['transparent_hugepage']}`, kernel {m['kernel']}; "
        f"mindspore {res['versions']['mindspore']}, numpy {res['versions']['numpy']}, gscore {res['versions']['gscore']}. "
        f"Load average at start/end: {load['start']['loadavg_1_5_15'][0]:.1f} / {load['end']['loadavg_1_5_15'][0]:.1f} "
        f"(CPU pressure {load['start']['cpu_pressure_some_avg10_pct']:.0f}% / {load['end']['cpu_pressure_some_avg10_pct']:.0f}%: other work shared the cores).\n\n",
        f"{w['parameters'] / 1e6:.0f}M parameters ({w['weight_bytes'] / MIB:.0f} MiB fp32). Best of {w['repeat']} repetitions, "
        "interleaved in one process (each on a fresh network, each contender right after touching and freeing as much "
        "memory as the weights, so the VM's free-page reporting does not decide who pays for first touches); "
        "ratios are to the numpy copy of the same run. Times in seconds.\n\n",
    ]

    def row(name: str, best: float, median: float, cpu: float | None, peak: float | None) -> list[str]:
        return [name, f"{best:.3f}", f"{best / copy:.2f}", f"{median:.3f}", "" if cpu is None else f"{cpu:.3f} ({cpu / copy_cpu:.2f}x)", "" if peak is None else f"{peak:.0f}"]

    n = res["naive_numpy_rtn"]
    rows = [
        row("numpy copy (`w.copy()` per layer, baseline)", copy, res["numpy_copy"]["median_s"], copy_cpu, res["numpy_copy"]["memory"]["peak_over_baseline_mib"]),
        row("naive numpy RTN", n["best_s"], n["median_s"], n["best_cpu_s"], n["memory"]["peak_over_baseline_mib"]),
        row("gscore `apply` (calibrate)", g["apply"]["best_s"], g["apply"]["median_s"], None, None),
        row("gscore `convert` (quantize)", g["convert"]["best_s"], g["convert"]["median_s"], None, None),
        row("**gscore apply + convert**", g["apply_plus_convert"]["best_s"], g["apply_plus_convert"]["median_s"], g["apply_plus_convert"]["best_cpu_s"], mem["peak_over_baseline_mib"]),
    ]
    out.append(common.md_table(["what", "best s", "x numpy copy", "median s", "best CPU s (x copy)", "peak RSS +MiB"], rows))
    verdict = "meets" if r["meets_target"] else "misses"
    out.append(
        f"\ngscore apply+convert / numpy copy = **{r['gscore_apply_plus_convert_over_numpy_copy']:.2f}x** wall ({verdict} the 3x target), "
        f"{r['gscore_apply_plus_convert_over_numpy_copy_cpu']:.2f}x in CPU time; naive RTN / copy = {r['naive_rtn_over_numpy_copy']:.2f}x; "
        f"gscore / naive RTN = {r['gscore_over_naive_rtn']:.2f}x. First gscore run (includes one-time imports): {g['first_run_s']:.3f} s. "
        "Phase records (core timing observer) of the best run: "
        + ", ".join(f"{p['phase']} {p['seconds']:.3f} s" for p in g["phase_records_of_best_run"])
        + f". RSS after convert minus before apply: {mem['rss_after_minus_before_mib']:.0f} MiB: the int8 weights are kept; "
        f"{res['correctness']['float_weights_still_referenced']} of the {w['layers']} float weight Parameters are still referenced after convert "
        "(weak references), but the allocator need not return their memory to the OS. "
        f"Peak RSS exact (VmHWM reset works): {mem['peak_is_exact']}.\n"
    )
    c = res["correctness"]
    out.append(
        f"\nCorrectness: {c['dense_replaced']} Dense layers replaced by QuantLinear with int8 weights; "
        f"{c['codes_differing_from_naive_rtn']} of {c['codes_total']} codes differ from naive numpy RTN (max difference {c['max_code_difference']}). "
        f"Relative L2 error of the int8 network's output vs the float network (float64 numpy reference, batch of random rows): "
        f"{c['rel_l2_error_output']:.4f} after all {len(c['rel_l2_error_by_depth'])} layers "
        f"(by depth: {', '.join(f'{e:.4f}' for e in c['rel_l2_error_by_depth'])}); at most {c['rel_l2_error_single_layer_max']:.4f} for one layer alone. "
        f"The MindSpore int8 forward matches numpy `x @ (q*scale).T + b` to {c['ms_vs_numpy_dequant_max']:.1e}.\n"
        f"\nSide finding: the int8 network's forward (dequantize-then-matmul) took {c['int8_forward_s']:.1f} s for the stack vs "
        f"{c['float_forward_s']:.2f} s in float.\n"
    )
    if "profile" in res:
        prof = res["profile"]
        out.append("\n## Where apply/convert spend their time (one instrumented run, seconds summed over layers)\n\n")
        out.append(common.md_table(["step", "s", "x numpy copy", "what"], [[f"`{row['step']}`", f"{row['seconds']:.3f}", f"{row['seconds'] / copy:.2f}", row["what"]] for row in prof["steps"]["rows"]]))
        out.append("\nWhat a numpy `observe_minmax` + `quantize` would run, operation by operation, and the two native kernels that replace them, over all layers (best of the repetitions):\n\n")
        out.append(common.md_table(["operation", "s", "x numpy copy"], [[k, f"{v:.3f}", f"{v / copy:.2f}"] for k, v in prof["numpy_pieces_s"].items()]))
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    r = res["ratios"]
    print(
        f"gscore apply+convert {res['gscore_rtn']['apply_plus_convert']['best_s']:.3f} s = "
        f"{r['gscore_apply_plus_convert_over_numpy_copy']:.2f}x numpy copy ({res['numpy_copy']['best_s']:.3f} s); "
        f"naive RTN {r['naive_rtn_over_numpy_copy']:.2f}x; target 3x: {'met' if r['meets_target'] else 'missed'}"
    )
    common.write_results(args.name, res, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
