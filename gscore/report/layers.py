"""Per-layer error and activation statistics of a quantized network against its float reference.

Both networks run on the same held-out token windows. For each quantized linear layer, hooks
record:

* the relative output error ``‖Y_q − Y_f‖ / ‖Y_f‖`` (Frobenius norms over all held tokens)
  between the quantized layer's output and the same layer's output in the float reference.
  Each network sees its own input, so the error is *cumulative*: it includes what earlier
  layers added, and a layer that hurts shows as a jump along the depth;
* the absolute maximum of the quantized layer's input per channel ``[in]`` and per token
  (what its input quantizer has to cover: a few huge channels or tokens set a per-tensor range);
* a sample of its input values and the reference's float weight (for histograms).

The float reference must compute in the same basis as the quantized network: an algorithm
that rotates the residual stream or adds a float token prefix prepares its reference the same
way (``prepare_reference`` of the PTQ algorithm), so outputs are compared like for like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from gscore.nn.quant_linear import QuantLinear
from gscore.nn.walk import iter_cells

SAMPLE = 20000  # input values kept per layer for its histogram


@dataclass
class LayerStats:
    """Statistics of one quantized linear layer over the held windows (see module docstring)."""

    name: str
    error_sq: float = 0.0
    reference_sq: float = 0.0
    channel_absmax: np.ndarray | None = None  # float32 [in]
    token_absmax: list[float] = field(default_factory=list)  # one per held token
    input_sample: np.ndarray | None = None  # float32 [<= SAMPLE]
    weight: np.ndarray | None = None  # the reference's float weight [out, in]
    window_tokens: int = 1

    @property
    def relative_error(self) -> float:
        return float(np.sqrt(self.error_sq / self.reference_sq)) if self.reference_sq > 0 else float("nan")

    def outlier_channels(self, top: int = 3) -> list[int]:
        return [int(i) for i in np.argsort(self.channel_absmax)[::-1][:top]]

    def outlier_tokens(self, top: int = 3) -> list[int]:
        """Positions (within their window) of the tokens with the largest input range."""
        return [int(i) % self.window_tokens for i in np.argsort(np.asarray(self.token_absmax))[::-1][:top]]

    @staticmethod
    def _ratio(values: np.ndarray) -> float:
        median = float(np.median(values))
        return float(values.max() / median) if median > 0 else float("inf")

    @property
    def channel_ratio(self) -> float:
        """Largest per-channel input range over the median one (1 = no outlier channel)."""
        return self._ratio(self.channel_absmax)

    @property
    def token_ratio(self) -> float:
        """Largest per-token input range over the median one (1 = no outlier token)."""
        return self._ratio(np.asarray(self.token_absmax))

    def summary(self) -> dict[str, Any]:
        return {
            "layer": self.name,
            "relative_error": self.relative_error,
            "input_absmax": float(self.channel_absmax.max()),
            "channel_ratio": self.channel_ratio,
            "outlier_channels": self.outlier_channels(),
            "token_ratio": self.token_ratio,
            "outlier_tokens": self.outlier_tokens(),
        }


def quantized_layer_names(network: nn.Cell) -> list[str]:
    """Names of the quantized linear layers of a DEPLOY or converted network, in network order."""
    return [name for name, _ in iter_cells(network, lambda c: isinstance(c, QuantLinear))]


def _cells(network: nn.Cell, names: Iterable[str]) -> dict[str, nn.Cell]:
    wanted = set(names)
    return {name: cell for name, cell in network.cells_and_names() if name in wanted}


def _rows(value: Any) -> np.ndarray:
    array = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return array.reshape(-1, array.shape[-1]).astype(np.float32, copy=False)


def _capture(network: nn.Cell, cells: dict[str, nn.Cell], ids: np.ndarray, keep_inputs: bool) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """Run ``network`` on one window; ``{layer: (input rows or None, output rows)}``."""
    seen: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
    handles = []
    for name, cell in cells.items():
        def hook(_cell: nn.Cell, inputs: tuple, output: Any, _name: str = name) -> None:
            seen[_name] = (_rows(inputs[0]) if keep_inputs else None, _rows(output))

        handles.append(cell.register_forward_hook(hook))
    try:
        network.reset_cache()
        network(Tensor(ids[None].astype(np.int32)), 0)
        network.reset_cache()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def layer_stats(quantized: nn.Cell, reference: nn.Cell, windows: np.ndarray, seed: int = 0, progress: bool = True) -> list[LayerStats]:
    """:class:`LayerStats` of every quantized linear layer of ``quantized`` on ``windows`` (int ``[n, T]``)."""
    names = quantized_layer_names(quantized)
    q_cells, f_cells = _cells(quantized, names), _cells(reference, names)
    stats = {name: LayerStats(name) for name in names}
    rng = np.random.default_rng(seed)
    for name, cell in f_cells.items():
        stats[name].weight = cell.weight.asnumpy()
        stats[name].window_tokens = windows.shape[1]
    for ids in tqdm(windows, desc="report", leave=False, disable=not progress):
        ref = _capture(reference, f_cells, ids, keep_inputs=False)
        got = _capture(quantized, q_cells, ids, keep_inputs=True)
        for name in names:
            s = stats[name]
            x, y = got[name]
            y_ref = ref[name][1]
            s.error_sq += float(np.square(y.astype(np.float64) - y_ref).sum())
            s.reference_sq += float(np.square(y_ref.astype(np.float64)).sum())
            absx = np.abs(x)
            s.channel_absmax = absx.max(axis=0) if s.channel_absmax is None else np.maximum(s.channel_absmax, absx.max(axis=0))
            s.token_absmax.extend(absx.max(axis=1).tolist())
            sample = rng.choice(x.reshape(-1), size=min(SAMPLE // len(windows), x.size), replace=False)
            s.input_sample = sample if s.input_sample is None else np.concatenate([s.input_sample, sample])
    return [stats[name] for name in names]


def worst(stats: list[LayerStats], count: int = 10) -> list[LayerStats]:
    """The ``count`` layers with the largest relative output error, worst first."""
    return sorted(stats, key=lambda s: -np.nan_to_num(s.relative_error, nan=-1.0))[:count]
