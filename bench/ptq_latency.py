"""Deployed SmolLM2 against FP32 in one process: prefill latency, decode tokens/s, where time goes.

bench/ptq.py measures each option in its own process, minutes apart, so machine load moves
between them; this script keeps FP32 and every quantized network in memory together and times
them round-robin, so each ratio shares the load. Measured:

* **prefill**: one ``--tokens``-token window through the network, op by op (as deployed) and
  compiled (:class:`gscore.nn.decoding.CompiledDecoder` over caches of that capacity, as a
  serving loop prefills a prompt; compile time not counted), median of ``--repeat`` round-robin
  repetitions each;
* **decode**: a ``--prompt``-token prompt, then ``--new`` greedy tokens through the KV cache,
  with the forward compiled into graphs over preallocated caches
  (:class:`gscore.nn.decoding.CompiledDecoder`, which runs a deployed block as one operator;
  compile time reported apart); tokens/s over the
  new tokens, median of ``--rounds`` round-robin rounds; and against the memory-bandwidth limit
  (parameter bytes read per token / numpy copy bandwidth measured in this run);
* **where the time goes** per token: one profiled pass per network (MindSpore profiler), op
  time by kind (quantized-linear kernels, the float head kernel, MindSpore MatMul, attention,
  fused element-wise kernels, other MindSpore ops); the rest of the wall time is framework overhead (dispatch
  between operators). The profiler slows the pass a little; its wall time is reported with it;
* **decode overhead, step by step** (FP32 and A16W8, ``--steps-tokens`` tokens): op by op
  without native kernels (the state before them), op by op with them, compiled with them,
  compiled with each block's layers as linear groups, compiled with each block as one operator
  and single-token steps run as those operators' kernels without the graph (what the decode
  table runs; ``bench/decode_floor.py`` measures the step with and without the graph);
* **decode at a long context** (FP32 and the ``kv-int8`` networks): a ``--long-prompt``-token
  prompt, then ``--new`` greedy tokens, as the decode table; the cache, not the weights, is then
  a large share of what a step reads, which is where an int8 cache can pay (median of
  ``--rounds`` rounds);
* **calibration** time next to plain float forwards over the same calibration windows.

Usage: python bench/ptq_latency.py [--repeat 3] [--tokens 512] [--calib 8] [--prompt 64] [--new 64] [--rounds 3] [--configs a16w8 ...]
       [--long-prompt 2048] [--output STEM]
Writes bench/results/ptq_latency.json and .md (``--output`` names another stem, e.g. for another machine).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

import gscore
from _common import copy_bandwidth, load_info, md_table, provenance, write_json, write_text
from gscore import PTQConfig, kernels
from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.models.llama import LlamaConfig, build_llama
from gscore.models.llama_helper import LlamaHelper
from gscore.models.smollm2 import load_smollm2
from gscore.nn.decoding import CompiledDecoder
from gscore_ptq.presets import preset

# PTQ presets timed against FP32 (gscore_ptq.presets; a8w8-rotation is the default preset:
# static A8W8 after a residual rotation, with the BOS token as a float KV prefix), some also
# with a variant's algo_args ("preset+variant")
VARIANTS = {"int8-head": {"head": "int8"}}
CONFIGS = ["a16w8", "a16w8+int8-head", "a16w4-g128", "a16w4-g128+int8-head", "a8w8", "a8w8-dynamic", "a8w8-dynamic+int8-head", "a8w8-rotation", "kv-int8", "kv-int8-dynamic"]
# profiler scope fragment -> kind of work (first match wins; scopes are cell paths). The KV
# cache's attention operator, the linear-group operators of a grouped block and a block run
# as one operator are recorded without a cell scope ("Default/Custom-opN"), so they share one kind.
UNSCOPED = "attention + linear groups or whole blocks (norm, q/k/v, RoPE, o, gate/up, down, residual)"
KINDS = [
    ("QuantLinear", "quantized-linear kernels"),
    ("RMSNormOp", "fused element-wise"),
    ("Rotary", "fused element-wise"),
    ("SiluMul", "fused element-wise"),
    ("residual-Add", "fused element-wise"),
    ("Default/Custom", UNSCOPED),
    ("LlamaForCausalLM/Custom", "float head kernel"),  # f32_linear, a grouped network's float output head
]


def load_inputs(tokens: int, calib: int) -> tuple[dict, LlamaConfig, Any, np.ndarray, list[str]]:
    """SmolLM2's weights, config and tokenizer, ``calib`` calibration windows of ``tokens``
    tokens (int32 ``[calib, tokens]``) and the evaluation split's Wikipedia articles."""
    weights, config, tokenizer = load_smollm2()
    articles = load_articles()
    calibration = token_windows(tokenizer, split_articles(articles, "calibration"), tokens, calib)
    return weights, LlamaConfig(**config), tokenizer, calibration, split_articles(articles, "evaluation")


