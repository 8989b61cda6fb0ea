"""Quantize a Llama-family folder layer by layer, one float layer in memory: models larger than RAM.

Reads the folder's safetensors through a memory map, calibrates and quantizes one decoder
layer at a time, writes each quantized layer to OUT as soon as it is done, and resumes from
the last finished layer when run again after a crash. Works the same on N msrun workers.

    python examples/ptq_streaming.py MODEL_FOLDER OUT                       # one process
    gscore launch --workers 2 examples/ptq_streaming.py MODEL_FOLDER OUT
    python examples/ptq_streaming.py MODEL_FOLDER OUT --in-memory           # the usual way, to compare

Then: ``gscore.io.streamed.load_streamed(OUT, deploy_network)``. ``--report FILE`` writes the
calibration seconds and peak RSS (MiB) as JSON.
"""

from __future__ import annotations

from gscore import dist

dist.init()  # first: msrun's scheduler process stops here

import argparse  # noqa: E402 - after joining the job (see above)
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import mindspore as ms  # noqa: E402

import gscore  # noqa: E402
from gscore import PTQConfig  # noqa: E402
from gscore.calib.streaming import quantize_streaming  # noqa: E402
from gscore.data.wikipedia import load_articles, split_articles, token_windows  # noqa: E402
from gscore.io import save_checkpoint  # noqa: E402
from gscore.io.atomic import atomic_target  # noqa: E402
from gscore.models.hf_folder import load_llama, open_llama_folder  # noqa: E402
from gscore.models.llama_helper import LlamaHelper  # noqa: E402
from gscore.models.llama_stream import LlamaFolderSource  # noqa: E402
from gscore.observers.phase_timer import peak_rss_mib  # noqa: E402
from gscore.testing.llama_folders import random_windows  # noqa: E402

DEFAULT_CONFIG = {"act_quant_dtype": "int8", "outliers_suppression": "smooth"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="Hugging Face-format Llama-family folder")
    parser.add_argument("out", type=Path, help="output folder (streamed checkpoint), or .ckpt file with --in-memory")
    parser.add_argument("--config", type=json.loads, default=DEFAULT_CONFIG, help="PTQConfig fields as JSON (default: A8W8 + SmoothQuant)")
    parser.add_argument("--windows", type=int, default=8, help="calibration windows (all workers together)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per window")
    parser.add_argument("--random-windows", action="store_true", help="random token ids instead of Wikipedia text (synthetic models)")
    parser.add_argument("--windows-per-forward", type=int, default=None, help="windows per layer forward (default: all at once)")
    parser.add_argument("--in-memory", action="store_true", help="load the whole model and calibrate it in memory instead")
    parser.add_argument("--report", type=Path, default=None, help="write seconds and peak RSS here (JSON)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, on_block: Callable[[str], None] | None = None) -> None:
    ms.runtime.launch_blocking()
    folder = open_llama_folder(args.model)
    if args.random_windows:
        windows = random_windows(folder.config, args.windows, args.tokens)
    else:
        windows = token_windows(folder.tokenizer(), split_articles(load_articles(), "calibration"), args.tokens, args.windows)
    config = PTQConfig(**{**args.config, "algo_args": {"progress": False, **args.config.get("algo_args", {})}})
    algo = gscore.get("ptq")(config)
    before = peak_rss_mib()
    start = time.perf_counter()
    if args.in_memory:
        net, _ = load_llama(args.model)
        algo.apply(net, LlamaHelper(windows_per_forward=args.windows_per_forward), datasets=windows)
        algo.convert(net)
        save_checkpoint(net, args.out, description=algo.describe(net))
    else:
        source = LlamaFolderSource(args.model, windows_per_forward=args.windows_per_forward)
        quantize_streaming(algo, source, windows, args.out, on_block=on_block, progress=False)
    seconds = time.perf_counter() - start
    if args.report is not None and dist.is_root():
        report = {"seconds": seconds, "peak_rss_mib_before": before, "peak_rss_mib": peak_rss_mib(), "workers": dist.size(), "in_memory": args.in_memory}
        with atomic_target(args.report) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    print(f"rank {dist.rank()}/{dist.size()}: {args.out} in {seconds:.1f} s, peak RSS {peak_rss_mib():.0f} MiB", flush=True)


if __name__ == "__main__":
    run(parse())
    sys.exit(0)
