"""SCOP's lead over each baseline, averaged over several runs of ``bench/scop.py``.

Why: one run of ``bench/scop.py`` trains one float network, and on the BN-free CNN the refit in
``convert`` brings every reasonable choice of channels to within a few test images of it. Whether
SCOP's choice beats L1 there then depends on which float network the seed produced as much as on
the method (at rate 0.7 one seed put SCOP 0.9 millinats behind L1, two others 8.5 and 6.1 ahead).
The mean over runs with different ``--seed`` values, with an error bar that counts that spread,
says what the method gives.

Input: result files of ``bench/scop.py`` (``--run FILE[:LABEL]``, FILE a name in ``bench/results``)
with the same networks, rates and test images, normally differing in ``--seed``. Per network,
rate, baseline and stage, from each run's paired lead of SCOP over the baseline on the test
images (accuracy points, cross-entropy nats), reported:

* each run's lead ± its paired standard error over the test images;
* the mean over runs, with
  * ``images SE``: over test images. The files keep each run's lead and its standard error, not
    the per-image differences, so the runs cannot be paired image by image; this is the mean of
    the runs' standard errors, an upper bound (reached if the runs' differences moved together
    image by image; independent runs would give that over sqrt(runs));
  * ``runs SE``: the standard deviation of the runs' leads over ``sqrt(runs)``;
  * ``total SE``: both combined;
* per rate, right after pruning: whether SCOP's mean accuracy is above every baseline's, whether
  its mean cross-entropy is below every baseline's and by more than two total standard errors
  (``bench/scop.py``'s verdicts, over runs), and in how many runs SCOP's accuracy is above each
  baseline's.

    python bench/scop_runs.py --run FILE[:LABEL] --run ... --output NAME
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from _common import RESULTS, load_info, md_table, provenance, standard_error_of_mean, write_results

STAGES = {"after_pruning": "right after pruning", "after_finetune": "fine-tuned"}
MEASURES = {"points": "standard_error", "cross_entropy": "cross_entropy_standard_error"}


def load_run(spec: str) -> dict[str, Any]:
    """``FILE[:LABEL]`` -> the file's networks by name, its command and seed."""
    stem, _, label = spec.partition(":")
    stem = stem.removesuffix(".json")
    report = json.loads((RESULTS / f"{stem}.json").read_text())
    if report.get("benchmark") != "scop":
        raise SystemExit(f"{stem}.json is not a bench/scop.py result")
    return {"file": stem, "label": label or stem, "command": report["command"], "seed": report["workload"]["seed"],
            "data": report["workload"]["data"], "networks": {n["network"]: n for n in report["networks"]}}


def combine(leads: list[dict[str, float]]) -> dict[str, Any]:
    """Per measure (points, cross-entropy): each run's lead and SE, and their mean over runs (module docstring)."""
    out: dict[str, Any] = {}
    for measure, error in MEASURES.items():
        values = np.array([lead[measure] for lead in leads])
        errors = [lead[error] for lead in leads]
        images_se = float(np.mean(errors))
        runs_se = standard_error_of_mean(values)
        out[measure] = {"runs": values.tolist(), "runs_images_se": errors, "mean": float(values.mean()),
                        "images_se": images_se, "runs_se": runs_se, "total_se": float(np.hypot(images_se, runs_se))}
    return out


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every network the runs share, rate by rate: SCOP's lead over each baseline, combined over runs."""
    if len({r["data"] for r in runs}) != 1:
        raise SystemExit("the runs used different data: " + "; ".join(f"{r['file']}: {r['data']}" for r in runs))
    names = [name for name in runs[0]["networks"] if all(name in r["networks"] for r in runs[1:])]
    if not names:
        raise SystemExit("the runs share no network")
    networks = []
    for name in names:
        per_run = [r["networks"][name]["rates"] for r in runs]
        rates = [row["prune_rate"] for row in per_run[0]]
        if any([row["prune_rate"] for row in run_rates] != rates for run_rates in per_run[1:]):
            raise SystemExit(f"{name}: the runs pruned at different rates")
        out_rates = []
        for i, rate in enumerate(rates):
            at_rate = [run_rates[i] for run_rates in per_run]  # this rate's row of every run
            baselines = [k for k in at_rate[0]["methods"] if k != "SCOP" and all(k in row["methods"] for row in at_rate)]
            leads = {b: {stage: combine([row["methods"][b]["scop_lead"][stage] for row in at_rate]) for stage in STAGES} for b in baselines}
            ahead = {b: sum(row["methods"]["SCOP"]["after_pruning"]["mnist"] > row["methods"][b]["after_pruning"]["mnist"] for row in at_rate) for b in baselines}
            surer = all(c["after_pruning"]["cross_entropy"]["mean"] < -2 * c["after_pruning"]["cross_entropy"]["total_se"] for c in leads.values())
            lower = all(c["after_pruning"]["cross_entropy"]["mean"] < 0 for c in leads.values())
            more_accurate = all(c["after_pruning"]["points"]["mean"] > 0 for c in leads.values())
            out_rates.append({"prune_rate": rate, "leads": leads, "runs_scop_more_accurate_after_pruning": ahead,
                              "scop_more_accurate_than_every_baseline": more_accurate,
                              "scop_lower_cross_entropy_than_every_baseline": lower, "by_two_total_se": surer})
        networks.append({"network": name, "rates": out_rates})
    return networks