def build(name: str, model_config: LlamaConfig, weights: dict, tokenizer: Any, calibration: np.ndarray) -> tuple[Any, float]:
    """A deployed network for ``name`` (``fp32`` or one of CONFIGS) and its calibration seconds."""
    net = build_llama(model_config, weights)
    if name == "fp32":
        return net, 0.0
    base, _, variant = name.partition("+")
    algo = gscore.get("ptq")(PTQConfig(**preset(base, progress=False, **VARIANTS.get(variant, {}))))
    start = time.perf_counter()
    algo.apply(net, LlamaHelper(tokenizer), datasets=calibration)
    seconds = time.perf_counter() - start
    algo.convert(net)
    return net, seconds


def parameter_bytes(net: Any) -> int:
    """Bytes one decode step reads: every parameter once (each linear weight, the output head;
    norms and scales are small), except the embedding table when the head does not read it
    (an untied or linear head), of which the token lookup reads one row."""
    total = sum(p.nbytes for p in net.get_parameters())
    if net.head_is_linear or not net.config.tie_word_embeddings:
        table = net.model.embed_tokens.embedding_table
        total -= table.nbytes - table.nbytes // table.shape[0]
    return total


def greedy(run: Any, prompt: np.ndarray, new: int) -> tuple[float, list[float], list[int]]:
    """Prefill seconds, per-token step seconds and the tokens of a greedy continuation (asking
    for the last token's logits only, as ``LlamaHelper.generate`` does)."""
    run.reset_cache()
    start = time.perf_counter()
    logits = run(Tensor(prompt), 0, last=True).asnumpy()
    prefill = time.perf_counter() - start
    steps, tokens = [], []
    for position in range(prompt.shape[1], prompt.shape[1] + new):
        token = int(logits[0, -1].argmax())
        tokens.append(token)
        start = time.perf_counter()
        logits = run(Tensor(np.array([[token]], np.int32)), position, last=True).asnumpy()
        steps.append(time.perf_counter() - start)
    run.reset_cache()
    return prefill, steps, tokens


