"""Benchmark: SCOP channel pruning (``gscore.get("scop")``) of the digit ResNet on real MNIST.

Question answered: how many parameters and FLOPs does SCOP physically remove from
``DigitsResNet`` at prune rates 0.3 / 0.5 / 0.7, and what does it cost in accuracy? The goal
measured against: at least 45 % of the parameters removed at no more than 1 point of accuracy
lost (Golden Stick publishes 45 % at -1.46 pt on ResNet50 / CIFAR-10).

One process, fixed seeds, MNIST-5k (4000 train / 1000 test):

1. float: train ``DigitsResNet(widths)`` for ``--float-epochs`` at learning rate 1e-3, then
   ``--finetune-epochs`` more at the fine-tune learning rate (the same low-rate tail the pruned
   networks get, so pruning starts from a float network that has converged as far as that
   schedule takes it and the comparison does not flatter pruning); accuracy, parameters, MACs.
2. per prune rate, from the same float weights: knockoff stage (``apply``), accuracy after it;
   ``convert`` (the physically smaller network), accuracy; BatchNorm statistics re-estimated
   (``recalibrate_batchnorm``, 50 batches, forward only: what ``convert`` does by default, run
   separately here to show both numbers), accuracy, and the same for randomly chosen channels
   (ablation); fine-tune with ``train_classifier``,
   accuracy; parameters and MACs; checkpoint round trip (``save_checkpoint`` with the
   description, ``load_pruned`` into a fresh ``DigitsResNet``, outputs must be identical);
   inference latency of float and pruned interleaved, best of ``--repeat``.
3. composition, on the pruned network of 0.5: RTN (int8 weights of the Dense head) and SimQAT
   (fake-quant training of every Conv2d/Dense for one epoch, then int8 deploy) accuracies.

Results: ``bench/results/scop.json`` and ``bench/results/scop.md``.
Run from the repository root: ``python bench/scop.py`` (about 25 minutes on 2 cores shared with other jobs).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402


def accuracy(net: Any, data: Any) -> float:
    from gscore.eval.classification import predict_logits, top1_accuracy

    return top1_accuracy(predict_logits(net, data.test_x), data.test_y)


def latency(nets: dict[str, Any], x: np.ndarray, batches: list[int], repeat: int) -> dict[str, dict[str, Any]]:
    """Seconds per forward of each network on the first ``b`` images, for every ``b`` in ``batches``.

    Networks are timed in turn inside each repetition (interleaved), so they see the same
    machine state; the best repetition counts.
    """
    from mindspore import Tensor

    out: dict[str, dict[str, Any]] = {name: {} for name in nets}
    for b in batches:
        inputs = Tensor(x[:b])
        samples: dict[str, list[float]] = {name: [] for name in nets}
        for net in nets.values():
            net.set_train(False)
            net(inputs).asnumpy()  # warm-up
        for _ in range(repeat):
            for name, net in nets.items():
                samples[name].append(common.timed(lambda: net(inputs).asnumpy())[0])
        for name in nets:
            out[name][f"batch_{b}"] = common.summary(samples[name])
    return out


def round_trip(algo: Any, pruned: Any, widths: list[int], x: np.ndarray) -> dict[str, Any]:
    """Save the pruned network with its description, rebuild it from a fresh definition, compare outputs."""
    from mindspore import Tensor

    from gscore.io import save_checkpoint
    from gscore.models.convnets import DigitsResNet
    from gscore_scop import load_pruned

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(pruned, Path(tmp) / "pruned.ckpt", description=algo.describe())
        size = path.stat().st_size
        rebuilt = load_pruned(path, DigitsResNet(tuple(widths)))
    rebuilt.set_train(False)
    pruned.set_train(False)
    same = bool(np.array_equal(rebuilt(Tensor(x)).asnumpy(), pruned(Tensor(x)).asnumpy()))
    if not same:
        raise AssertionError("the reloaded pruned network computes different outputs")
    return {"checkpoint_bytes": size, "reloaded_outputs_identical": same}


def random_selection_accuracy(algo: Any, float_net: Any, data: Any, batch_size: int, seed: int) -> float:
    """Ablation: keep as many channels as SCOP kept, but chosen at random; BN recalibrated, no fine-tune.

    Tells whether the knockoff scores pick better channels than chance at this rate.
    """
    from gscore.nn.bn_recalib import recalibrate_batchnorm
    from gscore.nn.shrink import plan_from_groups, shrink

    rng = np.random.default_rng(seed + 3)
    kept = {name: np.sort(rng.choice(algo.groups[name].channels, len(k), replace=False)) for name, k in algo.kept.items()}
    pruned = shrink(float_net, plan_from_groups(algo.groups, kept))
    recalibrate_batchnorm(pruned, data.train_x, batch_size, 50, seed)
    return accuracy(pruned, data)


def prune_at(rate: float, args: argparse.Namespace, data: Any, float_ckpt: str, float_cost: Any) -> tuple[dict[str, Any], Any, Any]:
    """Knockoff, prune, fine-tune at ``rate`` from the saved float weights; returns (row, float net, pruned net)."""
    import mindspore as ms

    import gscore
    from gscore.models.convnets import DigitsResNet
    from gscore.nn.bn_recalib import recalibrate_batchnorm
    from gscore.nn.cost import network_cost
    from gscore.train.classifier import train_classifier
    from gscore_scop import SCOPConfig

    ms.set_seed(args.seed)
    net = DigitsResNet(tuple(args.widths))
    ms.load_checkpoint(float_ckpt, net)
    config = SCOPConfig(prune_rate=rate, selection=args.selection, knockoff_epochs=args.knockoff_epochs, recalibrate_batches=0, seed=args.seed)
    algo = gscore.get("scop")(config)
    t_knockoff, _ = common.timed(lambda: algo.apply(net, datasets=(data.train_x, data.train_y)))
    acc_knockoff = accuracy(net, data)
    kfscale = {name: cell.kfscale.asnumpy().ravel() for name, cell in net.cells_and_names() if hasattr(cell, "kfscale")}
    t_prune, pruned = common.timed(lambda: algo.convert(net))
    acc_pruned = accuracy(pruned, data)
    t_recalibrate, _ = common.timed(lambda: recalibrate_batchnorm(pruned, data.train_x, config.knockoff_batch_size, 50, args.seed))
    acc_recalibrated = accuracy(pruned, data)
    acc_random = random_selection_accuracy(algo, net, data, config.knockoff_batch_size, args.seed)
    cost = network_cost(pruned, data.test_x[:2])
    t_finetune, _ = common.timed(
        lambda: train_classifier(pruned, data.train_x, data.train_y, epochs=args.finetune_epochs, learning_rate=args.finetune_lr, seed=args.seed + 1, progress=False)
    )
    acc_finetuned = accuracy(pruned, data)
    row = {
        "prune_rate": rate,
        "kept_channels": algo.describe()["kept_channels"],
        "skipped_convolutions": algo.skipped,
        "kfscale_quartiles": {name: [round(float(q), 3) for q in np.percentile(k, [0, 25, 50, 75, 100])] for name, k in kfscale.items()},
        "accuracy_after_knockoff": acc_knockoff,
        "accuracy_after_pruning": acc_pruned,
        "accuracy_after_bn_recalibration": acc_recalibrated,
        "ablation_random_channels_after_bn_recalibration": acc_random,
        "accuracy_after_finetune": acc_finetuned,
        "parameters": cost.parameters,
        "macs_per_image": cost.macs,
        "flops_per_image": cost.flops,
        "parameters_removed": 1 - cost.parameters / float_cost.parameters,
        "flops_removed": 1 - cost.macs / float_cost.macs,
        "seconds": {"knockoff": t_knockoff, "prune": t_prune, "bn_recalibration": t_recalibrate, "finetune": t_finetune},
        "checkpoint": round_trip(algo, pruned, args.widths, data.test_x[:8]),
    }
    return row, net, pruned


def compose(pruned: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Quantize copies of a pruned network with RTN and SimQAT; accuracy of each."""
    import gscore
    from gscore import PTQConfig
    from gscore.nn.cost import count_parameters
    from gscore.train.classifier import train_classifier

    out: dict[str, Any] = {}
    rtn_net = copy.deepcopy(pruned)
    rtn = gscore.get("rtn")(PTQConfig())
    rtn.convert(rtn.apply(rtn_net))
    out["rtn"] = {"accuracy": accuracy(rtn_net, data), "quantized_layers": list(rtn.layers), "what": "int8 weights of every nn.Dense (RTN does not quantize Conv2d)"}
    qat_net = copy.deepcopy(pruned)
    qat = gscore.get("simqat")()
    qat.apply(qat_net)
    t_train, _ = common.timed(lambda: train_classifier(qat_net, data.train_x, data.train_y, epochs=1, learning_rate=args.finetune_lr / 5, seed=args.seed + 2, progress=False))
    qat.convert(qat_net)
    out["simqat"] = {
        "accuracy": accuracy(qat_net, data),
        "qat_epochs": 1,
        "train_seconds": t_train,
        "quantized_layers": len(qat.layers),
        "parameters_after_deploy": count_parameters(qat_net),
        "what": "int8 weights and activations of every Conv2d/Dense (BN folded), one epoch of fake-quant training, int8 deploy",
    }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import mindspore as ms

    import gscore
    from gscore.data.mnist import load_mnist_5k
    from gscore.models.convnets import DigitsResNet
    from gscore.nn.cost import network_cost
    from gscore.train.classifier import train_classifier

    ms.runtime.launch_blocking()  # synchronous dispatch: much faster for small networks on 2 cores
    load_before = os.getloadavg()
    data = load_mnist_5k()
    ms.set_seed(args.seed)
    float_net = DigitsResNet(tuple(args.widths))
    t_float, _ = common.timed(lambda: train_classifier(float_net, data.train_x, data.train_y, epochs=args.float_epochs, seed=args.seed, progress=False))
    acc_float_first = accuracy(float_net, data)
    t_tail, _ = common.timed(
        lambda: train_classifier(float_net, data.train_x, data.train_y, epochs=args.finetune_epochs, learning_rate=args.finetune_lr, seed=args.seed + 1, progress=False)
    )
    acc_float = accuracy(float_net, data)
    float_cost = network_cost(float_net, data.test_x[:2])
    print(
        f"float: accuracy {acc_float_first:.4f} after {args.float_epochs} epochs, {acc_float:.4f} after {args.finetune_epochs} more at the fine-tune rate; "
        f"{float_cost.parameters} parameters, {float_cost.macs} MACs/image ({t_float + t_tail:.0f} s)",
        flush=True,
    )

    rows, composition, timing = [], None, {}
    with tempfile.TemporaryDirectory() as tmp:
        float_ckpt = str(Path(tmp) / "float.ckpt")
        ms.save_checkpoint(float_net, float_ckpt)
        for rate in args.rates:
            row, restored, pruned = prune_at(rate, args, data, float_ckpt, float_cost)
            row["latency"] = latency({"float": restored, "pruned": pruned}, data.test_x, args.latency_batches, args.repeat)
            rows.append(row)
            print(
                f"rate {rate}: knockoff {row['accuracy_after_knockoff']:.4f}, pruned {row['accuracy_after_pruning']:.4f}, "
                f"BN recalibrated {row['accuracy_after_bn_recalibration']:.4f} (random channels {row['ablation_random_channels_after_bn_recalibration']:.4f}), "
                f"fine-tuned {row['accuracy_after_finetune']:.4f}; params -{row['parameters_removed']:.1%}, FLOPs -{row['flops_removed']:.1%}",
                flush=True,
            )
            if rate == args.compose_rate:
                composition = compose(pruned, data, args)
                print(f"composition at rate {rate}: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in composition.items()), flush=True)
    goal = {"min_parameters_removed": 0.45, "max_accuracy_loss_points": 1.0}
    for row in rows:
        row["accuracy_loss_points_vs_float"] = 100 * (acc_float - row["accuracy_after_finetune"])
        row["meets_goal"] = row["parameters_removed"] >= goal["min_parameters_removed"] and row["accuracy_loss_points_vs_float"] <= goal["max_accuracy_loss_points"]
    return {
        "benchmark": "scop",
        "command": common.command_line(),
        "git_revision": common.git_revision(),
        "machine": common.machine_info(),
        "versions": {"mindspore": ms.__version__, "numpy": np.__version__, "gscore": gscore.__version__},
        "workload": {
            "network": f"DigitsResNet(widths={tuple(args.widths)})", "data": "MNIST-5k, 4000 train / 1000 test",
            "float_epochs": args.float_epochs, "knockoff_epochs": args.knockoff_epochs, "finetune_epochs": args.finetune_epochs,
            "finetune_learning_rate": args.finetune_lr, "selection": args.selection, "seed": args.seed, "repeat": args.repeat,
        },
        "units": "accuracy as a fraction of the 1000 test images; latency in seconds per forward; MACs per image, FLOPs = 2 MACs",
        "float": {
            "accuracy": acc_float, "accuracy_before_low_rate_tail": acc_float_first, "parameters": float_cost.parameters,
            "macs_per_image": float_cost.macs, "flops_per_image": float_cost.flops, "train_seconds": t_float + t_tail,
        },
        "load_average_1_5_15min": {"start": load_before, "end": os.getloadavg()},
        "goal": goal,
        "rates": rows,
        "composition": {"prune_rate": args.compose_rate, **(composition or {})},
    }


def markdown(res: dict[str, Any]) -> str:
    f, w, m = res["float"], res["workload"], res["machine"]
    out = [
        f"# SCOP channel pruning: {w['network']} on {w['data']}\n\n",
        f"Command: `{res['command']}` (git {res['git_revision'][:12]})\n\n",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores (shared with other jobs); mindspore {res['versions']['mindspore']}. "
        f"Float training {w['float_epochs']} epochs at lr 0.001 then {w['finetune_epochs']} at the fine-tune lr "
        f"(accuracy {f['accuracy_before_low_rate_tail']:.4f} before that tail); knockoff {w['knockoff_epochs']} epoch(s); fine-tune {w['finetune_epochs']} epochs "
        f"at lr {w['finetune_learning_rate']}; selection `{w['selection']}`. Latency: best of {w['repeat']} repetitions, float and pruned "
        f"interleaved in the same run; the 2 cores were shared with other jobs (load average {res['load_average_1_5_15min']['start'][0]:.1f} at the start, "
        f"{res['load_average_1_5_15min']['end'][0]:.1f} at the end), so latencies are noisy; the float figure in brackets is from the same repetitions.\n\n",
    ]
    batches = sorted(res["rates"][0]["latency"]["float"], key=lambda k: int(k.split("_")[1]))
    header = ["network", "accuracy", "after knockoff", "after pruning", "+ BN recalibration", "(random channels + BN recal.)", "after fine-tune", "parameters", "params removed", "MFLOPs/image", "FLOPs removed"]
    header += [f"latency {b.replace('_', ' ')} (ms)" for b in batches] + ["goal: >= 45 % params and <= 1 pt"]
    first_latency = res["rates"][0]["latency"]["float"]
    rows = [["float", f"{f['accuracy']:.4f}", "", "", "", "", "", f"{f['parameters']:,}", "", f"{f['flops_per_image'] / 1e6:.2f}", ""]
            + [f"{1000 * first_latency[b]['best_s']:.1f}" for b in batches] + [""]]
    for r in res["rates"]:
        rows.append(
            [f"SCOP rate {r['prune_rate']}", "", f"{r['accuracy_after_knockoff']:.4f}", f"{r['accuracy_after_pruning']:.4f}", f"{r['accuracy_after_bn_recalibration']:.4f}",
             f"({r['ablation_random_channels_after_bn_recalibration']:.4f})", f"**{r['accuracy_after_finetune']:.4f}**",
             f"{r['parameters']:,}", f"{r['parameters_removed']:.1%}", f"{r['flops_per_image'] / 1e6:.2f}", f"{r['flops_removed']:.1%}"]
            + [f"{1000 * r['latency']['pruned'][b]['best_s']:.1f} (float {1000 * r['latency']['float'][b]['best_s']:.1f})" for b in batches]
            + ["yes" if r["meets_goal"] else "no"]
        )
    out.append(common.md_table(header, rows))
    g = res["goal"]
    out.append(
        f"\nGoal: at least {g['min_parameters_removed']:.0%} of the parameters physically removed at no more than "
        f"{g['max_accuracy_loss_points']:.0f} point of accuracy lost against the float network. Accuracy change after fine-tuning, in points: "
        + ", ".join(f"rate {r['prune_rate']}: {-r['accuracy_loss_points_vs_float']:+.1f}" for r in res["rates"])
        + ".\n"
    )
    r0 = res["rates"][0]
    out.append(
        "\nPruned: the inner channels of every BasicBlock (`layers.i.conv1` -> `bn1` -> `conv2` inputs), found by tracing. "
        "Skipped, with the tracer's reason: " + "; ".join(f"`{k}`: {v}" for k, v in r0["skipped_convolutions"].items()) + ".\n"
    )
    out.append("\nKept channels per rate: " + "; ".join(f"{r['prune_rate']}: {r['kept_channels']}" for r in res["rates"]) + ". ")
    out.append("Every pruned checkpoint was saved with its description, rebuilt with `load_pruned` into a fresh `DigitsResNet` and gave identical outputs.\n")
    comp = res["composition"]
    if "rtn" in comp:
        out.append(
            f"\nComposition on the fine-tuned network pruned at {comp['prune_rate']}: RTN ({comp['rtn']['what']}) accuracy {comp['rtn']['accuracy']:.4f}; "
            f"SimQAT ({comp['simqat']['what']}) accuracy {comp['simqat']['accuracy']:.4f}.\n"
        )
    return "".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="DigitsResNet stage widths")
    p.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--selection", default="layer", choices=["layer", "global"])
    p.add_argument("--float-epochs", type=int, default=5)
    p.add_argument("--knockoff-epochs", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--compose-rate", type=float, default=0.5, help="prune rate whose network is also quantized")
    p.add_argument("--latency-batches", type=int, nargs="+", default=[1, 250])
    p.add_argument("--repeat", type=int, default=15, help="latency repetitions (best counts); the cores are shared, so take many")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="scop", help="results go to bench/results/<name>.json and .md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    print("wrote", common.write_json(args.name, res), "and", common.write_text(f"{args.name}.md", markdown(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