def _cell(c: dict[str, Any], scale: float, digits: int) -> str:
    return f"{scale * c['mean']:+.{digits}f} ± {scale * c['total_se']:.{digits}f} ({scale * c['images_se']:.{digits}f} / {scale * c['runs_se']:.{digits}f})"


def markdown(res: dict[str, Any]) -> str:
    runs = res["runs"]
    out = [
        "# SCOP's lead over each baseline, over several runs of bench/scop.py\n\n",
        f"Command: `{res['command']}` (git {res['git'][:12]}).\n\n",
        "Runs: " + "; ".join(f"{r['label']} (seed {r['seed']}): `{r['command']}`" for r in runs) + ".\n\n",
        "Each cell: the mean over runs of SCOP's paired lead over the baseline on the same test images ± its total standard error, and in "
        "brackets that error's two parts: over test images (the mean of the runs' own standard errors, an upper bound: the files keep no "
        "per-image differences) / from the spread between runs (their standard deviation over sqrt(runs)). Cross-entropy in millinats per "
        "image (negative: SCOP's network puts more probability on the right labels); accuracy in points.\n\n",
    ]
    for net in res["networks"]:
        out.append(f"## {net['network']}\n\n")
        baselines = list(net["rates"][0]["leads"])
        for measure, unit, scale, digits in (("cross_entropy", "cross-entropy, millinats", 1000.0, 1), ("points", "accuracy, points", 1.0, 2)):
            out.append(f"SCOP − baseline, {unit}:\n\n")
            rows = [[f"{r['prune_rate']}", label] + [_cell(r["leads"][b][stage][measure], scale, digits) for b in baselines]
                    for r in net["rates"] for stage, label in STAGES.items()]
            out.append(md_table(["rate", "stage"] + [f"SCOP − {b}" for b in baselines], rows))
            out.append("\n")
        out.append("Per run, cross-entropy right after pruning, millinats ± the run's paired SE:\n\n")
        rows = [[f"{r['prune_rate']}", b, " / ".join(f"{1000 * v:+.1f} ± {1000 * e:.1f}" for v, e in zip(c["runs"], c["runs_images_se"]))]
                for r in net["rates"] for b, lead in r["leads"].items() for c in [lead["after_pruning"]["cross_entropy"]]]
        out.append(md_table(["rate", "baseline", " / ".join(r["label"] for r in runs)], rows))
        out.append("\n")
        verdicts = [
            f"rate {r['prune_rate']}: right after pruning, SCOP's mean accuracy "
            f"{'above' if r['scop_more_accurate_than_every_baseline'] else '**not** above'} every baseline's and its mean cross-entropy "
            f"{'below' if r['scop_lower_cross_entropy_than_every_baseline'] else '**not** below'} every baseline's, "
            f"{'by' if r['by_two_total_se'] else '**not** by'} over two total standard errors; more accurate than "
            + ", ".join(f"{b} in {n} of {len(runs)} runs" for b, n in r["runs_scop_more_accurate_after_pruning"].items())
            for r in net["rates"]
        ]
        out.append("Verdicts: " + "; ".join(verdicts) + ".\n\n")
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="FILE[:LABEL], a bench/scop.py result file")
    parser.add_argument("--output", required=True, help="stem of the result files in bench/results")
    args = parser.parse_args()
    load_start = load_info()
    runs = [load_run(spec) for spec in args.run]
    if len(runs) < 2:
        raise SystemExit("give at least two --run files: one run has no spread between runs")
    res = {**provenance(load_start), "runs": [{k: r[k] for k in ("file", "label", "command", "seed")} for r in runs], "networks": summarise(runs)}
    write_results(args.output, res, markdown)


if __name__ == "__main__":
    main()
