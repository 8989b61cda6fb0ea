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

Each is repeated ``--repeat`` times; the best time counts. Afterwards the converted network is
checked (every Dense replaced, int8 weights equal to naive RTN codes, outputs close to the
float network's) and, unless ``--no-profile``, one more instrumented run splits apply/convert
into their steps. Results: ``bench/results/rtn.json`` and ``bench/results/rtn.md``.

Run from the repository root: ``python bench/rtn.py`` (defaults: 16 layers of 4096x4096).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
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


def layer_outputs(net: Any, x: np.ndarray) -> list[np.ndarray]:
    """Output after every layer of the stack for input ``x`` (float32 numpy arrays)."""
    from mindspore import Tensor

    outs, y = [], Tensor(x)
    for cell in net.cells():
        y = cell(y)
        outs.append(y.asnumpy().copy())
    return outs


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
    """``apply`` + ``convert`` with the RTN plugin; wall seconds of each, peak RSS growth, phase records."""
    import gscore

    algo = gscore.get("rtn")(gscore.PTQConfig())
    with common.PeakRss() as mem:
        t_apply, _ = common.timed(lambda: algo.apply(net))
        t_convert, _ = common.timed(lambda: algo.convert(net))
    return {
        "apply_s": t_apply,
        "convert_s": t_convert,
        "total_s": t_apply + t_convert,
        "memory": mem.as_dict(),
        "phase_records": [
            {"phase": r.phase, "seconds": round(r.seconds, 4), "peak_rss_mib": round(r.peak_rss_mib, 1)} for r in algo.phase_records
        ],
        "layers": list(algo.layers),
    }


# --------------------------------------------------------------------------- correctness


def check_network(net: Any, layers: int, dim: int, naive: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, ref: list[np.ndarray]) -> dict[str, Any]:
    """Facts about the converted network; raises AssertionError when one is wrong.

    * every ``nn.Dense`` became a ``QuantLinear`` with an int8 ``[dim, dim]`` weight;
    * its codes equal the naive numpy RTN codes (a rare difference of 1 is allowed: gscore
      computes the scale in float64 then rounds it to float32, the naive pass divides in float32);
    * the int8 network's outputs stay close to the float network's: relative L2 error after
      each depth of the stack (errors add up through it) and of each layer alone on the float input.
    """
    from mindspore import Tensor, nn

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

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    stack = [rel(a, b) for a, b in zip(layer_outputs(net, x), ref)]
    inputs = [x, *ref[:-1]]
    single = [rel(cell(Tensor(i)).asnumpy(), r) for cell, i, r in zip(cells, inputs, ref)]
    assert max(single) < 0.02 and stack[-1] < 0.1, (single, stack)
    return {
        "dense_replaced": layers,
        "weight_dtype": "int8",
        "codes_total": layers * dim * dim,
        "codes_differing_from_naive_rtn": diff_codes,
        "max_code_difference": max_code_diff,
        "rel_l2_error_by_depth": [round(e, 6) for e in stack],
        "rel_l2_error_single_layer_max": round(max(single), 6),
        "rel_l2_error_output": round(stack[-1], 6),
    }


# --------------------------------------------------------------------------- profile


class StepTimer:
    """Wall time spent inside selected gscore functions during apply/convert, by phase.

    It wraps module attributes (functions, or ``__init__`` of classes so that ``isinstance``
    keeps working) for the duration of a ``with`` block; times are inclusive, in seconds.
    """

    def __init__(self) -> None:
        self.phase = "-"
        self.totals: dict[str, list[float]] = {}

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

    @contextlib.contextmanager
    def installed(self) -> Iterator["StepTimer"]:
        import gscore.nn.quant_linear as ql
        import gscore.nn.weight_only as wo
        import gscore.quant.core as core
        import gscore.quant.params as params

        targets = [
            (wo, "find_linears"), (wo, "linear_view"), (wo, "_stored_params"), (wo, "quant_params"),
            (params, "observe_minmax"), (params, "compute_params"), (wo, "_quantizer"), (wo, "replace_cell"),
            (wo, "view_of"), (wo, "quantize"), (core, "require_finite"), (core, "_codes"), (ql, "Parameter"),
            (wo.SimQuantLinear, "__init__"), (wo.QuantLinear, "__init__"),
        ]
        saved = []
        for owner, attr in targets:
            original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            label = f"{owner.__name__}.{attr}" if isinstance(owner, type) else attr
            saved.append((owner, attr, original))
            setattr(owner, attr, self._wrap(label, original))
        try:
            yield self
        finally:
            for owner, attr, original in reversed(saved):
                setattr(owner, attr, original)

    def seconds(self, phase: str, label: str) -> float:
        return self.totals.get(f"{phase}/{label}", [0.0, 0])[0]


def profile_steps(weights: list[np.ndarray]) -> dict[str, Any]:
    """One instrumented apply+convert on a fresh network: seconds per step (summed over layers).

    The rows form a tree (indentation in the name); "other" rows are the parent minus its
    listed children (Python glue, small arrays, iterating the cells).
    """
    import gscore

    net = build_net(weights)
    algo = gscore.get("rtn")(gscore.PTQConfig())
    timer = StepTimer()
    with timer.installed():
        timer.phase = "calibrate"
        t_apply, _ = common.timed(lambda: algo.apply(net))
        timer.phase = "quantize"
        t_convert, _ = common.timed(lambda: algo.convert(net))
    s = timer.seconds
    cal, qua = "calibrate", "quantize"
    rows = [
        ("apply = calibrate phase", t_apply, "whole phase"),
        ("  find_linears", s(cal, "find_linears"), "walk the cell tree"),
        ("  _stored_params", s(cal, "_stored_params"), "quant_params + scale rounded to the store dtype"),
        ("    quant_params > observe_minmax", s(cal, "observe_minmax"), "w.min(1) and w.max(1): 2 full reads of the weights"),
        ("    quant_params > compute_params", s(cal, "compute_params"), "on [out,1] arrays"),
        ("  _quantizer (WeightQuantizer)", s(cal, "_quantizer"), "2 small Parameters"),
        ("  SimQuantLinear.__init__", s(cal, "SimQuantLinear.__init__"), "cell construction"),
        ("  replace_cell", s(cal, "replace_cell"), "setattr + renaming parameters"),
        ("  other", t_apply - s(cal, "find_linears") - s(cal, "_stored_params") - s(cal, "_quantizer") - s(cal, "SimQuantLinear.__init__") - s(cal, "replace_cell") - s(cal, "linear_view"), "plugin hooks, linear_view, loop"),
        ("convert = quantize phase", t_convert, "whole phase"),
        ("  quantize", s(qua, "quantize"), "gscore.quant.quantize"),
        ("    require_finite", s(qua, "require_finite"), "w.min() and w.max(): 2 full reads"),
        ("    _codes", s(qua, "_codes"), "divide into a new fp32 [out,in] buffer, rint, clip (in place)"),
        ("    astype(int8) + rest", s(qua, "quantize") - s(qua, "require_finite") - s(qua, "_codes"), "new int8 array"),
        ("  QuantLinear.__init__", s(qua, "QuantLinear.__init__"), "cell construction"),
        ("    Parameter(...)", s(qua, "Parameter"), "Parameter(Tensor.from_numpy(q)) copies q; + 2 small scale Parameters"),
        ("  view_of", s(qua, "view_of"), ""),
        ("  replace_cell", s(qua, "replace_cell"), "setattr + renaming parameters"),
        ("  other", t_convert - s(qua, "quantize") - s(qua, "QuantLinear.__init__") - s(qua, "view_of") - s(qua, "replace_cell"), "plugin hooks, iter_cells, scale asnumpy, QuantParams"),
    ]
    del net
    gc.collect()
    return {"rows": [{"step": n, "seconds": round(t, 4), "what": w} for n, t, w in rows], "raw": {k: [round(v[0], 4), v[1]] for k, v in timer.totals.items()}}


def profile_codes(weights: list[np.ndarray], repeat: int) -> dict[str, float]:
    """The numpy operations inside ``quantize`` one by one, best of ``repeat``, seconds over all layers.

    Uses gscore's own parameters for each weight; "divide (new buffer)" is what ``_codes`` does
    (a fresh 64 MiB buffer per 4096x4096 layer, so its pages are faulted in each time),
    "divide (reused buffer)" shows what that allocation costs.
    """
    from mindspore import Parameter, Tensor

    from gscore.quant import QuantScheme, quant_params

    params = [quant_params(w, QuantScheme()) for w in weights]
    buf = np.empty_like(weights[0])
    q = np.zeros(weights[0].shape, np.int8)

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
        "Parameter(Tensor.from_numpy(q)) (copies q)": each(lambda w, p: Parameter(Tensor.from_numpy(q), name="w", requires_grad=False)),
        "q.copy() (numpy, for comparison)": each(lambda w, p: q.copy()),
    }
    out = {}
    for name, fn in pieces.items():
        out[name] = round(min(common.timed(fn)[0] for _ in range(repeat)), 4)
        gc.collect()
    return out


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=16, help="number of Dense layers in the stack")
    p.add_argument("--dim", type=int, default=4096, help="in = out features of every layer")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement; the best counts")
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

    # Untimed: the first touch of fresh memory in this VM costs far more than later reuse; one
    # throw-away copy keeps that out of every timed row.
    warmup_s, _ = common.timed(lambda: numpy_copy(weights))
    gc.collect()

    copy_t, naive_t, apply_t, convert_t, total_t, runs = [], [], [], [], [], []
    copy_mem = naive_mem = None
    checks = None
    for r in range(args.repeat):
        net = build_net(weights)
        ws = net_weights(net)  # the very bytes gscore will read
        ref = layer_outputs(net, x)
        gc.collect()
        with common.PeakRss() as copy_mem:
            t, copies = common.timed(lambda: numpy_copy(ws))
        copy_t.append(t)
        del copies
        gc.collect()
        with common.PeakRss() as naive_mem:
            t, naive = common.timed(lambda: naive_rtn(ws))
        naive_t.append(t)
        del ws
        gc.collect()
        run_ = gscore_rtn(net)
        runs.append(run_)
        apply_t.append(run_["apply_s"])
        convert_t.append(run_["convert_s"])
        total_t.append(run_["total_s"])
        checks = check_network(net, args.layers, args.dim, naive, x, ref)
        print(
            f"rep {r}: copy {copy_t[-1]:.3f} s, naive RTN {naive_t[-1]:.3f} s, gscore apply {apply_t[-1]:.3f} s + "
            f"convert {convert_t[-1]:.3f} s = {total_t[-1]:.3f} s, peak +{run_['memory']['peak_over_baseline_mib']:.0f} MiB, "
            f"output rel. L2 err {checks['rel_l2_error_output']:.4f}"
        )
        del net, naive, ref
        gc.collect()

    best = min(range(args.repeat), key=lambda i: total_t[i])
    copy_best = min(copy_t)
    result: dict[str, Any] = {
        "benchmark": "rtn",
        "command": common.command_line(),
        "git_revision": common.git_revision(),
        "machine": common.machine_info(),
        "versions": {"mindspore": ms.__version__, "numpy": np.__version__, "gscore": gscore.__version__},
        "workload": {
            "layers": args.layers, "dim": args.dim, "parameters": args.layers * args.dim * args.dim,
            "weight_bytes": nbytes, "repeat": args.repeat, "seed": args.seed,
            "network": f"nn.SequentialCell of {args.layers} nn.Dense({args.dim}, {args.dim}) with bias, fp32",
            "algorithm": 'gscore.get("rtn")(gscore.PTQConfig()): apply + convert',
        },
        "units": "seconds for times, MiB for memory; best = fastest of the repetitions",
        "warmup_copy_s": round(warmup_s, 4),
        "numpy_copy": {**common.summary(copy_t), "memory": copy_mem.as_dict()},
        "naive_numpy_rtn": {**common.summary(naive_t), "memory": naive_mem.as_dict()},
        "gscore_rtn": {
            "apply": common.summary(apply_t),
            "convert": common.summary(convert_t),
            "apply_plus_convert": common.summary(total_t),
            "first_run_s": total_t[0],
            "memory_of_best_run": runs[best]["memory"],
            "memory_peak_over_baseline_max_mib": max(r["memory"]["peak_over_baseline_mib"] for r in runs),
            "phase_records_of_best_run": runs[best]["phase_records"],
        },
        "ratios": {
            "gscore_apply_plus_convert_over_numpy_copy": min(total_t) / copy_best,
            "naive_rtn_over_numpy_copy": min(naive_t) / copy_best,
            "gscore_over_naive_rtn": min(total_t) / min(naive_t),
            "target_gscore_over_copy": 3.0,
            "meets_target": min(total_t) / copy_best <= 3.0,
        },
        "correctness": checks,
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
    copy = res["numpy_copy"]["best_s"]
    mem = g["memory_of_best_run"]
    out = [
        f"# RTN A16W8 benchmark: {w['network']}\n",
        f"Command: `{res['command']}` (git {res['git_revision'][:12]})\n",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores, {m['mem_total_gib']} GiB, THP {m['transparent_hugepage']}. "
        f"mindspore {res['versions']['mindspore']}, numpy {res['versions']['numpy']}, gscore {res['versions']['gscore']}.\n",
        f"{w['parameters'] / 1e6:.0f}M parameters ({w['weight_bytes'] / MIB:.0f} MiB fp32). Best of {w['repeat']} repetitions, "
        "interleaved in one process; ratios are to the numpy copy of the same run.\n",
    ]
    rows = [
        ["numpy copy (`w.copy()` per layer, baseline)", f"{copy:.3f}", "1.00", f"{res['numpy_copy']['median_s']:.3f}", f"{res['numpy_copy']['memory']['peak_over_baseline_mib']:.0f}"],
        ["naive numpy RTN", f"{res['naive_numpy_rtn']['best_s']:.3f}", f"{res['naive_numpy_rtn']['best_s'] / copy:.2f}", f"{res['naive_numpy_rtn']['median_s']:.3f}", f"{res['naive_numpy_rtn']['memory']['peak_over_baseline_mib']:.0f}"],
        ["gscore `apply` (calibrate)", f"{g['apply']['best_s']:.3f}", f"{g['apply']['best_s'] / copy:.2f}", f"{g['apply']['median_s']:.3f}", ""],
        ["gscore `convert` (quantize)", f"{g['convert']['best_s']:.3f}", f"{g['convert']['best_s'] / copy:.2f}", f"{g['convert']['median_s']:.3f}", ""],
        ["**gscore apply + convert**", f"**{g['apply_plus_convert']['best_s']:.3f}**", f"**{r['gscore_apply_plus_convert_over_numpy_copy']:.2f}**", f"{g['apply_plus_convert']['median_s']:.3f}", f"{mem['peak_over_baseline_mib']:.0f}"],
    ]
    out.append(common.md_table(["what", "best s", "x numpy copy", "median s", "peak RSS +MiB"], rows))
    verdict = "meets" if r["meets_target"] else "misses"
    out.append(
        f"\ngscore apply+convert / numpy copy = **{r['gscore_apply_plus_convert_over_numpy_copy']:.2f}x** ({verdict} the 3x target); "
        f"naive RTN / copy = {r['naive_rtn_over_numpy_copy']:.2f}x; gscore / naive RTN = {r['gscore_over_naive_rtn']:.2f}x. "
        f"First (cold) gscore run: {g['first_run_s']:.3f} s. Phase records (core timing observer) of the best run: "
        + ", ".join(f"{p['phase']} {p['seconds']:.3f} s" for p in g["phase_records_of_best_run"])
        + f". RSS after convert minus before apply: {mem['rss_after_minus_before_mib']:.0f} MiB "
        f"(the float weights are released, the int8 ones kept). Peak RSS exact (VmHWM reset): {mem['peak_is_exact']}.\n"
    )
    c = res["correctness"]
    out.append(
        f"\nCorrectness: {c['dense_replaced']} Dense layers replaced by QuantLinear with int8 weights; "
        f"{c['codes_differing_from_naive_rtn']} of {c['codes_total']} codes differ from naive numpy RTN (max difference {c['max_code_difference']}); "
        f"relative L2 error of the int8 network's output vs the float network: {c['rel_l2_error_output']:.4f} after all "
        f"{len(c['rel_l2_error_by_depth'])} layers, at most {c['rel_l2_error_single_layer_max']:.4f} for one layer alone.\n"
    )
    if "profile" in res:
        prof = res["profile"]
        out.append("\n## Where apply/convert spend their time (one instrumented run, seconds summed over layers)\n\n")
        out.append(common.md_table(["step", "s", "x numpy copy", "what"], [[f"`{row['step']}`", f"{row['seconds']:.3f}", f"{row['seconds'] / copy:.2f}", row["what"]] for row in prof["steps"]["rows"]]))
        out.append("\nThe numpy operations of `quantize`, one by one over all layers (best of the repetitions):\n\n")
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
    print("wrote", common.write_json(args.name, res), "and", common.write_text(f"{args.name}.md", markdown(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
