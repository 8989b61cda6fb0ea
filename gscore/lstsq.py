"""Least squares for refitting a layer to reproduce outputs (numpy only, no MindSpore).

After pruning, a layer that lost input channels can often compute almost what it computed
before from the channels that remain: its weights are re-solved so that, on data, its outputs
match the unpruned layer's (He et al., "Channel Pruning for Accelerating Very Deep Neural
Networks", 2017; ThiNet). A convolution is a linear map of its input patches, so both cases
are the same ridge regression ``min ||X W - Y||^2 + ridge * mean(diag(X^T X)) * ||W||^2``:

* :func:`conv_patches` turns a convolution's input ``[n, c, h, w]`` into the patch matrix
  ``[n * oh * ow, c * kh * kw]`` (im2col) whose product with the weight ``[out, c, kh, kw]``
  reshaped to ``[out, c * kh * kw]`` is the convolution's output without bias;
* :class:`NormalEquations` accumulates ``X^T X`` and ``X^T Y`` batch by batch (memory is
  ``features^2``, whatever the number of rows) and solves them.
"""

from __future__ import annotations

import numpy as np


def conv_patches(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], pads: tuple[int, int, int, int]
) -> np.ndarray:
    """Patch matrix ``[n * oh * ow, c * kh * kw]`` of ``x`` (``[n, c, h, w]``), rows in (n, oh, ow)
    order, columns in (c, kh, kw) order; ``pads`` = (top, bottom, left, right) zeros."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    n, c, hp, wp = x.shape
    oh = (hp - (kh - 1) * dh - 1) // sh + 1
    ow = (wp - (kw - 1) * dw - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel (dilation {dh}x{dw}) does not fit a padded {hp}x{wp} input")
    cols = np.empty((n, oh, ow, c, kh, kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            cols[:, :, :, :, i, j] = window.transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, c * kh * kw)


def same_pads(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zeros of ``pad_mode="same"``: output ``ceil(size / stride)``,
    the odd zero at the bottom / right (TensorFlow's and MindSpore's rule)."""
    pads = []
    for length, k, s, d in zip(size, kernel, stride, dilation):
        out = -(-length // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - length, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class NormalEquations:
    """``X^T X`` and ``X^T Y`` of a ridge regression, accumulated in float64 over batches of rows.

    ``intercept=True`` appends a column of ones to ``X`` (a bias), which is not penalised.
    """

    def __init__(self, features: int, outputs: int, intercept: bool) -> None:
        width = features + int(intercept)
        self.intercept = intercept
        self.gram = np.zeros((width, width))
        self.cross = np.zeros((width, outputs))
        self.rows = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add rows ``x`` ``[r, features]`` with targets ``y`` ``[r, outputs]``."""
        x = np.asarray(x, np.float64)
        if self.intercept:
            x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        self.gram += x.T @ x
        self.cross += x.T @ np.asarray(y, np.float64)
        self.rows += len(x)

    def solve(self, ridge: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Weights ``[outputs, features]`` and the bias ``[outputs]`` (None without intercept).

        ``ridge`` is relative to the mean of the diagonal of ``X^T X`` (scale-free), so
        redundant or constant inputs (e.g. the zero padding of a patch) still give one solution.
        """
        if self.rows == 0:
            raise ValueError("no rows were added")
        gram = self.gram.copy()
        n = len(gram) - int(self.intercept)
        penalty = ridge * max(float(np.trace(gram[:n, :n])) / max(n, 1), 1e-30)
        gram[np.arange(n), np.arange(n)] += penalty
        solution = np.linalg.lstsq(gram, self.cross, rcond=None)[0]
        if self.intercept:
            return solution[:-1].T, solution[-1]
        return solution.T, None
