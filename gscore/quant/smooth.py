"""SmoothQuant's per-input-channel migration scales, in numpy.

Activations with outlier channels quantize badly per tensor; weights do not mind larger
columns. Dividing input channel ``j`` by ``s_j`` and multiplying weight column ``j`` by
``s_j`` leaves ``x @ W.T`` unchanged and moves difficulty from activations to weights:
``s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha)`` (alpha = migration strength, 0..1).
"""

from __future__ import annotations

import numpy as np

from gscore.quant.checks import require_finite

_FLOOR = 1e-5


def smooth_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """Scales ``s`` (``[in]`` float32) from per-channel input and weight-column maxima.

    Channels that never fired or whose weights are all zero get ``s = 1`` (nothing to move);
    both maxima are floored at 1e-5 so the power never sees zero. Non-finite maxima (a NaN
    weight or activation) raise NonFiniteValueError.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    require_finite(np.asarray(act_absmax), "SmoothQuant's input channel maxima (the calibration activations)")
    require_finite(np.asarray(weight_absmax), "SmoothQuant's weight column maxima (the layer weights)")
    act = np.maximum(np.asarray(act_absmax, np.float64), _FLOOR)
    weight = np.maximum(np.asarray(weight_absmax, np.float64), _FLOOR)
    scales = act**alpha / weight ** (1.0 - alpha)
    dead = (np.asarray(act_absmax) <= 0) | (np.asarray(weight_absmax) <= 0)
    return np.where(dead, 1.0, scales).astype(np.float32)
