"""Benchmark: inference speed of SimQAT- and SLB-deployed networks on the native integer kernels.

Question answered: a network trained with SimQAT (or SLB with 8-bit activations) and converted runs its Conv2d and Dense layers
as one integer operator each (``gsk_int8_layer``: the activation quantization, im2col and the
int8 GEMM of ``gscore/kernels``). How fast is that against the float network it came from and
against the dequantising deploy path (``GSCORE_KERNELS=portable``: int8 codes dequantised, then
MindSpore's float Conv2D / MatMul), and how close are its outputs to the simulated network's?

Networks: LeNet5 and DigitsResNet (widths 16/32/64, BatchNorm folded), each trained
``--float-epochs`` in float on MNIST-5k, then ``--qat-epochs`` with the ``--algorithm``:
``simqat`` is SimQAT A8W8 (per-channel int8 weights, unsigned EMA int8 activations); ``slb-w2``
is SLB's 2-bit weight search with 8-bit activations on every Conv2d and Dense (its packed
levels run through the same int8 operator as odd integers). The portable deploy network is
the same deployed checkpoint loaded with native kernels off.

Timing: per batch size, the three networks run in a new random order in each of ``--rounds``
rounds; a sample is the mean of enough forwards (PyNative, the way ``predict_logits`` runs them)
to take ``--sample-ms``. Ratios are taken within each round and their median is reported with
the range over rounds.

Usage (from the repository root): python bench/qat_deploy.py [--algorithm simqat|slb-w2] [--rounds 9] [--batches 1 32 256]
Writes bench/results/qat_deploy.json and .md (``--output`` changes the stem).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_info, md_table, provenance, write_results  # noqa: E402


BATCH = 64  # training batch of the float and QAT epochs
ALGORITHMS = {"simqat": ("simqat", {}), "slb-w2": ("slb", {"weight_bits": 2, "include_dense": True, "act_bits": 8})}


def trained(kind: str, algorithm: str, float_epochs: int, qat_epochs: int, ckpt: Path) -> dict[str, Any]:
    """The float network, the QAT network before and after convert (native kernels), the
    same deployed checkpoint loaded with kernels off, and their test logits."""
    import mindspore as ms

    import gscore
    from gscore import kernels
    from gscore.data.mnist import load_mnist_5k
    from gscore.eval.classification import predict_logits
    from gscore.io import save_checkpoint
    from gscore.models.convnets import DigitsResNet, LeNet5
    from gscore.train.classifier import train_classifier

    data = load_mnist_5k()
    make = {"lenet5": LeNet5, "resnet": DigitsResNet}[kind]
    ms.set_seed(0)
    net = make()
    train_classifier(net, data.train_x, data.train_y, epochs=float_epochs, batch_size=BATCH, progress=False)
    float_path = ckpt.with_name(f"{kind}_float.ckpt")
    ms.save_checkpoint(net, str(float_path))
    float_net = make()
    ms.load_param_into_net(float_net, ms.load_checkpoint(str(float_path)))
    name, config = ALGORITHMS[algorithm]
    algo = gscore.get(name)(config)
    algo.apply(net)
    hook = None
    if name == "slb":  # SLB's temperature schedule runs over every step of the QAT epochs
        schedule = algo.schedule(qat_epochs * -(-len(data.train_x) // BATCH))
        hook = lambda: schedule.step(net)  # noqa: E731
    train_classifier(net, data.train_x, data.train_y, epochs=qat_epochs, batch_size=BATCH, learning_rate=1e-4, progress=False, before_step=hook)
    simulated = predict_logits(net, data.test_x)
    algo.convert(net)
    save_checkpoint(net, ckpt, algo.describe(net))
    with kernels.forced(kernels.PORTABLE):
        again = gscore.get(name)(config)
        portable = again.convert(again.apply(make()), ckpt_path=ckpt)
    nets = {"float": float_net, "portable deploy": portable, "native deploy": net}
    logits = {name: predict_logits(n, data.test_x) for name, n in nets.items()}
    logits["simulated"] = simulated
    return {"nets": nets, "logits": logits, "labels": data.test_y, "images": data.test_x}


def sample_ms(net: Any, x: Any, budget_ms: float) -> float:
    """Mean milliseconds per forward over enough forwards to take about ``budget_ms``."""
    net(x).asnumpy()
    start, calls = time.perf_counter(), 0
    while (time.perf_counter() - start) * 1e3 < budget_ms or calls < 3:
        net(x).asnumpy()
        calls += 1
    return (time.perf_counter() - start) * 1e3 / calls


def race(nets: dict[str, Any], images: np.ndarray, batches: list[int], rounds: int, budget_ms: float) -> list[dict[str, Any]]:
    from mindspore import Tensor

    rows = []
    for batch in batches:
        x = Tensor(images[:batch])
        samples: dict[str, list[float]] = {name: [] for name in nets}
        for _ in range(rounds):
            order = list(nets)
            random.shuffle(order)
            for name in order:
                samples[name].append(sample_ms(nets[name], x, budget_ms))
        native = np.array(samples["native deploy"])
        row = {"batch": batch, "median_ms": {name: float(np.median(v)) for name, v in samples.items()}}
        for versus in ("float", "portable deploy"):
            ratios = native / np.array(samples[versus])
            row[f"native_vs_{versus.split()[0]}"] = {"median": float(np.median(ratios)), "min": float(ratios.min()), "max": float(ratios.max())}
        rows.append(row)
        print(batch, row, flush=True)
    return rows


def agreement(logits: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    sim, native, portable = logits["simulated"], logits["native deploy"], logits["portable deploy"]
    return {
        "accuracy": {name: float((v.argmax(1) == labels).mean()) for name, v in logits.items()},
        "native_max_logit_diff_rel": float(np.abs(native - sim).max() / np.abs(sim).max()),
        "native_prediction_agreement": float((native.argmax(1) == sim.argmax(1)).mean()),
        "portable_bit_identical": bool(np.array_equal(portable, sim)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gscore import kernels

    start = load_info()
    random.seed(0)
    res: dict[str, Any] = {"algorithm": args.algorithm, "kernel_level": kernels.level(), "rounds": args.rounds, "sample_ms": args.sample_ms, "networks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.networks:
            built = trained(kind, args.algorithm, args.float_epochs, args.qat_epochs, Path(tmp) / f"{kind}.ckpt")
            res["networks"][kind] = {"agreement": agreement(built["logits"], built["labels"]), "timing": race(built["nets"], built["images"], args.batches, args.rounds, args.sample_ms)}
    res["provenance"] = provenance(start)
    return res


def markdown(res: dict[str, Any]) -> str:
    p = res["provenance"]
    out = [
        f"# {res.get('algorithm', 'simqat')} deploy on the native integer kernels: inference time\n",
        f"Command: `{p['command']}` (git {p['git']}, kernel level `{res['kernel_level']}`, {p['machine']['cpu_model']}, "
        f"{p['machine']['usable_cores']} cores; load {p['load_start']['loadavg_1_5_15']} at start).\n",
        f"Median milliseconds per forward (PyNative) over {res['rounds']} interleaved rounds; the ratios are taken within each "
        "round, median [min-max] over rounds. `portable deploy` is the same deployed checkpoint with `GSCORE_KERNELS=portable` "
        "(dequantise, then MindSpore's float Conv2D / MatMul). `float` is the network before its QAT epochs (hence its lower "
        "accuracy); it is here for its speed.\n",
    ]
    for kind, r in res["networks"].items():
        a = r["agreement"]
        out.append(f"## {kind}\n")
        out.append(
            "Test accuracy (1000 digits): "
            + ", ".join(f"{name} {100 * v:.1f} %" for name, v in a["accuracy"].items())
            + f". Native deploy against the simulated network: largest logit difference {100 * a['native_max_logit_diff_rel']:.2f} % "
            f"of the largest logit, same prediction on {100 * a['native_prediction_agreement']:.1f} % of the digits; portable deploy "
            f"bit-identical to the simulated network: {a['portable_bit_identical']}.\n"
        )
        rows = []
        for t in r["timing"]:
            ms_ = t["median_ms"]
            ratio = lambda key: f"{t[key]['median']:.2f}x [{t[key]['min']:.2f}-{t[key]['max']:.2f}]"
            rows.append([t["batch"], f"{ms_['float']:.2f}", f"{ms_['portable deploy']:.2f}", f"{ms_['native deploy']:.2f}", ratio("native_vs_float"), ratio("native_vs_portable")])
        out.append(md_table(["batch", "float ms", "portable deploy ms", "native deploy ms", "native / float", "native / portable"], rows))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", default="simqat", choices=list(ALGORITHMS))
    parser.add_argument("--networks", nargs="+", default=["lenet5", "resnet"], choices=["lenet5", "resnet"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sample-ms", type=float, default=200.0)
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--output", default="qat_deploy", help="stem of the result files in bench/results")
    args = parser.parse_args()
    write_results(args.output, run(args), markdown)


if __name__ == "__main__":
    main()
