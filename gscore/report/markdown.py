"""The markdown report: what was run, perplexity when measured, the ten worst layers, the plots."""

from __future__ import annotations

from typing import Any

from gscore.report.plots import short_name


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def layer_spec(layer: dict[str, Any] | None) -> str:
    """``int8 per_channel sym, input StaticInputQuantizer`` from a description's layer entry."""
    if not layer:
        return "-"
    spec = f"{layer.get('dtype')} {layer.get('granularity')}"
    if layer.get("group_size"):
        spec += f"/{layer['group_size']}"
    spec += " sym" if layer.get("symmetric") else " asym"
    if layer.get("input"):
        spec += f", input {layer['input'].replace('InputQuantizer', '').lower()}"
    return spec


def render(report: dict[str, Any]) -> str:
    """Markdown of a report dict (as written to ``report.json``); plots are linked relatively."""
    run = report["run"]
    lines = [
        f"# gscore report: {run['recipe']} on {run['model']}",
        "",
        f"- recipe: `{run['recipe']}` — {report['recipe_description']}",
        f"- checkpoint: `{report['checkpoint']}` ({report['checkpoint_bytes'] / 2**20:.1f} MiB); quantized layers: {len(report['layers'])}",
        f"- calibration: {run['calibration']['windows']} windows × {run['calibration']['tokens']} tokens of `{run['calibration']['source']}`; "
        f"layer statistics on {report['held_windows']} held-out calibration windows",
    ]
    evaluation = report.get("eval")
    if evaluation:
        lines += [
            "",
            f"## Perplexity ({evaluation['windows']} windows × {evaluation['tokens']} tokens of `{evaluation['source']}`)",
            "",
            "| network | perplexity | Δ vs FP32 (± paired standard error) |",
            "|---|---|---|",
            f"| FP32 | {evaluation['fp32_ppl']:.3f} | |",
            f"| {run['recipe']} (deployed from the checkpoint) | {evaluation['quant_ppl']:.3f} | {evaluation['delta_percent']:+.2f} % ± {_fmt(evaluation['delta_stderr'], 2)} |",
        ]
    lines += [
        "",
        "## Ten worst layers",
        "",
        "Relative output error against the float model on the same tokens (cumulative: earlier layers' error included); "
        "input ranges: the largest |x| over the median channel's / median token's (1 = no outliers), with the top channels / token positions.",
        "",
        "| # | layer | rel. error | input max |x| | channel max / median (top channels) | token max / median (top positions) | quantization |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, layer in enumerate(report["worst"], 1):
        lines.append(
            f"| {rank} | `{layer['layer']}` | {_fmt(layer['relative_error'])} | {_fmt(layer['input_absmax'])} | "
            f"{_fmt(layer['channel_ratio'])} ({', '.join(map(str, layer['outlier_channels']))}) | "
            f"{_fmt(layer['token_ratio'])} ({', '.join(map(str, layer['outlier_tokens']))}) | {layer_spec(report['layers'].get(layer['layer']))} |"
        )
    lines += ["", "## Plots", ""]
    for title, plot in report["plots"].items():
        lines += [f"### {title}", "", f"![{title}]({plot})", ""]
    lines.append("Worst layers in the plots: " + ", ".join(short_name(w["layer"]) for w in report["worst"][:3]) + ".")
    return "\n".join(lines) + "\n"