def profile_decode(decoder: CompiledDecoder, prompt: np.ndarray, steps: int) -> dict[str, float]:
    """Milliseconds per token by kind of work, from a profiled pass of ``steps`` decode steps
    (asking for the last token's logits, as :func:`greedy` did: its graphs are compiled), every
    step through the graph (a native step runs no MindSpore operator for the profiler to see)."""
    from mindspore.profiler import Profiler

    decoder.reset_cache()
    native_steps, decoder.native_steps = decoder.native_steps, False  # the profiler sees MindSpore's operators only
    logits = decoder(Tensor(prompt), 0, last=True).asnumpy()
    first = prompt.shape[1] + 1  # the step at prompt.shape[1] compiles the single-token graph (native steps never needed it)
    logits = decoder(Tensor(np.array([[int(logits[0, -1].argmax())]], np.int32)), prompt.shape[1], last=True).asnumpy()
    with tempfile.TemporaryDirectory() as out:
        profiler = Profiler(output_path=out)
        start = time.perf_counter()
        for position in range(first, first + steps):
            logits = decoder(Tensor(np.array([[int(logits[0, -1].argmax())]], np.int32)), position, last=True).asnumpy()
        wall = time.perf_counter() - start
        profiler.stop()
        profiler.analyse()
        table = next(Path(out).rglob("cpu_op_detail_info_0.csv"))
        kinds: dict[str, float] = {}
        with open(table) as f:
            for row in csv.DictReader(f):
                kind = next((k for fragment, k in KINDS if fragment in row["full_op_name"]), None)
                kind = kind or ("MindSpore MatMul" if row["op_type"] in ("MatMul", "BatchMatMul") else "other MindSpore ops")
                kinds[kind] = kinds.get(kind, 0.0) + float(row["op_total_time(ms)"]) / steps
    decoder.reset_cache()
    decoder.native_steps = native_steps
    ops_ms = sum(kinds.values())
    return {"profiled wall": 1e3 * wall / steps, **kinds, "framework overhead": 1e3 * wall / steps - ops_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--calib", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=8)
    parser.add_argument("--steps-tokens", type=int, default=16)
    parser.add_argument("--long-prompt", type=int, default=2048, help="prompt tokens of the long-context decode (0: skip it)")
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS, help="presets to time against FP32")
    parser.add_argument("--output", default="ptq_latency", help="stem of the result files in bench/results")
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    load_start = load_info()
    weights, model_config, tokenizer, calibration, evaluation_articles = load_inputs(args.tokens, args.calib)
    evaluation = token_windows(tokenizer, evaluation_articles, args.tokens, 2)
    window, prompt = Tensor(evaluation[:1]), evaluation[1:, : args.prompt]
    level = kernels.level()

    nets: dict[str, Any] = {}
    calibration_s: dict[str, float] = {}
    nets["fp32"], _ = build("fp32", model_config, weights, tokenizer, calibration)
    start = time.perf_counter()
    for ids in calibration:
        nets["fp32"].reset_cache()
        nets["fp32"](Tensor(ids[None]), 0)
    nets["fp32"].reset_cache()
    calibration_s["float forwards"] = time.perf_counter() - start
    for name in args.configs:
        nets[name], calibration_s[name] = build(name, model_config, weights, tokenizer, calibration)
        print(f"built {name}", flush=True)
    param_bytes = {name: parameter_bytes(net) for name, net in nets.items()}

    prefill: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.repeat):
        for name, net in nets.items():
            net.reset_cache()
            start = time.perf_counter()
            net(window, 0).asnumpy()
            prefill[name].append(time.perf_counter() - start)
            net.reset_cache()
    compiled_prefill = compiled_prefill_times(nets, window, args.repeat)
    print("prefill done", flush=True)

    bandwidth = copy_bandwidth()
    decoders, compile_s = {}, {}
    for name, net in nets.items():
        decoders[name] = CompiledDecoder(net, capacity=args.prompt + args.new)
        start = time.perf_counter()
        greedy(decoders[name], prompt, 1)
        compile_s[name] = time.perf_counter() - start
        print(f"compiled {name} in {compile_s[name]:.0f} s", flush=True)
    decode: dict[str, dict[str, Any]] = {name: {"prefill_s": [], "tokens_per_s": [], "step_s": []} for name in nets}
    for _ in range(args.rounds):
        for name, decoder in decoders.items():
            pre, steps, tokens = greedy(decoder, prompt, args.new)
            decode[name]["prefill_s"].append(pre)
            decode[name]["tokens_per_s"].append(len(steps) / sum(steps))
            decode[name]["step_s"].append(float(np.median(steps)))
            decode[name]["text"] = tokenizer.decode(tokens[:24])
    print("decode done", flush=True)
    where = {name: profile_decode(decoder, prompt, args.profile_steps) for name, decoder in decoders.items()}
    steps_report = overhead_steps(decoders, weights, model_config, tokenizer, calibration, prompt, args.steps_tokens)
    for decoder in decoders.values():
        decoder.close()
    long_decode = {}
    if args.long_prompt:  # after the decoders above closed: a network holds one decoder's caches at a time
        long_prompt = token_windows(tokenizer, evaluation_articles, args.long_prompt, 1)
        long_decode = long_context_decode({n: net for n, net in nets.items() if n == "fp32" or n.startswith("kv-int8")}, long_prompt, args.new, args.rounds)
        print("long-context decode done", flush=True)

    median = {name: float(np.median(t)) for name, t in prefill.items()}
    compiled_median = {name: float(np.median(t)) for name, t in compiled_prefill[False].items()}
    last_median = {name: float(np.median(t)) for name, t in compiled_prefill[True].items()}
    summary = {}
    for name, d in decode.items():
        tps = float(np.median(d["tokens_per_s"]))
        limit = bandwidth / param_bytes[name]
        summary[name] = {
            "tokens_per_s": tps,
            "x_fp32": tps / float(np.median(decode["fp32"]["tokens_per_s"])),
            "bytes_per_token": param_bytes[name],
            "bandwidth_limit_tokens_per_s": limit,
            "of_limit": tps / limit,
            "prefill_ms": 1e3 * float(np.median(d["prefill_s"])),
            "compile_s": compile_s[name],
            "text": d["text"],
        }
    report = {
        **provenance(load_start),
        "kernel_level": level,
        "tokens": args.tokens,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "prefill_median_s": median,
        "prefill_ratio_to_fp32": {name: median[name] / median["fp32"] for name in median},
        "compiled_prefill_median_s": compiled_median,
        "compiled_prefill_ratio_to_fp32": {name: compiled_median[name] / compiled_median["fp32"] for name in compiled_median},
        "compiled_last_prefill_median_s": last_median,
        "compiled_last_prefill_ratio_to_fp32": {name: last_median[name] / last_median["fp32"] for name in last_median},
        "decode": summary,
        "decode_rounds": decode,
        "where_time_goes_ms_per_token": where,
        "overhead_steps": steps_report,
        "long_prompt": args.long_prompt,
        "long_context_decode": long_decode,
        "calibration_s": calibration_s,
    }
    write_json(args.output, report)
    text = markdown(report, args)
    write_text(f"{args.output}.md", text)
    print(text)


