"""What reliability costs, and what the fuzz suite found, on SmolLM2-135M and small networks.

1. Checkpoints: ``gscore.io.save_checkpoint`` / ``load_checkpoint`` (CRC-32 of every tensor,
   description checks, stale-file cleanup, all-or-nothing load) against plain MindSpore
   ``save_checkpoint`` / ``load_checkpoint`` + ``load_param_into_net``, on the float SmolLM2
   (538 MB of parameters), interleaved round-robin in one process.
2. Transactions: time to snapshot SmolLM2 (structure and zero-copy parameter views) and to
   restore it unchanged; peak RSS of PTQ A8W8+SmoothQuant ``apply`` with the transaction and
   with it switched off (SmoothQuant replaces every smoothed weight: the transaction keeps
   the old storages until the call ends, so a failure can put them back).
3. The fuzz property of tests/test_fuzz_algorithms.py with more examples: outcome counts per
   algorithm; any exception other than a GscoreError would stop it and be reported.

Usage: python bench/reliability.py [--repeat 3] [--layers 30] [--windows 4] [--tokens 128] [--examples 60]
Writes bench/results/reliability.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

import gscore
import gscore.algorithm
from gscore import PTQConfig
from gscore.io import load_checkpoint, save_checkpoint
from gscore.io.integrity import checksums
from gscore.nn.snapshot import NetworkSnapshot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRss, command_line, git_revision, load_info, machine_info, md_table, summary, write_json, write_text  # noqa: E402


def checkpoint_costs(net: Any, repeat: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {k: [] for k in ("ms_save", "gscore_save", "ms_load", "gscore_load", "crc32_all")}
    with tempfile.TemporaryDirectory() as folder:
        plain, checked = Path(folder) / "plain.ckpt", Path(folder) / "checked.ckpt"
        for _ in range(repeat):
            for name, fn in (
                ("ms_save", lambda: ms.save_checkpoint(net, str(plain))),
                ("gscore_save", lambda: save_checkpoint(net, checked)),
                ("ms_load", lambda: ms.load_param_into_net(net, ms.load_checkpoint(str(plain)), strict_load=True)),
                ("gscore_load", lambda: load_checkpoint(checked, net)),
                ("crc32_all", lambda: checksums((p.name, p) for _, p in net.parameters_and_names())),
            ):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    out = {name: summary(values) for name, values in samples.items()}
    out["save_ratio_median"] = out["gscore_save"]["median_s"] / out["ms_save"]["median_s"]
    out["load_ratio_median"] = out["gscore_load"]["median_s"] / out["ms_load"]["median_s"]
    out["parameter_mib"] = sum(p.nbytes for p in net.get_parameters()) / 2**20
    return out


def snapshot_costs(net: Any, repeat: int) -> dict[str, Any]:
    take, restore = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        snapshot = NetworkSnapshot(net)
        take.append(time.perf_counter() - start)
        start = time.perf_counter()
        snapshot.restore()
        restore.append(time.perf_counter() - start)
    cells = sum(1 for _ in net.cells_and_names())
    return {"cells": cells, "parameters": len(list(net.get_parameters())), "snapshot": summary(take), "restore_unchanged": summary(restore)}


def smooth_apply_memory(make_net: Any, helper: Any, windows: np.ndarray) -> dict[str, Any]:
    """Peak RSS of the SmoothQuant apply without and with the transaction (alternating, twice),
    and the exact bytes of replaced parameter storage the transaction keeps until the call ends."""
    cfg = PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"progress": False})
    runs = []
    original = gscore.algorithm.transaction
    for attempt in range(2):
        for with_transaction in (False, True):
            net = make_net()
            if not with_transaction:
                gscore.algorithm.transaction = lambda network, owner=None: contextlib.nullcontext()
            try:
                with PeakRss() as peak:
                    start = time.perf_counter()
                    gscore.get("ptq")(cfg).apply(net, helper, datasets=windows)
                    seconds = time.perf_counter() - start
            finally:
                gscore.algorithm.transaction = original
            runs.append({"transaction": with_transaction, "attempt": attempt + 1, **peak.as_dict(), "apply_s": seconds})
            del net
    net = make_net()
    held = NetworkSnapshot(net)
    gscore.get("ptq")(cfg).apply(net, helper, datasets=windows)
    return {"runs": runs, "replaced_storage_held_mib": held.replaced_bytes() / 2**20, "parameter_mib": sum(p.nbytes for p in net.get_parameters()) / 2**20}


def fuzz_outcomes(examples: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import test_fuzz_algorithms as fuzz

    results = {}
    for name in fuzz.ALGORITHMS:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcomes = fuzz.run_property(name, examples)
            other = 0
        except Exception as exc:  # the property failed: a non-GscoreError or a changed network
            outcomes, other = {"property failed": f"{type(exc).__name__}: {exc}"[:300]}, 1
        results[name] = {"examples": examples, "outcomes": outcomes, "non_gscore_exceptions": other, "seconds": time.perf_counter() - start}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=30, help="SmolLM2 layers for the SmoothQuant memory run (30 = all)")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--examples", type=int, default=60, help="fuzz examples per algorithm")
    args = parser.parse_args()
    ms.runtime.launch_blocking()

    from gscore.data.wikipedia import load_articles, split_articles, token_windows
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore.models.smollm2 import load_smollm2

    weights, config, tokenizer = load_smollm2()
    net = build_llama(LlamaConfig(**config), weights)
    result: dict[str, Any] = {
        "command": command_line(),
        "revision": git_revision(),
        "machine": machine_info(),
        "load_before": load_info(),
        "checkpoint": checkpoint_costs(net, args.repeat),
        "snapshot": snapshot_costs(net, max(args.repeat, 5)),
    }
    del net
    windows = token_windows(tokenizer, split_articles(load_articles(), "calibration"), args.tokens, args.windows)
    result["smooth_apply_memory"] = smooth_apply_memory(lambda: build_llama(LlamaConfig(**{**config, "num_layers": args.layers}), weights), LlamaHelper(tokenizer), windows)
    result["smooth_apply_memory"]["layers"] = args.layers
    result["fuzz"] = fuzz_outcomes(args.examples)
    result["load_after"] = load_info()
    write_json("reliability", result)

    ck, sn, mem, fz = result["checkpoint"], result["snapshot"], result["smooth_apply_memory"], result["fuzz"]
    md = [
        "# Reliability: costs and fuzz outcomes\n",
        f"Command: `{result['command']}` at {result['revision']}; load average before/after "
        f"{result['load_before']['loadavg_1_5_15']} / {result['load_after']['loadavg_1_5_15']} on {result['machine']['usable_cores']} cores.\n",
        f"## Checkpoints: SmolLM2-135M float ({ck['parameter_mib']:.0f} MiB), {args.repeat} interleaved rounds\n",
        md_table(
            ["operation", "MindSpore plain (median s)", "gscore (median s)", "ratio"],
            [
                ["save", f"{ck['ms_save']['median_s']:.2f}", f"{ck['gscore_save']['median_s']:.2f}", f"{ck['save_ratio_median']:.2f}"],
                ["load", f"{ck['ms_load']['median_s']:.2f}", f"{ck['gscore_load']['median_s']:.2f}", f"{ck['load_ratio_median']:.2f}"],
            ],
        ),
        f"\nCRC-32 of every parameter alone: median {ck['crc32_all']['median_s']:.2f} s.\n",
        f"\n## Transactions\n\nSnapshot of SmolLM2 ({sn['cells']} cells, {sn['parameters']} parameters): median "
        f"{sn['snapshot']['median_s'] * 1e3:.1f} ms; restoring it unchanged: {sn['restore_unchanged']['median_s'] * 1e3:.1f} ms.\n",
        f"\nPTQ A8W8 + SmoothQuant `apply` on SmolLM2 ({args.layers} layers, {args.windows} windows of {args.tokens} tokens), "
        f"without and with the transaction, alternating. The transaction keeps the replaced storage of every smoothed weight "
        f"until the call ends: {mem['replaced_storage_held_mib']:.0f} MiB of the network's {mem['parameter_mib']:.0f} MiB "
        "(exact, counted from the snapshot); how much of it shows in the peak RSS depends on the allocator.\n\n",
        md_table(
            ["run", "transaction", "peak RSS over baseline (MiB)", "RSS kept after (MiB)", "apply (s)", "peak exact"],
            [[r["attempt"], r["transaction"], r["peak_over_baseline_mib"], r["rss_after_minus_before_mib"], f"{r['apply_s']:.1f}", r["peak_is_exact"]] for r in mem["runs"]],
        ),
        "\n## Fuzz property (tests/test_fuzz_algorithms.py), derandomized\n\n",
        md_table(
            ["algorithm", "examples", "non-GscoreError exceptions", "outcomes", "seconds"],
            [[k, v["examples"], v["non_gscore_exceptions"], ", ".join(f"{o}: {n}" for o, n in sorted(v["outcomes"].items())), f"{v['seconds']:.0f}"] for k, v in fz.items()],
        ),
    ]
    write_text("reliability.md", "".join(md))
    print("".join(md))


if __name__ == "__main__":
    main()
