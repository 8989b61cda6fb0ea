"""Benchmark: SCOP channel pruning (``gscore.get("scop")``) against random, L1-norm and BN-gamma choices.

Questions answered, on two networks trained here on real MNIST (MNIST-5k, 4000 train / 1000
test): does SCOP's ranking choose better channels than the usual baselines, right after
pruning and after the same fine-tune, at prune rates 0.3 / 0.5 / 0.7; how many parameters and
FLOPs does it physically remove, and what does that cost on the MNIST test split and on sklearn's
digits (another population of handwritten digits: a distribution-shift check)?

Networks: ``DigitsResNet(16, 32, 64)`` (BatchNorm), pruned twice: only the inner channels of each
block (the paper's setting: its ResNet code keeps the residual width), and every channel group
(convolutions tied by residual additions pruned together, so the residual width shrinks too);
and ``DigitCNN``, three convolutions and two Dense layers without BatchNorm.

One process, fixed seeds:

1. float: train ``--float-epochs`` at learning rate 1e-3, then ``--finetune-epochs`` at the
   fine-tune rate (the low-rate tail the pruned networks get too, so pruning starts from a
   converged float network and the comparison does not flatter pruning).
2. per rate: SCOP (``--ranking reconstruction``, the default: ``apply`` traces, ``convert`` chooses
   the channels by their cost to the least-squares refit and returns the smaller network,
   recalibrated; ``--ranking knockoff``: ``apply`` trains the knockoff stage, whose coefficients
   rank the channels).
   SCOP's ``selection`` fixes how many channels each group keeps; every baseline keeps the SAME
   number per group, so the methods differ only in which channels they keep: random (several
   seeds), largest filter L1 norm (summed over a group's convolutions), largest BatchNorm |gamma|
   (ResNet). Each pruned network gets the same repair SCOP's ``convert`` applies
   (``SCOP.recalibrate``: the layers that lost input channels refitted by least squares to the
   float network's outputs, then BatchNorm statistics re-measured, or, without BatchNorm, every
   layer re-standardised to the float network's output statistics, kept only if that lowers the
   cross-entropy on held-out training images; forward passes on training images only), then the
   same fine-tune (``train_classifier``, same epochs, rate and seed).
   Accuracies: with the channels just cut out (no repair), after the statistics repair alone
   (``reconstruct_images=0``, what ``convert`` did before the refit existed), after pruning
   (repaired: what ``convert`` returns), after fine-tuning; the last two also on sklearn digits.
3. SCOP rows: parameters, MACs, checkpoint round trip (``save_checkpoint`` with the description,
   ``load_pruned`` into a fresh network, identical outputs), latency of float and pruned
   interleaved (best of ``--repeat``).
4. composition, on the ResNet SCOP network of ``--compose-rate``: RTN (int8 Dense weights) and
   SimQAT (one fake-quant epoch, int8 deploy).

Results: ``bench/results/<name>.json`` and ``.md`` (``--name``, default ``scop``).
Run from the repository root: ``nice -n 10 python bench/scop.py`` (every network, about 2 hours on
2 idle cores, far longer when they are shared); ``--networks`` picks the settings, ``--widths`` the
ResNet's size.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402


def make_cnn() -> Any:
    """The BN-free digit CNN: conv3x3(32)-pool-conv3x3(64)-pool-conv3x3(64)-Dense(128)-Dense(10), ReLU."""
    from mindspore import nn, ops

    class DigitCNN(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, pad_mode="valid", has_bias=True)
            self.conv2 = nn.Conv2d(32, 64, 3, pad_mode="valid", has_bias=True)
            self.conv3 = nn.Conv2d(64, 64, 3, pad_mode="valid", has_bias=True)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Dense(64 * 3 * 3, 128)
            self.fc2 = nn.Dense(128, 10)

        def construct(self, x: Any) -> Any:
            x = ops.expand_dims(x, 1) if x.ndim == 3 else x
            x = self.pool(self.relu(self.conv1(x)))
            x = self.pool(self.relu(self.conv2(x)))
            x = self.relu(self.conv3(x))
            return self.fc2(self.relu(self.fc1(self.flatten(x))))

    return DigitCNN()


def make_resnet(widths: tuple[int, ...]) -> Callable[[], Any]:
    from gscore.models.convnets import DigitsResNet

    return lambda: DigitsResNet(widths)


def accuracy(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    from gscore.eval.classification import predict_logits, top1_accuracy

    return top1_accuracy(predict_logits(net, x), y)


def mnist_outcome(net: Any, data: Any) -> dict[str, np.ndarray]:
    """Per MNIST test image: whether ``net`` classifies it right (``correct``) and the cross-entropy
    of its label (``loss``, nats), for paired differences between networks."""
    from gscore.eval.classification import example_cross_entropy, predict_logits

    logits = predict_logits(net, data.test_x)
    return {"correct": np.argmax(logits, axis=1) == data.test_y, "loss": example_cross_entropy(logits, data.test_y)}


def lead(scop_outcome: dict[str, dict[str, np.ndarray]], outcome: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """SCOP minus a baseline per stage, paired over the test images: accuracy (points) and
    cross-entropy (nats per image; negative = SCOP's network is the surer of the right labels),
    each with its standard error. Where accuracies tie, the cross-entropy still tells the two apart."""
    from gscore.eval.classification import paired_accuracy_difference, paired_difference

    leads = {}
    for stage, theirs in outcome.items():
        ours = scop_outcome[stage]
        points, stderr = paired_accuracy_difference(ours["correct"], theirs["correct"])
        nats, nats_stderr = paired_difference(ours["loss"], theirs["loss"])
        leads[stage] = {"points": points, "standard_error": stderr, "cross_entropy": nats, "cross_entropy_standard_error": nats_stderr}
    return leads


def both(net: Any, data: Any, shift: tuple[np.ndarray, np.ndarray], outcome: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """MNIST test accuracy and mean cross-entropy, and sklearn-digits accuracy; ``outcome`` is ``net``'s :func:`mnist_outcome` if already computed."""
    outcome = mnist_outcome(net, data) if outcome is None else outcome
    return {"mnist": float(np.mean(outcome["correct"])), "mnist_cross_entropy": float(np.mean(outcome["loss"])), "sklearn_digits": accuracy(net, *shift)}


def latency(nets: dict[str, Any], x: np.ndarray, batches: list[int], repeat: int) -> dict[str, dict[str, Any]]:
    """Seconds per forward of each network on the first ``b`` images, networks interleaved, best repetition."""
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


def round_trip(algo: Any, pruned: Any, make: Callable[[], Any], x: np.ndarray) -> dict[str, Any]:
    """Save the pruned network with its description, rebuild it from a fresh definition, compare outputs."""
    from mindspore import Tensor

    from gscore.io import save_checkpoint
    from gscore_scop import load_pruned

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(pruned, Path(tmp) / "pruned.ckpt", description=algo.describe())
        size = path.stat().st_size
        rebuilt = load_pruned(path, make())
    rebuilt.set_train(False)
    pruned.set_train(False)
    same = bool(np.array_equal(rebuilt(Tensor(x)).asnumpy(), pruned(Tensor(x)).asnumpy()))
    if not same:
        raise AssertionError("the reloaded pruned network computes different outputs")
    return {"checkpoint_bytes": size, "reloaded_outputs_identical": same}


def baseline_scores(float_net: Any, groups: dict[str, Any], seeds: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """Per method, a score per channel of every group (higher = keep): L1, BN |gamma| where every
    producer has a BatchNorm, and uniform random numbers per seed."""
    from gscore.nn.walk import get_cell

    methods: dict[str, dict[str, np.ndarray]] = {"L1-norm": {}}
    for name, group in groups.items():
        weights = [get_cell(float_net, p).weight.asnumpy() for p in group.producers]
        methods["L1-norm"][name] = sum(np.abs(w).reshape(w.shape[0], -1).sum(axis=1) for w in weights)
    if all(group.norm_of(p) for group in groups.values() for p in group.producers):
        methods["BN-gamma"] = {
            name: sum(np.abs(get_cell(float_net, group.norm_of(p)).gamma.asnumpy()) for p in group.producers) for name, group in groups.items()
        }
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        methods[f"random (seed {seed})"] = {name: rng.random(group.channels) for name, group in groups.items()}
    return methods


def keep_same_counts(scores: dict[str, np.ndarray], counts: dict[str, int]) -> dict[str, np.ndarray]:
    """The ``counts[group]`` highest-scored channels of every group, sorted."""
    return {name: np.sort(np.argsort(s, kind="stable")[len(s) - counts[name] :]) for name, s in scores.items()}


def finish(pruned: Any, data: Any, shift: Any, args: argparse.Namespace) -> tuple[dict[str, float], float, dict[str, np.ndarray]]:
    """Fine-tune ``pruned`` in place (same schedule for every method); accuracies, seconds and
    the per-image MNIST results (:func:`mnist_outcome`)."""
    from gscore.train.classifier import train_classifier

    seconds, _ = common.timed(
        lambda: train_classifier(pruned, data.train_x, data.train_y, epochs=args.finetune_epochs, learning_rate=args.finetune_lr, seed=args.seed + 1, progress=False)
    )
    outcome = mnist_outcome(pruned, data)
    return both(pruned, data, shift, outcome), seconds, outcome


def prune_at(rate: float, spec: dict[str, Any], args: argparse.Namespace, data: Any, shift: Any, float_ckpt: str, float_cost: Any) -> tuple[dict[str, Any], Any]:
    """SCOP and every baseline at ``rate`` from the saved float weights; returns (row, SCOP's pruned network)."""
    import mindspore as ms

    import gscore
    from gscore.nn.cost import network_cost
    from gscore.nn.shrink import plan_from_groups, shrink
    from gscore_scop import SCOPConfig

    make = spec["make"]
    ms.set_seed(args.seed)
    net = make()
    ms.load_checkpoint(float_ckpt, net)
    config = SCOPConfig(
        prune_rate=rate, selection=spec["selection"], layers=spec["layers"], knockoff_epochs=args.knockoff_epochs,
        knockoff_separation=args.separation, seed=args.seed, ranking=args.ranking,
    )
    algo = gscore.get("scop")(config)
    t_knockoff, _ = common.timed(lambda: algo.apply(net, datasets=(data.train_x, data.train_y)))
    kfscale = {name: p.asnumpy().ravel() for name, p in algo.coefficients.items()}
    t_prune, pruned = common.timed(lambda: algo.convert(net))  # net is the float network again afterwards
    counts = {name: int(len(k)) for name, k in algo.kept.items()}
    methods: dict[str, Any] = {}
    statistics_only = gscore.get("scop")(dataclasses.replace(config, reconstruct_images=0, ranking="knockoff"))  # only its repair runs

    def repaired_by_statistics(plan: Any) -> float:
        cut = shrink(net, plan)
        statistics_only.recalibrate(net, cut, data.train_x, data.train_y, plan)
        return accuracy(cut, data.test_x, data.test_y)

    scop_outcome = {"after_pruning": mnist_outcome(pruned, data)}
    scop = {
        "accuracy_channels_cut": accuracy(shrink(net, algo.plan), data.test_x, data.test_y),
        "accuracy_statistics_only": repaired_by_statistics(algo.plan),
        "after_pruning": both(pruned, data, shift, scop_outcome["after_pruning"]),
        "recalibration": algo.recalibration,
    }
    cost = network_cost(pruned, data.test_x[:2])
    scop_latency = latency({"float": net, "pruned": pruned}, data.test_x, args.latency_batches, args.repeat)
    scop["after_finetune"], scop["finetune_seconds"], scop_outcome["after_finetune"] = finish(pruned, data, shift, args)
    scop["checkpoint"] = round_trip(algo, pruned, make, data.test_x[:8])
    methods["SCOP"] = scop
    for method, scores in baseline_scores(net, algo.groups, args.random_seeds).items():
        plan = plan_from_groups(algo.groups, keep_same_counts(scores, counts))
        cut = shrink(net, plan)
        row = {"accuracy_channels_cut": accuracy(cut, data.test_x, data.test_y), "accuracy_statistics_only": repaired_by_statistics(plan)}
        row["recalibration"] = algo.recalibrate(net, cut, data.train_x, data.train_y, plan)
        outcome = {"after_pruning": mnist_outcome(cut, data)}
        row["after_pruning"] = both(cut, data, shift, outcome["after_pruning"])
        row["after_finetune"], row["finetune_seconds"], outcome["after_finetune"] = finish(cut, data, shift, args)
        row["scop_lead"] = lead(scop_outcome, outcome)
        methods[method] = row
        print(f"    {method}: cut {row['accuracy_channels_cut']:.3f}, pruned {row['after_pruning']['mnist']:.3f}, fine-tuned {row['after_finetune']['mnist']:.3f}", flush=True)
    row = {
        "prune_rate": rate,
        "kept_channels": counts,
        "groups": {name: list(g.producers) for name, g in algo.groups.items()},
        "skipped_convolutions": algo.skipped,
        "kfscale_quartiles": {name: [round(float(q), 3) for q in np.percentile(k, [0, 25, 50, 75, 100])] for name, k in kfscale.items()},
        "methods": methods,
        "parameters": cost.parameters,
        "macs_per_image": cost.macs,
        "parameters_removed": 1 - cost.parameters / float_cost.parameters,
        "flops_removed": 1 - cost.macs / float_cost.macs,
        "seconds": {"knockoff": t_knockoff, "convert": t_prune},
        "latency": scop_latency,
    }
    return row, pruned


def compose(pruned: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Quantize copies of a pruned network with RTN and SimQAT; accuracy of each."""
    import gscore
    from gscore import PTQConfig
    from gscore.train.classifier import train_classifier

    rtn_net = copy.deepcopy(pruned)
    rtn = gscore.get("rtn")(PTQConfig())
    rtn.convert(rtn.apply(rtn_net))
    qat_net = copy.deepcopy(pruned)
    qat = gscore.get("simqat")()
    qat.apply(qat_net)
    train_classifier(qat_net, data.train_x, data.train_y, epochs=1, learning_rate=args.finetune_lr / 5, seed=args.seed + 2, progress=False)
    qat.convert(qat_net)
    return {
        "rtn": {"accuracy": accuracy(rtn_net, data.test_x, data.test_y), "what": "int8 weights of every nn.Dense (RTN does not quantize Conv2d)"},
        "simqat": {"accuracy": accuracy(qat_net, data.test_x, data.test_y), "what": "int8 weights and activations of every Conv2d/Dense (BN folded), one epoch of fake-quant training, int8 deploy"},
    }


def train_float(spec: dict[str, Any], args: argparse.Namespace, data: Any, shift: Any, path: str) -> dict[str, Any]:
    """Train the float network of ``spec`` and save it to ``path``; its accuracies and cost."""
    import mindspore as ms

    from gscore.nn.cost import network_cost
    from gscore.train.classifier import train_classifier

    ms.set_seed(args.seed)
    float_net = spec["make"]()
    t_float, _ = common.timed(lambda: train_classifier(float_net, data.train_x, data.train_y, epochs=args.float_epochs, seed=args.seed, progress=False))
    first = accuracy(float_net, data.test_x, data.test_y)
    t_tail, _ = common.timed(
        lambda: train_classifier(float_net, data.train_x, data.train_y, epochs=args.finetune_epochs, learning_rate=args.finetune_lr, seed=args.seed + 1, progress=False)
    )
    ms.save_checkpoint(float_net, path)
    cost = network_cost(float_net, data.test_x[:2])
    result = {
        "accuracy": both(float_net, data, shift), "accuracy_before_low_rate_tail": first, "parameters": cost.parameters,
        "macs_per_image": cost.macs, "train_seconds": t_float + t_tail, "cost": cost,
    }
    print(f"{spec['arch']}: float {result['accuracy']} ({t_float + t_tail:.0f} s); {cost.parameters} parameters", flush=True)
    return result


def bench_network(spec: dict[str, Any], args: argparse.Namespace, data: Any, shift: Any, trained: dict[str, Any], folder: str) -> dict[str, Any]:
    """Every rate of one network setting; the float network of its architecture is trained once (``trained``)."""
    if spec["arch"] not in trained:
        path = str(Path(folder) / f"{spec['arch']}.ckpt")
        trained[spec["arch"]] = (path, train_float(spec, args, data, shift, path))
    float_ckpt, float_result = trained[spec["arch"]]
    float_cost = float_result["cost"]
    print(f"{spec['label']}", flush=True)
    rows, composition = [], None
    for rate in args.rates:
        print(f"  rate {rate}", flush=True)
        row, pruned = prune_at(rate, spec, args, data, shift, float_ckpt, float_cost)
        rows.append(row)
        s = row["methods"]["SCOP"]
        print(f"    SCOP: cut {s['accuracy_channels_cut']:.3f}, pruned {s['after_pruning']['mnist']:.3f}, fine-tuned {s['after_finetune']['mnist']:.3f}; "
              f"params -{row['parameters_removed']:.1%}", flush=True)
        if spec["compose"] and rate == args.compose_rate:
            composition = {"prune_rate": rate, **compose(pruned, data, args)}
    for row in rows:
        row["scop_accuracy_loss_points_vs_float"] = 100 * (float_result["accuracy"]["mnist"] - row["methods"]["SCOP"]["after_finetune"]["mnist"])
        row["meets_goal"] = row["parameters_removed"] >= 0.45 and row["scop_accuracy_loss_points_vs_float"] <= 1.0
    return {
        "network": spec["label"],
        "selection": spec["selection"],
        "layers": spec["layers"],
        "float": {k: v for k, v in float_result.items() if k != "cost"},
        "rates": rows,
        "composition": composition,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import mindspore as ms

    import gscore
    from gscore.data.mnist import load_mnist_5k
    from gscore.data.sklearn_digits import load_sklearn_digits

    from gscore_scop import SCOPConfig

    ms.runtime.launch_blocking()  # synchronous dispatch: much faster for small networks on 2 cores
    defaults = SCOPConfig()
    if args.separation is None:
        args.separation = defaults.knockoff_separation
    if args.knockoff_epochs is None:
        args.knockoff_epochs = defaults.knockoff_epochs
    load_before = os.getloadavg()
    data = load_mnist_5k()
    shift = load_sklearn_digits()
    resnet = make_resnet(tuple(args.widths))
    label = f"DigitsResNet{tuple(args.widths)}"
    specs = {
        "resnet-inner": {
            "arch": label, "label": f"{label}, inner channels of each block (the paper's setting)", "make": resnet, "selection": args.selection,
            "layers": [f"layers.{i}.conv1" for i in range(len(args.widths))], "compose": False,
        },
        "resnet": {
            "arch": label, "label": f"{label}, every channel group (the residual width too)", "make": resnet, "selection": args.selection,
            "layers": [], "compose": True,
        },
        "cnn": {"arch": "DigitCNN", "label": "DigitCNN (3 conv + 2 Dense, no BatchNorm)", "make": make_cnn, "selection": args.selection, "layers": [], "compose": False},
    }
    trained: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        networks = [bench_network(specs[name], args, data, shift, trained, folder) for name in args.networks]
    return {
        "benchmark": "scop",
        "command": common.command_line(),
        "git_revision": common.git_revision(),
        "machine": common.machine_info(),
        "versions": {"mindspore": ms.__version__, "numpy": np.__version__, "gscore": gscore.__version__},
        "workload": {
            "data": "MNIST-5k, 4000 train / 1000 test; shift check: sklearn digits (1797, redrawn 28x28)",
            "float_epochs": args.float_epochs, "knockoff_epochs": args.knockoff_epochs, "finetune_epochs": args.finetune_epochs,
            "finetune_learning_rate": args.finetune_lr, "random_seeds": args.random_seeds, "seed": args.seed, "repeat": args.repeat,
            "knockoff_separation": args.separation, "selection": args.selection, "ranking": args.ranking,
        },
        "units": "accuracy as a fraction of the test images; latency in seconds per forward; MACs per image, FLOPs = 2 MACs",
        "load_average_1_5_15min": {"start": load_before, "end": os.getloadavg()},
        "goal": {"min_parameters_removed": 0.45, "max_accuracy_loss_points": 1.0},
        "networks": networks,
    }


def _statistics_kept(method: dict[str, Any]) -> bool:
    """Whether the statistics repair after the refit was kept for this method's network."""
    return bool(method["recalibration"].get("statistics_choice", {}).get("kept"))


def _lead(lead: dict[str, float]) -> str:
    return f"{lead['points']:+.1f} ± {lead['standard_error']:.1f}"


def _nats(lead: dict[str, float]) -> str:
    return f"{1000 * lead['cross_entropy']:+.1f} ± {1000 * lead['cross_entropy_standard_error']:.1f}"


def _surer(lead: dict[str, float]) -> bool:
    """SCOP's cross-entropy is below the baseline's by more than two paired standard errors."""
    return lead["cross_entropy"] < -2.0 * lead["cross_entropy_standard_error"]


def _fmt(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(res: dict[str, Any]) -> str:
    w, m = res["workload"], res["machine"]
    out = [
        "# SCOP channel pruning against random, L1-norm and BN-gamma choices\n\n",
        f"Command: `{res['command']}` (git {res['git_revision'][:12]})\n\n",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores shared with other jobs (load average {res['load_average_1_5_15min']['start'][0]:.1f} "
        f"at the start, {res['load_average_1_5_15min']['end'][0]:.1f} at the end); mindspore {res['versions']['mindspore']}. Data: {w['data']}. "
        f"Float: {w['float_epochs']} epochs at lr 0.001, then {w['finetune_epochs']} at the fine-tune lr. "
        + (f"SCOP: knockoff stage {w['knockoff_epochs']} epochs " if w.get("ranking", "knockoff") == "knockoff" else
           "SCOP: `ranking='reconstruction'` (channels chosen by their cost to the least-squares refit, greedy group OBS; no knockoff stage) ")
        + f"(defaults of `SCOPConfig` otherwise). Fine-tune of every pruned network: {w['finetune_epochs']} epochs at lr {w['finetune_learning_rate']}, same seed.\n\n",
        "Every method keeps the same number of channels in every channel group (the counts SCOP's selection chose), so the rows differ only in "
        "*which* channels they keep. 'cut' = channels removed, nothing repaired; 'statistics only' = the repair of earlier versions "
        "(BatchNorm statistics re-measured, or for the BN-free CNN every layer re-standardised to the float network's output statistics); "
        "'pruned' = after the repair `convert` applies now: every layer that lost input channels refitted by least squares to the float "
        "network's outputs (`reconstruct_images` training images; a convolution without bias gets its intercept in the BatchNorm after it), then the "
        "statistics repair, kept only where it lowers the cross-entropy on training images the refit did not use (column 'statistics kept'); "
        "forward passes only, i.e. right after pruning; "
        "'fine-tuned' = after the common fine-tune. Accuracies in %, "
        "on the 1000 MNIST test images (0.1 pt = one image) and on the 1797 sklearn digits (the distribution-shift check). "
        "Random: mean over the seeds, and the best seed in brackets.\n\n",
    ]
    for net in res["networks"]:
        f = net["float"]
        out.append(f"## {net['network']}\n\n")
        out.append(
            f"Float: MNIST {_fmt(f['accuracy']['mnist'])} %, sklearn digits {_fmt(f['accuracy']['sklearn_digits'])} %; {f['parameters']:,} parameters, "
            f"{2 * f['macs_per_image'] / 1e6:.2f} MFLOPs/image. SCOP selection `{net['selection']}`.\n\n"
        )
        header = ["rate", "params removed", "FLOPs removed", "method", "cut", "statistics only", "statistics kept after the refit", "pruned", "pruned, sklearn", "fine-tuned", "fine-tuned, sklearn"]
        rows = []
        for r in net["rates"]:
            methods = r["methods"]
            random = [v for k, v in methods.items() if k.startswith("random")]
            named = [(k, v) for k, v in methods.items() if not k.startswith("random")]
            first = True
            for name, v in named:
                rows.append([
                    f"{r['prune_rate']}" if first else "", f"{r['parameters_removed']:.1%}" if first else "", f"{r['flops_removed']:.1%}" if first else "",
                    f"**{name}**" if name == "SCOP" else name, _fmt(v["accuracy_channels_cut"]), _fmt(v["accuracy_statistics_only"]),
                    "yes" if _statistics_kept(v) else "no", _fmt(v["after_pruning"]["mnist"]),
                    _fmt(v["after_pruning"]["sklearn_digits"]), _fmt(v["after_finetune"]["mnist"]), _fmt(v["after_finetune"]["sklearn_digits"]),
                ])
                first = False
            if random:
                def cell(get: Callable[[dict[str, Any]], float]) -> str:
                    values = [get(v) for v in random]
                    return f"{_fmt(float(np.mean(values)))} ({_fmt(max(values))})"

                rows.append([
                    "", "", "", f"random ({len(random)} seeds)", cell(lambda v: v["accuracy_channels_cut"]), cell(lambda v: v["accuracy_statistics_only"]),
                    f"{sum(_statistics_kept(v) for v in random)} of {len(random)}", cell(lambda v: v["after_pruning"]["mnist"]),
                    cell(lambda v: v["after_pruning"]["sklearn_digits"]), cell(lambda v: v["after_finetune"]["mnist"]), cell(lambda v: v["after_finetune"]["sklearn_digits"]),
                ])
        out.append(common.md_table(header, rows))
        out.append("\n")
        verdicts = []
        for r in net["rates"]:
            methods = r["methods"]
            scop = methods["SCOP"]
            others = {k: v for k, v in methods.items() if k != "SCOP"}
            ahead_pruned = all(scop["after_pruning"]["mnist"] > v["after_pruning"]["mnist"] for v in others.values())
            at_least_ft = all(scop["after_finetune"]["mnist"] >= v["after_finetune"]["mnist"] for v in others.values())
            surer = all(_surer(v["scop_lead"]["after_pruning"]) for v in others.values())
            verdicts.append(
                f"rate {r['prune_rate']}: SCOP {'ahead of every baseline' if ahead_pruned else '**not** ahead of every baseline'} right after pruning "
                f"({'a lower' if surer else '**not** a lower'} cross-entropy than every baseline by over two standard errors), "
                f"{'matching or beating them' if at_least_ft else '**behind** at least one'} after fine-tuning; "
                f"SCOP {-r['scop_accuracy_loss_points_vs_float']:+.1f} pt against float after fine-tuning at {r['parameters_removed']:.1%} parameters removed "
                f"(goal >= 45 % at <= 1 pt: {'met' if r['meets_goal'] else 'not met'})"
            )
        out.append("Verdicts (MNIST test split): " + "; ".join(verdicts) + ".\n\n")
        baselines = [k for k in net["rates"][0]["methods"] if k != "SCOP"]
        for intro, cell in (
            ("SCOP's lead over each baseline on the same 1000 test images, points ± paired standard error (a lead within about two "
             "standard errors can be chance):\n\n", _lead),
            ("The same comparison in test cross-entropy, millinats per image ± paired standard error (negative: SCOP's network puts more "
             "probability on the right labels; this separates networks whose accuracies tie):\n\n", _nats),
        ):
            rows = [
                [f"{r['prune_rate']}", label] + [cell(r["methods"][k]["scop_lead"][stage]) for k in baselines]
                for r in net["rates"] for stage, label in (("after_pruning", "right after pruning"), ("after_finetune", "fine-tuned"))
            ]
            out.append(intro)
            out.append(common.md_table(["rate", "stage"] + [f"SCOP − {k}" for k in baselines], rows))
            out.append("\n")
        r0 = net["rates"][0]
        out.append("Channel groups (convolutions tied by residual additions share one keep-plan): "
                   + "; ".join(f"`{k}`: {', '.join(v)}" for k, v in r0["groups"].items()) + ". ")
        if r0["skipped_convolutions"]:
            out.append("Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in r0["skipped_convolutions"].items()) + ". ")
        out.append("Kept channels per rate: " + "; ".join(f"{r['prune_rate']}: {r['kept_channels']}" for r in net["rates"]) + ". ")
        out.append("Seconds per rate of `apply` (the knockoff stage, or tracing only) and `convert` (choice, cut and repair): "
                   + ", ".join(f"{r['seconds']['knockoff']:.0f} / {r['seconds']['convert']:.0f}" for r in net["rates"]) + ". ")
        out.append("Every SCOP checkpoint was saved with its description, rebuilt with `load_pruned` into a fresh network and gave identical outputs.\n\n")
        batches = sorted(r0["latency"]["float"], key=lambda k: int(k.split("_")[1]))
        out.append("Latency, ms per forward (SCOP network, float in brackets, best of the interleaved repetitions): "
                   + "; ".join(f"rate {r['prune_rate']}: " + ", ".join(
                       f"{b.replace('_', ' ')} {1000 * r['latency']['pruned'][b]['best_s']:.1f} ({1000 * r['latency']['float'][b]['best_s']:.1f})" for b in batches)
                       for r in net["rates"]) + ".\n\n")
        comp = net.get("composition")
        if comp:
            out.append(
                f"Composition on the fine-tuned SCOP network of rate {comp['prune_rate']}: RTN ({comp['rtn']['what']}) {_fmt(comp['rtn']['accuracy'])} %; "
                f"SimQAT ({comp['simqat']['what']}) {_fmt(comp['simqat']['accuracy'])} %.\n\n"
            )
    return "".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--networks", nargs="+", default=["resnet-inner", "resnet", "cnn"], choices=["resnet-inner", "resnet", "cnn"])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="DigitsResNet stage widths")
    p.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--ranking", default="reconstruction", choices=["knockoff", "reconstruction"], help="SCOPConfig.ranking of the SCOP rows")
    p.add_argument("--selection", default="layer", choices=["layer", "global"], help="SCOP's selection; the baselines keep SCOP's per-group counts")
    p.add_argument("--float-epochs", type=int, default=5)
    p.add_argument("--knockoff-epochs", type=int, default=None, help="knockoff_epochs (default: SCOPConfig's)")
    p.add_argument("--separation", type=float, default=None, help="knockoff_separation (default: SCOPConfig's)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--compose-rate", type=float, default=0.5, help="prune rate whose ResNet is also quantized")
    p.add_argument("--latency-batches", type=int, nargs="+", default=[1, 250])
    p.add_argument("--repeat", type=int, default=10, help="latency repetitions (best counts); the cores are shared, so take many")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="scop", help="results go to bench/results/<name>.json and .md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    common.write_results(args.name, res, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
