"""The ``scop`` algorithm: ``apply`` = knockoff stage, ``convert`` = physical pruning.

``apply(network, datasets=(images, labels))`` traces the network on two of the images to find
the prunable convolutions (:func:`gscore.nn.trace.channel_groups`), wraps each in a
:class:`~gscore_scop.knockoff.KnockoffConv2d` and, if ``knockoff_epochs > 0``, trains the
coefficients. ``convert(network)`` scores the channels, chooses the ones to keep, puts the
plain convolutions back into ``network`` (which is thus the float network again) and returns a
NEW, physically smaller network (:func:`gscore.nn.shrink.shrink`) whose BatchNorm statistics are
re-estimated on the ``apply`` images (``recalibrate_batches``). Fine-tune that one with any
MindSpore training; :meth:`SCOP.describe` is the checkpoint description from which
:func:`load_pruned` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gscore import PruningAlgorithm
from gscore.errors import CalibrationDataError, CheckpointMismatchError, ConfigError, PhaseOrderError, data_errors
from gscore_scop.config import SCOPConfig
from gscore_scop.scoring import channel_scores, select_channels

if TYPE_CHECKING:  # MindSpore is imported when a phase runs, not when gscore lists algorithms
    from mindspore import nn

    from gscore.nn.shrink import ShrinkPlan
    from gscore.nn.trace import ChannelGroup, ChannelGroups
    from gscore.train.classifier import TrainResult

DESCRIPTION_KEY = "pruning"


class SCOP(PruningAlgorithm):
    """SCOP channel pruning: knockoff-scored channels physically removed from Conv2d, BN and consumers."""

    config_cls = SCOPConfig

    def __init__(self, config: SCOPConfig | dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.groups: dict[str, ChannelGroup] = {}
        self.skipped: dict[str, str] = {}
        self.scores: dict[str, np.ndarray] = {}
        self.kept: dict[str, np.ndarray] = {}
        self.plan: ShrinkPlan | None = None
        self._images: np.ndarray | None = None  # the apply images, for BatchNorm recalibration in convert

    # ------------------------------------------------------------------ apply: knockoff stage

    def calibrate(self, network: nn.Cell, network_helper: Any = None, datasets: Any = None) -> nn.Cell:
        """Trace ``network`` (in place), wrap its prunable convolutions, train the coefficients.

        ``datasets`` is ``(images, labels)``: two images are the tracing probe, all of them train
        the knockoff stage. ``network_helper`` is not used (the network is an image classifier).
        """
        from gscore.nn.trace import channel_groups
        from gscore.nn.walk import get_cell, replace_cell
        from gscore_scop.knockoff import KnockoffConv2d

        images, labels = _images_and_labels(datasets)
        cfg = self.config
        if cfg.knockoff_epochs and len(images) < cfg.knockoff_batch_size:
            raise CalibrationDataError(
                f"knockoff training needs at least one full batch: {len(images)} images < knockoff_batch_size {cfg.knockoff_batch_size}; "
                "pass more images or a smaller knockoff_batch_size"
            )
        if any(isinstance(c, KnockoffConv2d) for _, c in network.cells_and_names()):
            raise PhaseOrderError("this network already holds knockoff coefficients: apply runs once per network")
        with data_errors(f"the network cannot run on the given images (each {images.shape[1:]}, float32)"):
            found = channel_groups(network, images[:2])
        self.groups, self.skipped = self._choose(found)
        for name in self.groups:
            replace_cell(network, name, KnockoffConv2d(get_cell(network, name)))
        if cfg.knockoff_epochs:
            with data_errors("knockoff training failed on the given images and labels (are the labels class indices of the network's outputs?)"):
                self.train_knockoff(network, images, labels)
        self._images = images
        return network

    def train_knockoff(self, network: nn.Cell, images: np.ndarray, labels: np.ndarray, epochs: int | None = None, progress: bool = True) -> TrainResult:
        """Train the knockoff coefficients of the network ``apply`` prepared.

        ``epochs`` defaults to the config's ``knockoff_epochs``; batch size, learning rate and
        seed come from the config. Call it again to train longer.
        """
        from gscore_scop.knockoff import train_knockoff

        cfg = self.config
        epochs = cfg.knockoff_epochs if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"knockoff training needs epochs >= 1, got {epochs!r}")
        return train_knockoff(network, images, labels, epochs, cfg.knockoff_batch_size, cfg.knockoff_learning_rate, cfg.seed, progress)

    def _choose(self, found: ChannelGroups) -> tuple[dict[str, ChannelGroup], dict[str, str]]:
        """The groups to prune under ``layers`` / ``opname_blacklist``, and the skipped convolutions with why."""
        from gscore.nn.trace import UnsupportedStructureError
        from gscore.nn.walk import matches_blacklist

        cfg = self.config
        skipped = dict(found.unsupported)
        if cfg.layers:
            convolutions = set(found.groups) | set(found.unsupported)
            for name in cfg.layers:
                if name not in convolutions:
                    raise UnsupportedStructureError(f"layers names {name!r}, which is not a Conv2d the network calls; its Conv2d layers: {sorted(convolutions)}")
                if name in found.unsupported:
                    raise UnsupportedStructureError(f"cannot prune {name}: {found.unsupported[name]}")
            chosen = {name: found.groups[name] for name in cfg.layers}
            skipped.update({name: "not listed in layers" for name in found.groups if name not in chosen})
        else:
            chosen = dict(found.groups)
        for name in [n for n in chosen if matches_blacklist(n, cfg.opname_blacklist)]:
            skipped[name] = "excluded by opname_blacklist"
            del chosen[name]
        if not chosen:
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or "the network calls no Conv2d"
            raise UnsupportedStructureError(f"found no convolution to prune. {reasons}")
        return chosen, skipped

    # ------------------------------------------------------------------ convert: physical pruning

    def prune(self, network: nn.Cell) -> nn.Cell:
        """Score and select channels, restore ``network``'s plain convolutions, return the smaller copy."""
        from mindspore import nn

        from gscore.nn.bn_recalib import recalibrate_batchnorm
        from gscore.nn.shrink import plan_from_groups, shrink
        from gscore.nn.walk import get_cell, replace_cell
        from gscore_scop.knockoff import KnockoffConv2d

        if not self.groups:
            raise PhaseOrderError("convert needs the knockoff network: run apply(network, datasets=(images, labels)) first")
        wrapped = {}
        for name, group in self.groups.items():
            cell = get_cell(network, name)
            if not isinstance(cell, KnockoffConv2d):
                raise PhaseOrderError(f"{name} is a {type(cell).__name__}, not the KnockoffConv2d apply put there: convert the network apply returned")
            gamma = get_cell(network, group.norms[0]).gamma.asnumpy() if group.norms else None
            self.scores[name] = channel_scores(cell.kfscale.asnumpy(), gamma)
            wrapped[name] = cell
        cfg = self.config
        self.kept = select_channels(self.scores, cfg.prune_rate, cfg.selection, cfg.min_channels)
        self.plan = plan_from_groups(self.groups, self.kept)
        for name, cell in wrapped.items():
            replace_cell(network, name, cell.conv)
        pruned = shrink(network, self.plan)
        has_norms = any(isinstance(c, nn.BatchNorm2d) for _, c in pruned.cells_and_names())
        if cfg.recalibrate_batches and has_norms:
            batch = min(cfg.knockoff_batch_size, len(self._images))
            recalibrate_batchnorm(pruned, self._images, max(batch, 2), cfg.recalibrate_batches, cfg.seed)
        return pruned

    def describe(self, network: nn.Cell | None = None) -> dict[str, Any]:
        """The checkpoint description of the pruned network: config, kept channels, shrink plan."""
        if self.plan is None:
            raise PhaseOrderError("nothing pruned yet: describe() follows convert()")
        return {
            "algorithm": type(self).__name__,
            "config": self.config.to_dict(),
            "kept_channels": {name: int(len(k)) for name, k in self.kept.items()},
            DESCRIPTION_KEY: self.plan.to_dict(),
        }


