"""scikit-learn's 1797 real 8x8 digits, redrawn as 28x28 MNIST-style images: a distribution shift.

The digits are another population (UCI optical recognition set: 43 writers, 32x32 bitmaps
block-averaged to 8x8 counts 0..16), so a classifier trained on MNIST sees the same ten classes
in a different style and resolution. Each image is placed the way MNIST places its digits: the
8x8 counts scaled to 0..1, enlarged bilinearly to 20x20 (MNIST's digit box), padded to 28x28 and
shifted so its centre of mass is the image centre. Accuracy on them is the robustness check the
benches report next to the MNIST test split; nothing here is tuned on it.
"""

from __future__ import annotations

import numpy as np

SIDE = 28
BOX = 20


def _mnist_style(counts: np.ndarray) -> np.ndarray:
    """``[n, 8, 8]`` counts 0..16 -> ``[n, 28, 28]`` float32 images in 0..1 (see the module docstring)."""
    from scipy import ndimage

    small = np.clip(counts.astype(np.float64) / 16.0, 0.0, 1.0)
    boxes = ndimage.zoom(small, (1, BOX / small.shape[1], BOX / small.shape[2]), order=1)
    pad = (SIDE - BOX) // 2
    images = np.pad(boxes, ((0, 0), (pad, pad), (pad, pad)))
    centred = np.empty_like(images)
    for i, image in enumerate(images):
        cy, cx = ndimage.center_of_mass(image)
        centred[i] = ndimage.shift(image, ((SIDE - 1) / 2 - cy, (SIDE - 1) / 2 - cx), order=1, mode="constant")
    return np.clip(centred, 0.0, 1.0).astype(np.float32)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images [1797, 28, 28] float32 in 0..1, labels [1797] int32)`` from ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _mnist_style(digits.images), digits.target.astype(np.int32)
