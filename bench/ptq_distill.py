"""Study: end-to-end tuning of a deployed 4-bit SmolLM2's weight scales against the float model.

GPTQ, the clipping search and the scale refit each fit one layer to its own inputs; what the
network loses is the sum of every layer's error, as the next-token distribution sees it. This
study keeps every integer code GPTQ chose and trains only the weight scales (one per output row
and group of 128 inputs, 0.9 M numbers for SmolLM2-135M) to bring the deployed network's
next-token distribution back to the float model's: loss = KL(float || quantized), averaged over
the tokens of each calibration window, Adam, one window per step, codes and every other
parameter frozen. The calibration windows are the ones the preset calibrated on; perplexity is
measured on the evaluation windows after every epoch (paired against FP32 and against the
untuned network), so the table shows the whole curve, not a chosen epoch.

Training runs on MindSpore's ops path (``GSCORE_KERNELS=portable`` for the trained copy: the
native kernels have no backward); evaluation runs on a second, native-kernel copy of the same
deployed network whose scales are copied over after every epoch.

Usage: python bench/ptq_distill.py [--preset a16w4-g128-rotation-clip-gptq] [--eval 16] [--calib 8]
       [--tokens 512] [--lr 3e-5] [--epochs 4] [--output ptq_distill]
Writes bench/results/<output>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, command_line, git_revision, machine_info, md_table, write_results
from ptq import windows_file

SCALE_SUFFIX = "_weight_quantizer.scale"


def deployed_network(model_config, weights, tokenizer, fields: dict, ckpt: Path):
    """A fresh network deployed from ``ckpt`` with ``fields`` (kernels as currently enabled)."""
    import gscore
    from gscore import PTQConfig
    from gscore.io import load_checkpoint
    from gscore.models.llama import build_llama
    from gscore.models.llama_helper import LlamaHelper

    net = build_llama(model_config, weights)
    deploy = gscore.get("ptq")(PTQConfig(mode="deploy", **fields))
    deploy.convert(deploy.apply(net, LlamaHelper(tokenizer)))
    load_checkpoint(ckpt, net)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="a16w4-g128-rotation-clip-gptq")
    parser.add_argument("--eval", type=int, default=16)
    parser.add_argument("--calib", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--output", default="ptq_distill")
    args = parser.parse_args()

    import mindspore as ms
    from mindspore import Tensor, nn, ops

    import gscore
    from gscore import PTQConfig, kernels
    from gscore.eval.perplexity import llama_forward, log_softmax, paired_delta, window_nll
    from gscore.io import save_checkpoint
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper
    from gscore.models.smollm2 import load_smollm2
    from gscore_ptq.presets import preset

    RESULTS.mkdir(exist_ok=True)
    data = np.load(windows_file(args, RESULTS / f".{args.output}-windows.npz"))
    calibration, evaluation = data["calibration"], data["evaluation"]
    weights, config, tokenizer = load_smollm2()
    model_config = LlamaConfig(**config)

    float_forward = llama_forward(build_llama(model_config, weights))
    reference_nll = window_nll(float_forward, evaluation)
    teacher = [log_softmax(float_forward(ids)).astype(np.float32) for ids in calibration]
    del float_forward

    fields = preset(args.preset, progress=False)
    net = build_llama(model_config, weights)
    algo = gscore.get("ptq")(PTQConfig(**fields))
    start = time.perf_counter()
    algo.apply(net, LlamaHelper(tokenizer), datasets=calibration)
    calibration_s = time.perf_counter() - start
    algo.convert(net)
    ckpt = RESULTS / f".{args.output}.ckpt"
    save_checkpoint(net, ckpt, description=algo.describe(net))
    del net

    evaluated = deployed_network(model_config, weights, tokenizer, fields, ckpt)
    with kernels.forced("portable"):
        student = deployed_network(model_config, weights, tokenizer, fields, ckpt)
    ckpt.unlink()
    untuned_nll = window_nll(llama_forward(evaluated), evaluation)
    scales = {name: p for name, p in student.parameters_and_names() if name.endswith(SCALE_SUFFIX)}
    for p in scales.values():
        p.requires_grad = True
    targets = {name: p for name, p in evaluated.parameters_and_names() if name.endswith(SCALE_SUFFIX)}

    def kl_loss(ids: Tensor, teacher_logp: Tensor) -> Tensor:
        student.reset_cache()
        logp = ops.log_softmax(student(ids, 0)[0], -1)
        return (ops.exp(teacher_logp) * (teacher_logp - logp)).sum(-1).mean()

    grad_fn = ms.value_and_grad(kl_loss, None, weights=list(scales.values()))
    optimizer = nn.Adam(list(scales.values()), learning_rate=args.lr)
    epochs = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        losses = []
        for i in np.random.default_rng(epoch).permutation(len(calibration)):
            loss, grads = grad_fn(Tensor(calibration[i][None].astype(np.int32)), Tensor(teacher[i]))
            optimizer(grads)
            losses.append(float(loss.asnumpy()))
        train_s = time.perf_counter() - start
        student.reset_cache()
        for name, p in scales.items():
            targets[name].set_data(Tensor(p.asnumpy()))
        nll = window_nll(llama_forward(evaluated), evaluation)
        epochs.append({"epoch": epoch + 1, "kl_calibration": float(np.mean(losses)), "train_s": train_s, "nll": nll.tolist()})
        print(f"epoch {epoch + 1}: KL {np.mean(losses):.4f}, {paired_delta(nll, reference_nll)} vs FP32, {paired_delta(nll, untuned_nll)} vs untuned", flush=True)

    report = {
        "command": command_line(),
        "git": git_revision(),
        "machine": machine_info(),
        "windows": {"eval": args.eval, "calib": args.calib, "tokens": args.tokens},
        "preset": args.preset,
        "config": fields,
        "learning_rate": args.lr,
        "trained_scales": int(sum(int(np.prod(p.shape)) for p in scales.values())),
        "calibration_s": calibration_s,
        "reference_nll": reference_nll.tolist(),
        "untuned_nll": untuned_nll.tolist(),
        "epochs": epochs,
    }
    for tmp in RESULTS.glob(f".{args.output}-*"):
        tmp.unlink()
    write_results(args.output, report, markdown)


def markdown(report: dict) -> str:
    from gscore.eval.perplexity import paired_delta

    reference, untuned = np.array(report["reference_nll"]), np.array(report["untuned_nll"])
    w = report["windows"]
    lines = [
        f"# End-to-end weight-scale tuning of {report['preset']} on SmolLM2-135M",
        "",
        f"Command: `{report['command']}` (git {report['git'][:12]}) on {report['machine']['cpu_model']} ({report['machine']['usable_cores']} cores).",
        "",
        f"{w['eval']} evaluation x {w['tokens']} tokens, {w['calib']} calibration windows (the same windows the preset calibrated on train the scales). "
        f"Trained: {report['trained_scales']:,} weight scales (integer codes frozen), Adam lr {report['learning_rate']}, one window per step, "
        "loss KL(float || quantized) per token. Δ: perplexity change ± its paired standard error over evaluation windows. "
        f"Calibration of the preset itself: {report['calibration_s']:.0f} s.",
        "",
        md_table(
            ["epochs", "KL on calibration windows (mean over the epoch's steps)", "PPL", "Δ vs FP32", "Δ vs untuned", "training s (epoch)"],
            [["0 (preset as calibrated)", "—", f"{np.exp(untuned.mean()):.3f}", paired_delta(untuned, reference), "—", "—"]]
            + [
                [row["epoch"], f"{row['kl_calibration']:.4f}", f"{np.exp(np.mean(row['nll'])):.3f}", paired_delta(np.array(row["nll"]), reference), paired_delta(np.array(row["nll"]), untuned), f"{row['train_s']:.0f}"]
                for row in report["epochs"]
            ],
        ).rstrip("\n"),
    ]
    lines += ["", f"FP32 perplexity on the same windows: {np.exp(reference.mean()):.3f}.", "", "Config: `" + json.dumps(report["config"]) + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
