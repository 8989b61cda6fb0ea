"""Quantize SmolLM2 with PTQ on N data-parallel workers; the same script runs alone in one process.

Every worker runs this script on the same arguments and the same calibration windows; PTQ's
calibration gives each worker its share of the windows and combines their statistics block by
block, so every worker holds the same quantized network; ``save_checkpoint`` checks that and
rank 0 writes it.

    python examples/ptq_data_parallel.py --out runs/dp                           # one process
    gscore launch --workers 2 examples/ptq_data_parallel.py --out runs/dp
    msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --log_dir=runs/dp/logs \\
          --join=True examples/ptq_data_parallel.py --out runs/dp                # msrun itself

``--presets`` names PTQ presets (:mod:`gscore_ptq.presets`; default: the default preset) and
``--configs`` more configs (JSON ``{name: PTQConfig fields}``); each is calibrated in turn and
written to ``OUT/<name>.ckpt``; ``OUT/report.json`` holds the worker
count and each config's calibration seconds (rank 0, between barriers).
"""

from __future__ import annotations

from gscore import dist

dist.init()  # first: msrun's scheduler process stops here

import argparse  # noqa: E402 - after joining the job (see above)
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import mindspore as ms  # noqa: E402

import gscore  # noqa: E402
from gscore import PTQConfig  # noqa: E402
from gscore.data.wikipedia import load_articles, split_articles, token_windows  # noqa: E402
from gscore.io import save_checkpoint  # noqa: E402
from gscore.io.atomic import atomic_target  # noqa: E402
from gscore.models.hf_folder import load_llama, open_llama_folder  # noqa: E402
from gscore.models.llama_helper import LlamaHelper  # noqa: E402
from gscore.models.smollm2 import smollm2_folder  # noqa: E402
from gscore_ptq.presets import DEFAULT, PRESETS, preset  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME.ckpt and report.json")
    parser.add_argument("--presets", nargs="*", choices=list(PRESETS), default=None, help=f"PTQ presets to calibrate (default: {DEFAULT} unless --configs is given)")
    parser.add_argument("--configs", type=json.loads, default={}, help="more configs: JSON {name: PTQConfig fields}")
    parser.add_argument("--layers", type=int, default=None, help="keep only the first layers (default: all 30)")
    parser.add_argument("--windows", type=int, default=8, help="calibration windows (all workers together)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per window")
    parser.add_argument("--windows-per-forward", type=int, default=None, help="windows per block forward (default: all at once); "
                        "set it, in the one-process run too, for results independent of the worker count")
    args = parser.parse_args()
    presets = args.presets if args.presets is not None else ([] if args.configs else [DEFAULT])
    configs = {**{name: preset(name) for name in presets}, **args.configs}
    ms.runtime.launch_blocking()

    folder = smollm2_folder()
    tokenizer = open_llama_folder(folder).tokenizer()
    windows = token_windows(tokenizer, split_articles(load_articles(), "calibration"), args.tokens, args.windows)
    seconds = {}
    for name, fields in configs.items():
        net, _ = load_llama(folder, num_layers=args.layers)
        algo = gscore.get("ptq")(PTQConfig(**{**fields, "algo_args": {"progress": False, **fields.get("algo_args", {})}}))
        dist.barrier()  # time the calibration alone, every worker ready
        start = time.perf_counter()
        algo.apply(net, LlamaHelper(tokenizer, windows_per_forward=args.windows_per_forward), datasets=windows)
        dist.barrier()
        seconds[name] = time.perf_counter() - start
        algo.convert(net)
        save_checkpoint(net, args.out / f"{name}.ckpt", description=algo.describe(net))
        print(f"rank {dist.rank()}/{dist.size()}: {name}: calibrated {len(windows)} windows in {seconds[name]:.1f} s", flush=True)
    if dist.is_root():
        report = {"workers": dist.size(), "windows": int(len(windows)), "tokens": args.tokens, "windows_per_forward": args.windows_per_forward, "calibrate_seconds": seconds}
        with atomic_target(args.out / "report.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