def long_context_decode(nets: dict[str, Any], prompt: np.ndarray, new: int, rounds: int) -> dict[str, dict[str, float]]:
    """Decode tokens/s after ``prompt [1, tokens]``, per network, round-robin over ``rounds``
    (median), with its ratio to FP32. The networks' growing caches are given back afterwards."""
    tokens_per_s: dict[str, list[float]] = {name: [] for name in nets}
    decoders = {name: CompiledDecoder(net, capacity=prompt.shape[1] + new) for name, net in nets.items()}
    for decoder in decoders.values():
        greedy(decoder, prompt, 1)  # compile before timing
    for _ in range(rounds):
        for name, decoder in decoders.items():
            _, steps, _ = greedy(decoder, prompt, new)
            tokens_per_s[name].append(len(steps) / sum(steps))
    for decoder in decoders.values():
        decoder.close()
    median = {name: float(np.median(r)) for name, r in tokens_per_s.items()}
    return {name: {"tokens_per_s": m, "x_fp32": m / median["fp32"]} for name, m in median.items()}


def compiled_prefill_times(nets: dict[str, Any], window: Tensor, repeat: int) -> dict[bool, dict[str, list[float]]]:
    """Seconds of ``window``'s prefill through a :class:`CompiledDecoder` of that capacity, per
    network, with every token's logits (``False``) and the last token's only (``True``, what a
    generation prefill asks for), round-robin after one compiling call each; the decoders are
    closed afterwards."""
    decoders = {name: CompiledDecoder(net, capacity=window.shape[1]) for name, net in nets.items()}
    for decoder in decoders.values():
        for last in (False, True):
            decoder(window, 0, last=last).asnumpy()
            decoder.reset_cache()
    times: dict[bool, dict[str, list[float]]] = {last: {name: [] for name in decoders} for last in (False, True)}
    for _ in range(repeat):
        for name, decoder in decoders.items():
            for last in (False, True):
                start = time.perf_counter()
                decoder(window, 0, last=last).asnumpy()
                times[last][name].append(time.perf_counter() - start)
                decoder.reset_cache()
    for decoder in decoders.values():
        decoder.close()
    return times