def load_pruned(path: str | Path, network: nn.Cell) -> nn.Cell:
    """Rebuild the pruned network from a fresh ``network`` of the original definition and load ``path``.

    ``path`` is a checkpoint written with ``gscore.io.save_checkpoint(pruned, path,
    description=algo.describe())``; its shrink plan gives the pruned structure, then the
    parameters load strictly. No data or tracing is needed.
    """
    from gscore.io import load_checkpoint, read_description
    from gscore.nn.shrink import ShrinkPlan, shrink

    description = read_description(path)
    if not description or DESCRIPTION_KEY not in description:
        raise CheckpointMismatchError(f"{str(path)!r} holds no pruning description; save it with description=algo.describe()")
    pruned = shrink(network, ShrinkPlan.from_dict(description[DESCRIPTION_KEY]))
    load_checkpoint(path, pruned)
    return pruned


def _images_and_labels(datasets: Any) -> tuple[np.ndarray, np.ndarray]:
    """``datasets`` checked before anything changes: float32 images ``[n, ...]`` (finite, n >= 2)
    and int32 class indices ``[n]`` (>= 0)."""
    usage = (
        "scop's apply needs datasets=(images, labels): numpy arrays of training images (at least 2, "
        "shaped as the network takes them) and their int labels"
    )
    if not isinstance(datasets, (tuple, list)) or len(datasets) != 2:
        raise CalibrationDataError(usage)
    try:
        images, labels = (np.asarray(a) for a in datasets)
    except ValueError as exc:  # ragged nested lists
        raise CalibrationDataError(f"{usage}; got something that is not an array: {exc}") from exc
    if images.dtype.kind not in "biuf" or images.ndim < 2 or labels.ndim != 1:
        raise CalibrationDataError(f"{usage}; got images of dtype {images.dtype} shape {images.shape} and labels of shape {labels.shape}")
    if labels.dtype.kind not in "iuf" or (labels.size and (np.any(labels != np.round(labels)) or labels.min() < 0)):
        raise CalibrationDataError(f"labels must be class indices (integers >= 0), got dtype {labels.dtype}")
    if len(images) < 2 or len(images) != len(labels):
        raise CalibrationDataError(f"scop needs at least 2 images and one label per image, got {len(images)} images and {len(labels)} labels")
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise CalibrationDataError("the images hold NaN or infinite values")
    return images, labels.astype(np.int32, copy=False)
