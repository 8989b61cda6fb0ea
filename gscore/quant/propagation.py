"""The weight a layer should reproduce when its inputs carry the error of the layers before it.

Layer-by-layer GPTQ calibrates each layer on the inputs the quantized network gives it
(``x``) and makes ``Q x`` close to ``W x``. Those inputs already differ from the float
network's (``x_ref``) by the error of every earlier quantized layer, and the target ``W x``
keeps that error. Aiming at the float output instead, ``min_Q Σ ‖W x_ref − Q x‖²``, is GPTQ on
the same Hessian with the target weight

    W* = W C H⁻¹ = W + W D H⁻¹,   H = Σ x xᵀ,   D = Σ (x_ref − x) xᵀ,   C = H + D,

since ``Σ ‖W x_ref − Q x‖² = tr((W* − Q) H (W* − Q)ᵀ) + const``. The correction ``W D H⁻¹``
is a least-squares fit on the calibration tokens; fitted in full it overfits them (and the
inverse of a near-singular ``H`` amplifies noise), so ``alpha`` in [0, 1] takes that share of it
and ``H`` is damped as GPTQ damps it ("Quantization Error Propagation", Arai & Ichikawa, 2025;
GPTAQ, Li et al., 2025, aim at the same asymmetric objective).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gscore.quant.checks import require_finite


def propagated_target(weight: npt.ArrayLike, hessian: npt.ArrayLike, shift: npt.ArrayLike, alpha: float, damp_percent: float = 0.01) -> np.ndarray:
    """``W + alpha · W D (H + λI)⁻¹`` (module docstring), float32 ``[out, in]``.

    Args:
        weight: ``W [out, in]``.
        hessian: ``H [in, in]``, e.g. ``2XᵀX/rows`` (:class:`~gscore.quant.HessianAccumulator`).
        shift: ``D [in, in]`` on the same scale as ``hessian``
            (:class:`~gscore.quant.stats.ShiftAccumulator`).
        alpha: share of the correction, in [0, 1] (0 returns ``W``).
        damp_percent: ``λ = damp_percent · mean(diag H)``; inputs never active on the
            calibration rows (``H_ii = 0``) get no correction (their columns of ``W`` are
            left as they are; what they carried in the float network is fitted from the others).
    """
    w = np.asarray(weight, dtype=np.float32)
    h = np.asarray(hessian, dtype=np.float64)
    d = np.asarray(shift, dtype=np.float64)
    if w.ndim != 2 or h.shape != (w.shape[1], w.shape[1]) or d.shape != h.shape:
        raise ValueError(f"weight [out, in], hessian and shift [in, in] must agree, got {w.shape}, {h.shape}, {d.shape}")
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= damp_percent <= 1.0:
        raise ValueError(f"alpha and damp_percent must be in [0, 1], got {alpha!r} and {damp_percent!r}")
    require_finite(h, "hessian")
    require_finite(d, "shift")
    if alpha == 0.0:
        return w.copy()
    live = np.diag(h) > 0
    damped = h[np.ix_(live, live)] + damp_percent * float(np.mean(np.diag(h)[live])) * np.eye(int(live.sum()))
    correction = np.zeros(w.shape, np.float64)
    correction[:, live] = np.linalg.solve(damped, (w.astype(np.float64) @ d[:, live]).T).T
    return (w + alpha * correction).astype(np.float32)
