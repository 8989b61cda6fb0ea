"""PNG plots of :class:`~gscore.report.layers.LayerStats` (matplotlib, Agg backend: no display needed).

Each function writes one figure and returns its path. Layer names are shortened to
``<block>.<projection>`` (``12.down_proj``) on axes.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from gscore.errors import GscoreError

if TYPE_CHECKING:
    from gscore.report.layers import LayerStats

DPI = 110


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise GscoreError("report plots need matplotlib: pip install 'matplotlib>=3.8'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _figure(path: Path, rows: int = 1, cols: int = 1, row_height: float = 4.0) -> Iterator[Any]:
    """A figure 11 inches wide with ``rows x cols`` axes (yielded as a 2-D array), written to
    ``path`` when the block ends; the figure is closed either way."""
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(11, row_height * rows), squeeze=False)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def short_name(name: str) -> str:
    """``model.layers.12.mlp.down_proj`` -> ``12.down_proj``."""
    match = re.search(r"layers\.(\d+)\..*?([^.]+)$", name)
    return f"{match.group(1)}.{match.group(2)}" if match else name


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def layer_error(stats: list[LayerStats], path: Path) -> Path:
    """Relative output error of every quantized layer along the network, one colour per projection."""
    with _figure(path) as axes:
        ax = axes[0, 0]
        kinds = sorted({_kind(s.name) for s in stats})
        for kind in kinds:
            idx = [i for i, s in enumerate(stats) if _kind(s.name) == kind]
            ax.scatter(idx, [stats[i].relative_error for i in idx], s=14, label=kind)
        ax.plot(range(len(stats)), [s.relative_error for s in stats], color="0.8", lw=0.8, zorder=0)
        ax.set_yscale("log")
        ax.set_xlabel("quantized layer (network order)")
        ax.set_ylabel("relative output error vs float")
        ax.set_title("Where the error enters: per-layer output error on held-out tokens (cumulative)")
        ax.legend(fontsize=8, ncol=min(len(kinds), 7))
    return path


def activation_ranges(stats: list[LayerStats], path: Path) -> Path:
    """Per layer: the largest input range, the median channel's and the median token's (log scale)."""
    with _figure(path) as axes:
        ax = axes[0, 0]
        x = np.arange(len(stats))
        ax.plot(x, [s.channel_absmax.max() for s in stats], label="max |x| (any channel, any token)")
        ax.plot(x, [np.median(s.channel_absmax) for s in stats], label="median channel's max |x|")
        ax.plot(x, [np.median(s.token_absmax) for s in stats], label="median token's max |x|")
        ax.set_yscale("log")
        ax.set_xlabel("quantized layer (network order)")
        ax.set_ylabel("input |x|")
        ax.set_title("Activation ranges per layer: a gap between max and median means outlier channels or tokens")
        ax.legend(fontsize=8)
    return path


def outliers(worst: list[LayerStats], path: Path) -> Path:
    """For the worst layers: input range per channel and per token position."""
    with _figure(path, rows=len(worst), cols=2, row_height=2.6) as axes:
        for row, s in zip(axes, worst):
            row[0].plot(s.channel_absmax, lw=0.7)
            row[0].set_title(f"{short_name(s.name)}: max |x| per input channel", fontsize=9)
            row[1].plot(s.token_absmax, lw=0.7, color="tab:red")
            row[1].set_title(f"{short_name(s.name)}: max |x| per held token", fontsize=9)
            for ax in row:
                ax.set_yscale("log")
    return path


def histograms(worst: list[LayerStats], path: Path) -> Path:
    """For the worst layers: histograms of the float weight and of the input values (log counts)."""
    with _figure(path, rows=len(worst), cols=2, row_height=2.6) as axes:
        for row, s in zip(axes, worst):
            row[0].hist(s.weight.reshape(-1), bins=200, color="tab:blue", log=True)
            row[0].set_title(f"{short_name(s.name)}: float weight", fontsize=9)
            row[1].hist(s.input_sample, bins=200, color="tab:orange", log=True)
            row[1].set_title(f"{short_name(s.name)}: input values (sample)", fontsize=9)
    return path
