"""Benchmark: peak memory while loading a model-sized Hugging Face-format folder.

Question answered: does :func:`gscore.models.hf_folder.load_llama` (one memory-mapped tensor
at a time, converted to float32 and handed to the network) keep the peak near the network's
own size, where reading every tensor first and then building (the eager way) holds the model
twice?

Folders: SmolLM2-135M as gscore caches it (float32, one ``model.safetensors``, 513 MiB) and
the same weights re-written as bfloat16 in 3 shards (what most Hub folders look like). Each
load runs in a fresh process (MindSpore's allocator keeps freed memory, so one process per
measurement), from the same imports, and its peak RSS growth is VmHWM after a reset
(``bench/_common.PeakRss``). Ways of loading, interleaved per repetition:

* ``network only`` -- ``build_llama(config)`` with random initialisation: the network's own
  footprint, the floor any loader has to pay;
* ``gscore loader`` -- ``load_llama(folder)``;
* ``eager`` -- ``safetensors.numpy.load_file`` of every shard (bfloat16 converted to float32)
  into one dict, then ``build_llama(config, weights)``.

Results: ``bench/results/hf_folder_memory.json`` and ``.md``. Run from the repository root:
``python bench/hf_folder_memory.py`` (``--repeat 2``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

MIB = 2**20
METHODS = ("network only", "gscore loader", "eager")


def child(method: str, folder: str) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns the numbers as a dict."""
    import numpy as np
    from safetensors.numpy import load_file

    from gscore.models.hf_folder import load_llama, open_llama_folder
    from gscore.models.llama import build_llama

    opened = open_llama_folder(folder)
    files = sorted({entry.file for entry in opened.tensors.values()})
    with common.PeakRss() as peak:
        if method == "network only":
            net = build_llama(opened.config)
        elif method == "gscore loader":
            net, _ = load_llama(folder)
        else:
            weights = {name: value.astype(np.float32, copy=False) for file in files for name, value in load_file(str(file)).items()}
            net = build_llama(opened.config, weights)
            del weights
    params = sum(int(np.prod(p.shape)) * 4 for p in net.get_parameters())
    largest = max(int(np.prod(entry.shape)) * 4 for entry in opened.tensors.values())
    return {"method": method, "folder": folder, "parameter_mib": round(params / MIB, 1), "largest_tensor_mib": round(largest / MIB, 1), **peak.as_dict()}


def bf16_shards(source: Path, target: Path, shards: int = 3) -> Path:
    """``source``'s weights as bfloat16 in ``shards`` files plus the index, config and tokenizer."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import load_file, save_file

    target.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (target / name).write_text((source / name).read_text())
    weights = load_file(str(source / "model.safetensors"))
    names = sorted(weights)
    weight_map = {}
    for k, part in enumerate(np.array_split(np.arange(len(names)), shards)):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({names[i]: weights[names[i]].astype(ml_dtypes.bfloat16) for i in part}, str(target / file))
        weight_map.update({names[i]: file for i in part})
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return target


def folder_mib(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.glob("*.safetensors")) / MIB, 1)


def markdown(res: dict[str, Any]) -> str:
    rows, notes = [], []
    for folder in res["folders"]:
        runs = [r for r in res["runs"] if r["folder"] == folder["path"]]
        floor = min(r["peak_over_baseline_mib"] for r in runs if r["method"] == "network only")
        for method in METHODS:
            peaks = [r["peak_over_baseline_mib"] for r in runs if r["method"] == method]
            best = min(peaks)
            rows.append([folder["label"], folder["file_mib"], method, runs[0]["parameter_mib"], best, " / ".join(str(p) for p in peaks), f"{best / floor:.2f}"])
        loader = min(r["peak_over_baseline_mib"] for r in runs if r["method"] == "gscore loader")
        notes.append(f"{folder['label']}: gscore loader − network only = {loader - floor:.1f} MiB, the largest tensor in float32 is {runs[0]['largest_tensor_mib']} MiB.")
    table = common.md_table(
        ["folder", "weights on disk (MiB)", "loading", "float32 parameters (MiB)", "peak RSS growth, best (MiB)", "every run (MiB)", "x network only"],
        rows,
    )
    return (
        "# Peak memory while loading a Hugging Face-format folder\n\n"
        f"Command: `{res['command']}` (git {res['git_revision'][:12]})\n\n"
        f"Machine: {res['machine']['cpu_model']}, {res['machine']['usable_cores']} cores, {res['machine']['mem_total_gib']} GiB.\n\n"
        + table
        + "\nPeak RSS growth is VmHWM after a reset, over the load alone (imports and the header check done before), "
        "one fresh process per run, methods interleaved per repetition.\n\n"
        + "\n".join(f"- {note}" for note in notes)
        + "\n\nThe loader's excess over the network is about two float32 copies of the largest tensor (the "
        "embedding), alive at once while it is read: its memory-mapped pages and the array safetensors reads them "
        "into (plus the float32 conversion for bfloat16); MindSpore's own copy is made after the file is unmapped. "
        "It does not grow with depth. The eager way holds every tensor beside the network.\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from gscore.models.smollm2 import smollm2_folder

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        f32 = smollm2_folder()
        bf16 = bf16_shards(f32, Path(tmp) / "smollm2-bf16")
        folders = [
            {"label": "SmolLM2-135M float32, 1 file", "path": str(f32), "file_mib": folder_mib(f32)},
            {"label": "SmolLM2-135M bfloat16, 3 shards", "path": str(bf16), "file_mib": folder_mib(bf16)},
        ]
        for repetition in range(args.repeat):
            for folder in folders:
                for method in METHODS:
                    out = subprocess.run([sys.executable, __file__, "--child", method, folder["path"]], capture_output=True, text=True, check=True)
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(repetition, folder["label"], method, runs[-1]["peak_over_baseline_mib"], "MiB", flush=True)
    res = {
        "command": common.command_line(),
        "git_revision": common.git_revision(),
        "machine": common.machine_info(),
        "load": common.load_info(),
        "folders": folders,
        "runs": runs,
    }
    print("wrote", common.write_json("hf_folder_memory", res), "and", common.write_text("hf_folder_memory.md", markdown(res)))


if __name__ == "__main__":
    main()
