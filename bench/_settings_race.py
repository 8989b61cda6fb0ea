"""Race settings of an environment variable that a process reads once, each in fresh child processes.

MindSpore (and the libraries it loads) read some variables once per process, so comparing two
values means running each workload in a new child process per value. Values alternate ABBA over
rounds, so a drift in the machine's load falls on both alike; the figure of merit is the
median over rounds of the per-round ratio (second setting over first) of median step times.

A bench script defines its workloads (each returns a list of step seconds), the variable and
its two settings, and hands them to :func:`main`, which runs the race (or, as ``--child NAME``,
one workload) and writes ``bench/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from _common import load_info, md_table, provenance, slow_share, write_json, write_text


def child(workloads: dict[str, Callable[[], list[float]]], name: str) -> None:
    """Run workload ``name`` in this (child) process on the CPU and print its step seconds as JSON."""
    import mindspore as ms

    ms.set_device("CPU")
    ms.runtime.launch_blocking()
    print(json.dumps(workloads[name]()))


def _run_child(script: Path, workload: str, variable: str, value: str | None) -> list[float]:
    """Step seconds of ``workload`` in a fresh ``python script --child workload`` with ``variable=value`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != variable}
    if value is not None:
        env[variable] = value
    done = subprocess.run([sys.executable, str(script), "--child", workload], env=env, capture_output=True, text=True, check=False, cwd=script.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{workload!r} with {variable}={value} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def statistics(samples: list[float]) -> dict[str, float]:
    """Median, lower quartile (seconds) and slow share of pooled step times."""
    return {"median_s": float(np.median(samples)), "lower_quartile_s": float(np.percentile(samples, 25)), "slow_share": slow_share(samples)}


def race(script: Path, workloads: list[str], variable: str, settings: dict[str, str | None], rounds: int) -> dict[str, Any]:
    """Every workload under every setting (label -> value; two of them), ABBA-alternated over ``rounds``.

    Per workload: :func:`statistics` per setting, ``round_ratios`` (second setting's median over
    the first's, per round), their median ``ratio`` and the raw ``samples_s``.
    """
    if len(settings) != 2:
        raise ValueError(f"race compares two settings, got {list(settings)}")
    first, second = settings
    results = {}
    for workload in workloads:
        per_round: dict[str, list[list[float]]] = {s: [] for s in settings}
        for r in range(rounds):
            for label in (first, second) if r % 2 == 0 else (second, first):
                per_round[label].append(_run_child(script, workload, variable, settings[label]))
            print(workload, r, {s: round(1e3 * float(np.median(per_round[s][-1])), 2) for s in settings}, flush=True)
        ratios = [float(np.median(b) / np.median(a)) for a, b in zip(per_round[first], per_round[second])]
        results[workload] = {
            **{s: statistics([x for run in runs for x in run]) for s, runs in per_round.items()},
            "round_ratios": ratios,
            "ratio": float(np.median(ratios)),
            "samples_s": per_round,
        }
    return results


def table(results: dict[str, Any], settings: list[str]) -> str:
    """Markdown table of :func:`race`'s results: medians per setting, ratio, per-round ratios, quartiles, slow shares."""
    first, second = settings
    rows = []
    for workload, r in results.items():
        a, b = r[first], r[second]
        rows.append([
            workload, f"{a['median_s'] * 1e3:.1f}", f"{b['median_s'] * 1e3:.1f}", f"{r['ratio']:.2f}x", " / ".join(f"{x:.2f}" for x in r["round_ratios"]),
            f"{a['lower_quartile_s'] * 1e3:.1f} / {b['lower_quartile_s'] * 1e3:.1f}", f"{a['slow_share']:.0%} / {b['slow_share']:.0%}",
        ])
    headers = ["workload", f"median ms, {first}", f"median ms, {second}", f"{second} / {first} (median of rounds)", "per-round ratios",
               f"lower quartile ms ({first} / {second})", f"slow share ({first} / {second})"]
    return md_table(headers, rows)


def markdown(report: dict[str, Any], title: str, meaning: str) -> str:
    """The results table with how it was made: ``title`` heads it, ``meaning`` says which way the ratio favours."""
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    return (
        f"# {title}\n\n"
        f"Command: `{report['command']}` (git {report['git'][:12]}); {report['machine']['cpu_model']}; load average {load[0]:.1f} at start, "
        f"{load[1]:.1f} at end; {report['rounds']} rounds, each workload in a fresh process per setting, settings alternated ABBA. {meaning}\n\n"
        + table(report["workloads"], list(report["settings"]))
    )


def main(script: str, description: str, name: str, title: str, meaning: str, workloads: dict[str, Callable[[], list[float]]], variable: str,
         settings: dict[str, str | None]) -> None:
    """Command line of a settings bench (``script`` is its ``__file__``): ``--rounds N`` races
    every workload and writes ``bench/results/<name>.json`` and ``.md`` (see :func:`markdown`);
    ``--child NAME`` is how :func:`race` runs one workload."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", choices=list(workloads), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(workloads, args.child)
        return
    load_start = load_info()
    results = race(Path(script).resolve(), list(workloads), variable, settings, args.rounds)
    report = {**provenance(load_start), "variable": variable, "settings": settings, "rounds": args.rounds, "workloads": results}
    write_json(name, report)
    text = markdown(report, title, meaning)
    write_text(f"{name}.md", text)
    print(text)
