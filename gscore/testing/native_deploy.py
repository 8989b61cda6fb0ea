"""What "deployed equals simulated" means for a QAT network deployed onto the native kernels.

With ``GSCORE_KERNELS=portable`` a deployed layer dequantises its integer codes and runs the
float op, so the deployed network equals the simulated one bit for bit. With native kernels
each layer is one integer operator on the same codes (``tests/test_int8_layer.py``: exact
against numpy, within float32 rounding of the dequantising layer); through a network an
activation within rounding of a code boundary can take the neighbouring code, so logits agree
within :data:`NATIVE_LOGIT_TOL` of their largest magnitude and predictions within
:data:`NATIVE_PREDICTION_AGREEMENT`.
"""

from __future__ import annotations

import numpy as np

NATIVE_LOGIT_TOL = 0.02  # measured: 0.12 % (LeNet5), 0.21 % (ResNet) in bench/results/qat_deploy.md
NATIVE_PREDICTION_AGREEMENT = 0.98


def assert_native_deploy_close(deployed: np.ndarray, simulated: np.ndarray) -> None:
    """The kernel-deployed network's logits ``[n, classes]`` against the simulated network's."""
    np.testing.assert_allclose(deployed, simulated, rtol=0, atol=NATIVE_LOGIT_TOL * np.abs(simulated).max())
    assert (deployed.argmax(axis=1) == simulated.argmax(axis=1)).mean() >= NATIVE_PREDICTION_AGREEMENT


def native_layers(net: object) -> list[str]:
    """Names of the deployed layers of ``net`` (a MindSpore cell) that run the native integer operator."""
    from gscore.nn.quant_layer import QuantLayer

    return [name for name, cell in net.cells_and_names() if isinstance(cell, QuantLayer) and cell.native is not None]
