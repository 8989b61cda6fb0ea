"""One pass or two per block: PTQ calibration time with ``true_sequential`` on and off, interleaved.

``bench/ptq.py`` measures each preset once, in its own process, so two rows of it differ by
the machine's drift as much as by the code. This script measures the two calibration modes of
one preset in one process, round after round: each round times the float forwards over the
calibration windows (one window at a time, as ``bench/ptq.py`` does), then ``apply`` on a
fresh float network with one pass per block and with two, in alternating order. It reports
each mode's time as a ratio to that round's float forwards, and the per-round paired ratio of
one pass to two; medians over rounds.

Usage (from the repository root): ``python bench/ptq_calibration_passes.py --preset a16w4-g128-gptq
[--rounds 3] [--calib 8] [--output STEM]``; writes ``bench/results/STEM.json`` and ``.md``
(default stem ``ptq_calibration_passes_<preset>``).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from ptq import calibration_parser, calibration_setup, float_forwards  # noqa: E402

MODES = {"one pass": True, "two passes": False}
"""Label of each mode and its ``algo_args['true_sequential']``."""


def main() -> None:
    parser = calibration_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import gscore
    from gscore import PTQConfig
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore_ptq.presets import preset

    load_start = common.load_info()
    weights, config, tokenizer, windows = calibration_setup(args.calib, args.tokens)
    rounds = []
    for index in range(args.rounds):
        forwards = float_forwards(build_llama(LlamaConfig(**config), weights), windows)
        order = list(MODES) if index % 2 == 0 else list(reversed(MODES))
        seconds = {}
        for mode in order:
            net = build_llama(LlamaConfig(**config), weights)
            algo = gscore.get("ptq")(PTQConfig(**preset(args.preset, true_sequential=MODES[mode], progress=False)))
            start = time.perf_counter()
            algo.apply(net, LlamaHelper(tokenizer), datasets=windows)
            seconds[mode] = time.perf_counter() - start
        rounds.append({"float_forwards_s": forwards, "order": order, "calibration_s": seconds})
        print(f"round {index + 1}: forwards {forwards:.1f} s, " + ", ".join(f"{m} {s:.1f} s" for m, s in seconds.items()), flush=True)
    res = {
        **common.provenance(load_start),
        "preset": args.preset,
        "config": preset(args.preset),
        "windows": {"calib": args.calib, "tokens": args.tokens},
        "rounds": rounds,
    }
    common.write_results(args.output or f"ptq_calibration_passes_{args.preset}", res, markdown)


def markdown(res: dict) -> str:
    rounds = res["rounds"]
    rows = []
    for index, r in enumerate(rounds, 1):
        forwards, seconds = r["float_forwards_s"], r["calibration_s"]
        rows.append([index, f"{forwards:.1f}", *(f"{seconds[m]:.1f} ({seconds[m] / forwards:.2f}x)" for m in MODES), f"{seconds['one pass'] / seconds['two passes']:.3f}"])
    medians = {m: statistics.median(r["calibration_s"][m] / r["float_forwards_s"] for r in rounds) for m in MODES}
    paired = statistics.median(r["calibration_s"]["one pass"] / r["calibration_s"]["two passes"] for r in rounds)
    return "\n".join([
        f"# PTQ calibration of {res['preset']} in one pass or two per block (SmolLM2-135M, {res['windows']['calib']} x {res['windows']['tokens']}-token windows)",
        "",
        f"Command: `{res['command']}` (git {res['git'][:12]}); {res['machine']['cpu_model']}, {res['machine']['usable_cores']} cores; "
        f"load average {res['load_start']['loadavg_1_5_15'][0]} at start, {res['load_end']['loadavg_1_5_15'][0]} at end.",
        "",
        "Each round: the float forwards over the calibration windows, then `apply` on a fresh float network in both modes "
        "(alternating which goes first). Seconds, and the ratio to that round's float forwards.",
        "",
        f"Medians over {len(rounds)} rounds: one pass **{medians['one pass']:.2f}x** the float forwards, two passes "
        f"{medians['two passes']:.2f}x; one pass / two passes, paired per round: **{paired:.3f}**.",
        "",
        "",
    ]) + common.md_table(["round", "float forwards s", "one pass s", "two passes s", "one / two"], rows)


if __name__ == "__main__":
    main()