def overhead_steps(decoders: dict[str, CompiledDecoder], weights: dict, model_config: LlamaConfig, tokenizer: Any, calibration: np.ndarray, prompt: np.ndarray, new: int) -> dict[str, dict[str, float]]:
    """Decode tokens/s of FP32 and A16W8 as decode overhead was removed, round-robin: the
    portable network op by op with growing caches (before native kernels); a kernel network
    with its layers one by one, op by op and compiled, on preallocated caches; compiled with
    each block as linear groups (five operators per block); the compiled decoder as the decode
    table runs it (each block one operator, where the network has quantized layers, and then its
    single-token steps run those operators' kernels without the graph: gscore.nn.native_step)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced(kernels.PORTABLE):
            before = {name: build(name, model_config, weights, tokenizer, calibration)[0] for name in ("fp32", "a16w8") if name in decoders}
    capacity = decoders["fp32"].capacity
    ungrouped = {name: CompiledDecoder(build(name, model_config, weights, tokenizer, calibration)[0], capacity, group_linears=False) for name in before}
    grouped = {name: CompiledDecoder(build(name, model_config, weights, tokenizer, calibration)[0], capacity, fuse_blocks=False) for name in before}
    runs = {
        name: {
            "op by op, no native kernels": before[name],
            "op by op, native kernels": ungrouped[name],
            "compiled, native kernels": ungrouped[name],
            "compiled, native kernels, linear groups": grouped[name],
            "compiled, native kernels, one operator per block, single-token steps without the graph": decoders[name],
        }
        for name in before
    }
    for decoder in (*ungrouped.values(), *grouped.values()):
        greedy(decoder, prompt, 1)  # compile before timing
    rates: dict[str, dict[str, list[float]]] = {name: {step: [] for step in r} for name, r in runs.items()}
    for _ in range(2):
        for name, steps in runs.items():
            for step, run in steps.items():
                if isinstance(run, CompiledDecoder):
                    run.graph = step.startswith("compiled")
                _, seconds, _ = greedy(run, prompt, new)
                rates[name][step].append(len(seconds) / sum(seconds))
    for decoder in (*ungrouped.values(), *grouped.values()):
        decoder.close()
    return {name: {step: float(np.median(r)) for step, r in steps.items()} for name, steps in rates.items()}


def markdown(report: dict[str, Any], args: argparse.Namespace) -> str:
    median, ratio = report["prefill_median_s"], report["prefill_ratio_to_fp32"]
    compiled, compiled_ratio = report["compiled_prefill_median_s"], report["compiled_prefill_ratio_to_fp32"]
    last, last_ratio = report["compiled_last_prefill_median_s"], report["compiled_last_prefill_ratio_to_fp32"]
    load = report["load_start"]["loadavg_1_5_15"][0], report["load_end"]["loadavg_1_5_15"][0]
    lines = [
        "# Deployed SmolLM2-135M against FP32: prefill, decode, where the time goes",
        "",
        f"Command: `{report['command']}` (git {report['git'][:12]}); native kernel level `{report['kernel_level']}`; "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores, load average {load[0]:.1f} at start and {load[1]:.1f} at end "
        "(a shared machine: every ratio below compares networks timed round-robin in this process).",
        "",
        f"## Prefill: one {report['tokens']}-token window (median of {args.repeat})",
        "",
        "Op by op: the network called directly (PyNative). Compiled: through `CompiledDecoder` (graphs over preallocated caches, a deployed block as one operator), compile time not counted. "
        "Both give every token's logits (what perplexity needs); 'last token' is the compiled prefill giving the last token's logits only (`last=True`, what generation asks for: "
        "the output head runs once instead of once per token).",
        "",
        md_table(
            ["network", "op by op s", "x FP32", "compiled s", "x FP32", "compiled, last token s", "x FP32"],
            [[n, f"{median[n]:.2f}", f"{ratio[n]:.2f}x", f"{compiled[n]:.3f}", f"{compiled_ratio[n]:.2f}x", f"{last[n]:.3f}", f"{last_ratio[n]:.2f}x"] for n in median],
        ),
        f"## Decode: {args.prompt}-token prompt, then {args.new} greedy tokens (compiled, median of {args.rounds} rounds)",
        "",
        "`CompiledDecoder` as generation uses it: the prompt through the compiled graph; where every block is one operator and the head "
        "one kernel call (the float head, or an int8 one), each single-token step runs those kernels without the graph (`gscore.nn.native_step`, bit-identical logits). "
        f"Copy bandwidth {report['copy_bandwidth_gb_s']:.1f} GB/s (numpy, this run). Limit = bandwidth / parameter bytes per token.",
        "",
        md_table(
            ["network", "tokens/s", "x FP32", "MB read per token", "limit tokens/s", "of limit", "prompt prefill ms", "compile s", "greedy text (first 24 tokens)"],
            [[n, f"{d['tokens_per_s']:.1f}", f"{d['x_fp32']:.2f}x", f"{d['bytes_per_token'] / 1e6:.0f}", f"{d['bandwidth_limit_tokens_per_s']:.1f}", f"{100 * d['of_limit']:.0f} %", f"{d['prefill_ms']:.0f}", f"{d['compile_s']:.0f}", repr(d["text"])] for n, d in report["decode"].items()],
        ),
        f"## Where a decode step's time goes (ms per token, profiled pass of {args.profile_steps} steps)",
        "",
        "Every profiled step goes through the compiled graph, native steps or not: a native step runs no MindSpore operator for the "
        "profiler to see (`bench/decode_floor.py` splits a graph step into its kernels and the rest, without a profiler).",
        "",
    ]
    kinds = ["profiled wall", UNSCOPED, "quantized-linear kernels", "float head kernel", "MindSpore MatMul", "fused element-wise", "other MindSpore ops", "framework overhead"]
    where = report["where_time_goes_ms_per_token"]
    lines += [md_table(["network", *kinds], [[n, *(f"{w.get(k, 0.0):.1f}" for k in kinds)] for n, w in where.items()])]
    lines += [
        "'framework overhead' = profiled wall time minus the time inside operators: dispatch between operators and the Python step loop.",
        "",
        f"## Decode overhead removed step by step (tokens/s over {args.steps_tokens} greedy tokens, median of 2 rounds)",
        "",
    ]
    steps = report["overhead_steps"]
    names = list(next(iter(steps.values())))
    lines += [md_table(["network", *names], [[n, *(f"{s[k]:.2f}" for k in names)] for n, s in steps.items()])]
    if report.get("long_context_decode"):
        lines += [
            f"## Decode at a long context: {report['long_prompt']}-token prompt, then {args.new} greedy tokens (compiled, median of {args.rounds} rounds)",
            "",
            md_table(["network", "tokens/s", "x FP32"], [[n, f"{d['tokens_per_s']:.1f}", f"{d['x_fp32']:.2f}x"] for n, d in report["long_context_decode"].items()]),
        ]
    base = report["calibration_s"]["float forwards"]
    lines += [f"## Calibration on {args.calib} windows, same process", "", md_table(["what", "s", "x float forwards"], [[n, f"{s:.1f}", f"{s / base:.2f}x"] for n, s in report["calibration_s"].items()])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
