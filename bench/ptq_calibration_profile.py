"""Where PTQ calibration spends its time: one preset's ``apply`` on SmolLM2-135M under cProfile.

``bench/ptq.py`` gives the calibration time as a ratio to the float forwards over the same
windows; this script says what that time is made of. It measures the float forwards over the
calibration windows, then runs ``apply`` once under :mod:`cProfile` and reports the cumulative
seconds of the functions that make up layer-by-layer calibration (the two passes over every
block, the statistics, GPTQ's parts, the AWQ and clipping searches). The parts overlap (a pass
contains its observers; GPTQ contains its Cholesky factor): each row says what it contains.
cProfile adds a few percent to the total.

Usage (from the repository root): ``python bench/ptq_calibration_profile.py --preset a16w4-g128-gptq [--calib 8]
[--output STEM]``; writes ``bench/results/STEM.json`` and ``.md`` (default stem
``ptq_calibration_profile_<preset>``).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from ptq import calibration_parser, calibration_setup, float_forwards  # noqa: E402

PARTS: list[tuple[str, str, str]] = [
    # (label, 'file:function' as cProfile names it, what it contains)
    ("all of apply", "gscore/algorithm.py:apply", "everything below"),
    ("block passes", "gscore/models/llama_helper.py:run_block", "every pass over a block: the one pass (which then holds the statistics and the quantization too), or the float pass with observers and the quantized pass"),
    ("one pass per block", "gscore_ptq/block.py:_calibrate_in_one_pass", "true-sequential: the block's pass with each group of layers observed and quantized as the forward reaches it"),
    ("float pass with observers", "gscore_ptq/block.py:_observe", "two passes only: the float block, the observers' statistics (min/max, XᵀX, mean magnitude, sample rows)"),
    ("XᵀX accumulation", "gscore/quant/stats.py:add", "HessianAccumulator and AbsMeanAccumulator additions"),
    ("AWQ scale search", "gscore_ptq/block.py:_awq_scales", "20 strengths x the layers of each scaled group, on 512 sample rows"),
    ("clipping search", "gscore/quant/awq.py:search_weight_clip", "every clip ratio of every layer"),
    ("GPTQ", "gscore/quant/gptq.py:gptq_quantize", "one call per group of layers sharing a Hessian"),
    ("GPTQ: Cholesky factor of H⁻¹", "gscore/quant/gptq.py:_upper_cholesky_of_inverse", "float64 Cholesky and triangular inverse"),
    ("GPTQ: column sweep", "gscore/quant/gptq.py:_quantize_columns", "rounding with error feedback, lazy block updates (float64)"),
    ("GPTQ: RTN's row errors", "gscore/quant/gptq.py:_row_errors", "(w - ŵ) H (w - ŵ)ᵀ of RTN (and of GPTQ after a scale refit), float64, for the fallback"),
    ("GPTQ: GPTQ's row errors", "gscore/quant/gptq.py:_row_errors_from_feedback", "from the errors the sweep fed back, minus the damping's share"),
]


def cumulative(stats: pstats.Stats, where: str) -> float:
    """Cumulative seconds of the function(s) named ``file_suffix:function`` in ``stats``."""
    path, function = where.rsplit(":", 1)
    return sum(entry[3] for (file, _, name), entry in stats.stats.items() if name == function and file.endswith(path))


def main() -> None:
    parser = calibration_parser(__doc__.splitlines()[0])
    args = parser.parse_args()

    import gscore
    from gscore import PTQConfig
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore_ptq.presets import preset

    load_start = common.load_info()
    weights, config, tokenizer, windows = calibration_setup(args.calib, args.tokens)
    net = build_llama(LlamaConfig(**config), weights)
    forwards = float_forwards(net, windows)
    algo = gscore.get("ptq")(PTQConfig(**preset(args.preset)))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(algo.apply, net, LlamaHelper(tokenizer), datasets=windows)
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profile)
    res = {
        **common.provenance(load_start),
        "preset": args.preset,
        "config": preset(args.preset),
        "windows": {"calib": args.calib, "tokens": args.tokens},
        "float_forwards_s": forwards,
        "apply_s": seconds,
        "parts": [{"part": label, "function": where, "contains": contains, "seconds": cumulative(stats, where)} for label, where, contains in PARTS],
    }
    common.write_results(args.output or f"ptq_calibration_profile_{args.preset}", res, markdown)


def markdown(res: dict) -> str:
    forwards = res["float_forwards_s"]
    lines = [
        f"# Where `apply` of {res['preset']} spends its time (SmolLM2-135M, {res['windows']['calib']} x {res['windows']['tokens']}-token calibration windows)",
        "",
        f"Command: `{res['command']}` (git {res['git'][:12]}); {res['machine']['cpu_model']}, {res['machine']['usable_cores']} cores; "
        f"load average {res['load_start']['loadavg_1_5_15'][0]} at start, {res['load_end']['loadavg_1_5_15'][0]} at end.",
        "",
        f"Float forwards over the same windows (one at a time, before `apply`): {forwards:.1f} s. `apply` under cProfile: "
        f"{res['apply_s']:.1f} s ({res['apply_s'] / forwards:.2f}x the float forwards). Cumulative seconds per part; parts overlap as the last column says.",
        "",
        "",
    ]
    rows = [[p["part"], f"{p['seconds']:.1f}", f"{p['seconds'] / forwards:.2f}x", f"`{p['function']}`", p["contains"]] for p in res["parts"] if p["seconds"] > 0]
    return "\n".join(lines) + common.md_table(["part", "s", "x float forwards", "function", "contains"], rows)


if __name__ == "__main__":
    main()
