"""One PTQ configuration over several runs: its perplexity change as a mean over runs.

Why: a 4-bit GPTQ preset's perplexity moves by about a point between runs that differ only in
its rotation seed, or in the last bits of anything upstream (act-order rounding amplifies them),
while the paired standard error of one run (over evaluation windows) is smaller than that. One run
therefore cannot say whether a goal is met; the mean over runs, with a standard error that also
counts the spread between runs, can.

Input: rows of ``bench/ptq.py`` result files measured on the same evaluation windows. Each
``--run FILE:ROW[:LABEL]`` is one run, paired against its own file's FP32 row; FILE is a name in
``bench/results`` (with or without ``.json``). The FP32 rows must agree to 1e-6 relative, window
by window (the same windows; another CPU's float kernels move the last digits), which is checked.

Reported, all against FP32 on the same windows:

* per run: the perplexity change ± its paired standard error over windows (as ``bench/ptq.py``);
* the mean over runs: per-window NLL differences (each against its own FP32 row) averaged over
  runs, then as a single run, with
  * ``windows SE``: over windows, of those averages (which windows were drawn);
  * ``runs SE``: the standard deviation of the runs' changes over ``sqrt(runs)`` (which seed or
    perturbation a run got);
  * ``total SE``: both combined, ``sqrt(windows SE^2 + runs SE^2)``;
* with ``--goal G`` (percent): how many runs are at or below G, and whether the mean is, and the
  mean plus two total standard errors.

    python bench/ptq_runs.py --run FILE:ROW[:LABEL] --run ... [--goal 8] --output NAME
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from _common import RESULTS, load_info, md_table, provenance, standard_error_of_mean, write_results
from gscore.eval.perplexity import paired_delta


def load_run(spec: str) -> dict[str, Any]:
    """``FILE:ROW[:LABEL]`` (the label may hold colons) -> the row's per-window NLLs and its file's FP32 NLLs."""
    parts = spec.split(":", 2)
    if len(parts) not in (2, 3):
        raise SystemExit(f"--run takes FILE:ROW or FILE:ROW:LABEL, got {spec!r}")
    stem = parts[0].removesuffix(".json")
    report = json.loads((RESULTS / f"{stem}.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    if parts[1] not in rows or "fp32" not in rows:
        raise SystemExit(f"{stem}.json has rows {sorted(rows)}; --run {spec!r} needs its row and fp32")
    return {"file": stem, "row": parts[1], "label": parts[2] if len(parts) == 3 else f"{stem}:{parts[1]}",
            "command": report["command"], "nll": rows[parts[1]]["nll"], "fp32_nll": rows["fp32"]["nll"]}


def summarise(runs: list[dict[str, Any]], goal: float | None) -> dict[str, Any]:
    """The per-run changes and their mean over runs (see the module docstring)."""
    reference = np.asarray(runs[0]["fp32_nll"], np.float64)
    for run in runs[1:]:
        if not np.allclose(np.asarray(run["fp32_nll"], np.float64), reference, rtol=1e-6, atol=0.0):
            raise SystemExit(f"{run['file']}.json's FP32 NLLs differ from {runs[0]['file']}.json's: not the same windows")
    differences = [np.asarray(r["nll"], np.float64) - np.asarray(r["fp32_nll"], np.float64) for r in runs]
    per_run = [paired_delta(d, np.zeros_like(d)) for d in differences]
    mean = paired_delta(np.mean(differences, axis=0), np.zeros_like(reference))
    percents = np.array([d.percent for d in per_run])
    runs_se = standard_error_of_mean(percents)
    total_se = float(np.hypot(mean.stderr, runs_se))
    out = {
        "runs": [{"label": r["label"], "file": r["file"], "row": r["row"], "command": r["command"], "percent": d.percent, "windows_se": d.stderr}
                 for r, d in zip(runs, per_run)],
        "mean": {"percent": mean.percent, "windows_se": mean.stderr, "runs_se": runs_se, "total_se": total_se,
                 "runs_spread": [float(percents.min()), float(percents.max())]},
    }
    if goal is not None:
        out["goal"] = {"percent": goal, "runs_at_or_below": int((percents <= goal).sum()), "mean_at_or_below": bool(mean.percent <= goal),
                       "mean_plus_two_se_at_or_below": bool(mean.percent + 2 * total_se <= goal)}
    return out


def _side(below: bool) -> str:
    return "at or below" if below else "**above**"


def markdown(res: dict[str, Any]) -> str:
    mean = res["mean"]
    lines = [
        "# One PTQ configuration over several runs",
        "",
        f"Command: `{res['command']}` (git {res['git'][:12]}).",
        "",
        "Perplexity change against FP32 on the same windows. Per run: ± its paired standard error over windows. Mean: per-window "
        "NLL differences averaged over the runs; `windows SE` over windows, `runs SE` the runs' standard deviation over sqrt(runs), "
        "`total SE` both combined.",
        "",
        md_table(["run", "from", "Δ vs FP32"], [[r["label"], f"`{r['file']}.json` row `{r['row']}`", f"{r['percent']:+.2f} % ± {r['windows_se']:.2f}"] for r in res["runs"]]),
        md_table(["mean over runs", "windows SE", "runs SE", "total SE", "runs from / to"],
                 [[f"{mean['percent']:+.2f} %", f"{mean['windows_se']:.2f}", f"{mean['runs_se']:.2f}", f"{mean['total_se']:.2f}",
                   f"{mean['runs_spread'][0]:+.2f} % / {mean['runs_spread'][1]:+.2f} %"]]),
    ]
    if "goal" in res:
        g = res["goal"]
        lines.append(f"Goal ≤ {g['percent']:g} %: {g['runs_at_or_below']} of {len(res['runs'])} runs at or below it; the mean "
                     f"{_side(g['mean_at_or_below'])} it; the mean + 2 total SE {_side(g['mean_plus_two_se_at_or_below'])} it.")
    lines.append("")
    lines.append("Each run's own command:")
    lines.append("")
    lines += [f"- {r['label']}: `{r['command']}`" for r in res["runs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="FILE:ROW[:LABEL], a row of a bench/ptq.py result file")
    parser.add_argument("--goal", type=float, default=None, help="a perplexity-change goal in percent to check the runs against")
    parser.add_argument("--output", required=True, help="stem of the result files in bench/results")
    args = parser.parse_args()
    load_start = load_info()
    res = {**provenance(load_start), **summarise([load_run(spec) for spec in args.run], args.goal)}
    write_results(args.output, res, markdown)


if __name__ == "__main__":
    main()
