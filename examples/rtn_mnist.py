"""Main job: train a real digit classifier, quantize it with RTN A16W8, deploy it from the saved
checkpoint, and report what quantization cost.

1. Train ``DigitsMLP`` (784-256-128-10) on the fixed 4000-image split of MNIST-5k.
2. Quantize a copy with ``gscore.get("rtn")`` (QUANTIZE: apply + convert), save it atomically
   with its quantization description.
3. Build a fresh network in DEPLOY mode, load the checkpoint strictly, and evaluate it on the
   1000 held-out images next to the float network.

Usage: python examples/rtn_mnist.py [--epochs 8] [--out runs/rtn_mnist]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import mindspore as ms
import numpy as np

import gscore
from gscore import PTQConfig, PTQMode
from gscore.data.mnist import load_mnist_5k
from gscore.eval import predict_logits, top1_accuracy
from gscore.io import load_checkpoint, save_checkpoint
from gscore.models.mlp import DigitsMLP
from gscore.train import train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/rtn_mnist"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    ms.runtime.launch_blocking()  # synchronous dispatch: much faster for small ops on 2 cores
    ms.set_seed(0)

    data = load_mnist_5k()
    t0 = time.perf_counter()
    net = DigitsMLP()
    trained = train_classifier(net, data.train_x, data.train_y, epochs=args.epochs)
    train_seconds = time.perf_counter() - t0
    float_path = save_checkpoint(net, args.out / "mlp_fp32.ckpt")
    float_logits = predict_logits(net, data.test_x)

    rtn = gscore.get("rtn")(PTQConfig(mode=PTQMode.QUANTIZE))
    rtn.convert(rtn.apply(net))
    quant_logits = predict_logits(net, data.test_x)
    quant_path = save_checkpoint(net, args.out / "mlp_rtn_a16w8.ckpt", description=rtn.describe(net))

    deployed = DigitsMLP()
    deploy = gscore.get("rtn")(PTQConfig(mode=PTQMode.DEPLOY))
    deploy.convert(deploy.apply(deployed))
    description = load_checkpoint(quant_path, deployed)
    deployed_logits = predict_logits(deployed, data.test_x)

    report = {
        "train": {"epochs": args.epochs, "steps": trained.steps, "final_loss": trained.final_loss, "seconds": train_seconds},
        "test_images": int(len(data.test_y)),
        "float_top1": top1_accuracy(float_logits, data.test_y),
        "rtn_top1": top1_accuracy(deployed_logits, data.test_y),
        "prediction_agreement": float(np.mean(deployed_logits.argmax(1) == float_logits.argmax(1))),
        "max_abs_logit_change": float(np.abs(deployed_logits - float_logits).max()),
        "deployed_equals_quantized": bool(np.array_equal(deployed_logits, quant_logits)),
        "float_ckpt_bytes": os.path.getsize(float_path),
        "rtn_ckpt_bytes": os.path.getsize(quant_path),
        "quantized_layers": sorted(description["layers"]),
        "phases": [vars(r) for r in rtn.phase_records + deploy.phase_records],
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print_report(report, args.out)


def print_report(report: dict, out: Path) -> None:
    """A short markdown summary on stdout."""
    size_ratio = report["rtn_ckpt_bytes"] / report["float_ckpt_bytes"]
    print()
    print(f"## RTN A16W8 on DigitsMLP, MNIST-5k ({report['test_images']} held-out images)")
    print()
    print("| network | top-1 | checkpoint |")
    print("|---|---|---|")
    print(f"| float32 | {report['float_top1']:.2%} | {report['float_ckpt_bytes'] / 1024:.0f} KiB |")
    print(f"| RTN A16W8, deployed from checkpoint | {report['rtn_top1']:.2%} | {report['rtn_ckpt_bytes'] / 1024:.0f} KiB ({size_ratio:.0%}) |")
    print()
    print(f"- predictions that agree with float: {report['prediction_agreement']:.2%}; largest logit change {report['max_abs_logit_change']:.4f}")
    print(f"- deployed network equals the in-memory quantized one bit for bit: {report['deployed_equals_quantized']}")
    print(f"- quantized layers: {', '.join(report['quantized_layers'])}")
    for phase in report["phases"]:
        print(f"- {phase['algorithm']} {phase['phase']}: {phase['seconds'] * 1000:.1f} ms, peak RSS {phase['peak_rss_mib']:.0f} MiB")
    print(f"- training: {report['train']['steps']} steps in {report['train']['seconds']:.1f} s; files in {out}/")


if __name__ == "__main__":
    main()
