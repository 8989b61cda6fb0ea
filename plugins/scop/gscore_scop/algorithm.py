"""The ``scop`` algorithm: ``apply`` = tracing (and the knockoff stage), ``convert`` = physical pruning.

``apply(network, datasets=(images, labels))`` traces the network on two of the images to find
its channel groups (:func:`gscore.nn.trace.channel_groups`: a convolution alone, or the
convolutions a residual addition ties together), wraps every convolution of the chosen groups in
a :class:`~gscore_scop.knockoff.KnockoffConv2d` sharing its group's coefficients and, if
``knockoff_epochs > 0`` and ``ranking="knockoff"``, trains them. ``convert(network)`` scores the
channels (by default, ``ranking="reconstruction"``, by what their loss costs the refit below;
for ``ranking="knockoff"`` by the knockoff coefficients), chooses the ones to keep (one keep-plan per group), puts the plain
convolutions back into ``network`` (which is thus the float network again) and returns a NEW,
physically smaller network
(:func:`gscore.nn.shrink.shrink`) repaired on the ``apply`` images: the layers that lost input
channels refitted by least squares to the float network's outputs (``reconstruct_images``),
then BatchNorm statistics re-estimated or, without BatchNorm, outputs re-standardised
(``recalibrate_batches``), where that lowers the loss on images the refit did not use.
Fine-tune that one with any MindSpore training; :meth:`SCOP.describe` is the checkpoint
description from which :func:`load_pruned` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gscore import PruningAlgorithm
from gscore.errors import CalibrationDataError, CheckpointMismatchError, ConfigError, PhaseOrderError, data_errors
from gscore_scop.config import KnockoffSCOPConfig, Ranking, SCOPConfig
from gscore_scop.scoring import channel_scale, channel_scores, layer_removals, select_channels

if TYPE_CHECKING:  # MindSpore is imported when a phase runs, not when gscore lists algorithms
    from mindspore import Parameter, nn

    from gscore.nn.shrink import ShrinkPlan
    from gscore.nn.trace import ChannelGroup, ChannelGroups
    from gscore.train.classifier import TrainResult
    from gscore_scop.knockoff import KnockoffConv2d

DESCRIPTION_KEY = "pruning"


class SCOP(PruningAlgorithm):
    """SCOP channel pruning: channels chosen for the refit (or by knockoff), removed from Conv2d, BN and consumers."""

    config_cls = SCOPConfig

    def __init__(self, config: SCOPConfig | dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.groups: dict[str, ChannelGroup] = {}
        self.skipped: dict[str, str] = {}
        self.scores: dict[str, np.ndarray] = {}
        self.kept: dict[str, np.ndarray] = {}
        self.plan: ShrinkPlan | None = None
        self.recalibration: dict[str, Any] = {}
        self.coefficients: dict[str, Parameter] = {}  # group name -> its knockoff coefficients
        self._images: np.ndarray | None = None  # the apply images and labels, for the repair in convert
        self._labels: np.ndarray | None = None

    # ------------------------------------------------------------------ apply: knockoff stage

    def calibrate(self, network: nn.Cell, network_helper: Any = None, datasets: Any = None) -> nn.Cell:
        """Trace ``network`` (in place), wrap its prunable convolutions, train the coefficients.

        ``datasets`` is ``(images, labels)``: two images are the tracing probe, all of them train
        the knockoff stage (not run for ``ranking="reconstruction"``, whose ``convert`` ranks on them). ``network_helper`` is not used (the network is an image classifier).
        """
        from gscore.nn.trace import channel_groups
        from gscore.nn.walk import get_cell, replace_cell
        from gscore_scop.knockoff import KnockoffConv2d, new_coefficients

        images, labels = _images_and_labels(datasets)
        cfg = self.config
        if cfg.knockoff_epochs and cfg.ranking is Ranking.KNOCKOFF and len(images) < cfg.knockoff_batch_size:
            raise CalibrationDataError(
                f"knockoff training needs at least one full batch: {len(images)} images < knockoff_batch_size {cfg.knockoff_batch_size}; "
                "pass more images or a smaller knockoff_batch_size"
            )
        if any(isinstance(c, KnockoffConv2d) for _, c in network.cells_and_names()):
            raise PhaseOrderError("this network already holds knockoff coefficients: apply runs once per network")
        with data_errors(f"the network cannot run on the given images (each {images.shape[1:]}, float32)"):
            found = channel_groups(network, images[:2])
        self.groups, self.skipped = self._choose(found)
        self.coefficients = {}
        for name, group in self.groups.items():
            self.coefficients[name] = new_coefficients(name, group.channels)
            for producer in group.producers:
                replace_cell(network, producer, KnockoffConv2d(get_cell(network, producer), self.coefficients[name]))
        if cfg.knockoff_epochs and cfg.ranking is Ranking.KNOCKOFF:
            with data_errors("knockoff training failed on the given images and labels (are the labels class indices of the network's outputs?)"):
                self.train_knockoff(network, images, labels)
        self._images, self._labels = images, labels
        return network

    def train_knockoff(self, network: nn.Cell, images: np.ndarray, labels: np.ndarray, epochs: int | None = None, progress: bool = True) -> TrainResult:
        """Train the knockoff coefficients of the network ``apply`` prepared.

        ``epochs`` defaults to the config's ``knockoff_epochs``; batch size, learning rate,
        separation and seed come from the config. Each call is one whole run of the separation ramp.
        """
        from gscore_scop.knockoff import train_knockoff

        cfg = self.config
        epochs = cfg.knockoff_epochs if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"knockoff training needs epochs >= 1, got {epochs!r}")
        return train_knockoff(
            network, self.coefficients, images, labels, epochs, cfg.knockoff_batch_size, cfg.knockoff_learning_rate, cfg.knockoff_separation, cfg.seed, progress
        )

    def _choose(self, found: ChannelGroups) -> tuple[dict[str, ChannelGroup], dict[str, str]]:
        """The groups to prune under ``layers`` / ``opname_blacklist``, and the skipped convolutions with why.

        Naming one convolution of a group in ``layers`` prunes the whole group; a blacklisted
        convolution keeps its whole group unpruned.
        """
        from gscore.nn.trace import UnsupportedStructureError
        from gscore.nn.walk import matches_blacklist

        cfg = self.config
        skipped = dict(found.unsupported)
        if cfg.layers:
            convolutions = {p for g in found.groups.values() for p in g.producers} | set(found.unsupported)
            chosen = {}
            for name in cfg.layers:
                if name not in convolutions:
                    raise UnsupportedStructureError(f"layers names {name!r}, which is not a Conv2d the network calls; its Conv2d layers: {sorted(convolutions)}")
                if name in found.unsupported:
                    raise UnsupportedStructureError(f"cannot prune {name}: {found.unsupported[name]}")
                group = found.group_of(name)
                chosen[group.name] = group
            skipped.update({p: "not listed in layers" for n, g in found.groups.items() if n not in chosen for p in g.producers})
            chosen = {n: g for n, g in found.groups.items() if n in chosen}  # execution order, which ranking="reconstruction" walks back
        else:
            chosen = dict(found.groups)
        for name, group in list(chosen.items()):
            banned = [p for p in group.producers if matches_blacklist(p, cfg.opname_blacklist)]
            if banned:
                skipped.update({p: f"excluded by opname_blacklist ({banned[0]} is in its channel group)" for p in group.producers})
                del chosen[name]
        if not chosen:
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or "the network calls no Conv2d"
            raise UnsupportedStructureError(f"found no convolution to prune. {reasons}")
        return chosen, skipped

    # ------------------------------------------------------------------ convert: physical pruning

    def prune(self, network: nn.Cell) -> nn.Cell:
        """Score and select channels, restore ``network``'s plain convolutions, return the smaller, recalibrated copy."""
        from gscore.nn.shrink import plan_from_groups, shrink
        from gscore.nn.walk import get_cell, replace_cell
        from gscore_scop.knockoff import KnockoffConv2d

        if not self.groups:
            raise PhaseOrderError("convert needs the knockoff network: run apply(network, datasets=(images, labels)) first")
        cfg = self.config
        wrapped = {}
        for name, group in self.groups.items():
            cells = [get_cell(network, producer) for producer in group.producers]
            for producer, cell in zip(group.producers, cells):
                if not isinstance(cell, KnockoffConv2d):
                    raise PhaseOrderError(f"{producer} is a {type(cell).__name__}, not the KnockoffConv2d apply put there: convert the network apply returned")
            scale = self._scale(network, group, cells)
            self.scores[name] = scale if cfg.ranking is Ranking.RECONSTRUCTION else channel_scores(cells[0].kfscale.asnumpy().reshape(-1), scale)
            wrapped.update(zip(group.producers, cells))
        for producer, cell in wrapped.items():
            replace_cell(network, producer, cell.conv)
        if cfg.ranking is Ranking.RECONSTRUCTION:
            self.scores.update(self._reconstruction_scores(network))
        self.kept = select_channels(self.scores, cfg.prune_rate, cfg.selection, cfg.min_channels)
        self.plan = plan_from_groups(self.groups, self.kept)
        pruned = shrink(network, self.plan)
        if cfg.reconstruct_images or cfg.recalibrate_batches:
            self.recalibrate(network, pruned, self._images, self._labels)
        return pruned

    def _reconstruction_scores(self, network: nn.Cell) -> dict[str, np.ndarray]:
        """``ranking="reconstruction"``: scores of :func:`~gscore.nn.reconstruct.reconstruction_scores`
        on the images the refit will use. A group no refittable layer reads is not among them: it
        keeps the channel scale as its score (the largest filters or BatchNorm gammas stay)."""
        from gscore.nn.reconstruct import reconstruction_scores

        cfg = self.config
        removals = layer_removals({name: group.channels for name, group in self.groups.items()}, cfg.prune_rate, cfg.min_channels)
        with data_errors(f"the network cannot run on the given images (each {self._images.shape[1:]}, float32)"):
            fit_on = self._images[self._shuffled(len(self._images))[: cfg.reconstruct_images]]
            return reconstruction_scores(network, self.groups, fit_on, removals, seed=cfg.seed)

    def _shuffled(self, count: int) -> np.ndarray:
        """The seed's order of ``count`` images: the refit takes the first ``reconstruct_images``."""
        return np.random.default_rng(self.config.seed).permutation(count)

    @staticmethod
    def _scale(network: nn.Cell, group: ChannelGroup, wrapped: list[KnockoffConv2d]) -> np.ndarray:
        """The group's channel scale (see :func:`gscore_scop.scoring.channel_scale`); ``wrapped``
        are the group's convolutions as apply wrapped them, in ``group.producers`` order."""
        from gscore.nn.walk import get_cell

        gammas = [get_cell(network, norm).gamma.asnumpy() if norm else None for norm in (group.norm_of(p) for p in group.producers)]
        weights = [cell.conv.weight.asnumpy() for cell in wrapped]
        return channel_scale(gammas, weights)

    def recalibrate(self, original: nn.Cell, pruned: nn.Cell, images: np.ndarray, labels: np.ndarray, plan: ShrinkPlan | None = None) -> dict[str, Any]:
        """Repair ``pruned`` (cut from ``original`` by ``plan``, default :attr:`plan`) on ``images`` and their ``labels``, forward passes only.

        First every Conv2d / Dense that lost input channels is refitted by least squares to
        reproduce its outputs in ``original`` on ``reconstruct_images`` of the images
        (:func:`~gscore.nn.reconstruct.reconstruct_layers`; the intercept of a convolution
        without bias goes into the BatchNorm2d after it). Then the statistics repair: a network
        with BatchNorm2d layers gets their statistics re-estimated from ``recalibrate_batches``
        batches (:func:`~gscore.nn.bn_recalib.recalibrate_batchnorm`); one without gets every
        Conv2d / Dense with a bias re-standardised to ``original``'s output mean and spread on
        as many images (:func:`~gscore.nn.bn_recalib.recalibrate_outputs`).

        After a refit the statistics repair is a choice, not a rule: it restores the spread the
        least-squares fit shrinks, and re-normalises the fit's errors along with it. In side
        runs on the digit ResNet the first won for SCOP's channels at prune rates 0.3 and 0.5
        (about one point), the second lost ten points at 0.7. So it is kept only if it lowers the
        cross-entropy on ``images`` the refit did not use (up to ``reconstruct_images`` of them;
        all the images when the refit used every one). ``labels`` are the images' class
        indices. Returns what was done (kept in :attr:`recalibration`).
        """
        from mindspore import Tensor, nn

        from gscore.eval.classification import mean_cross_entropy, predict_logits
        from gscore.nn.reconstruct import following_norms, reconstruct_layers
        from gscore.nn.trace import trace_calls

        images, labels = _images_and_labels((images, labels))
        cfg = self.config
        plan = self.plan if plan is None else plan
        kept = {name: cut.out_keep for name, cut in plan.cuts.items()}
        has_norms = any(isinstance(c, nn.BatchNorm2d) for _, c in pruned.cells_and_names())
        shuffled = self._shuffled(len(images))
        trace = None  # traced only when a step below needs the layer order
        if cfg.reconstruct_images or (cfg.recalibrate_batches and not has_norms):
            trace = trace_calls(pruned, images[:2])
        order = [] if trace is None else list(dict.fromkeys(c.name for c in trace.calls if isinstance(c.cell, (nn.Conv2d, nn.Dense))))
        self.recalibration = {}
        refitted: list[str] = []
        if cfg.reconstruct_images:
            lost_inputs = [name for name in order if _loses_inputs(original, plan, name)]
            fit_on = images[shuffled[: cfg.reconstruct_images]]
            refitted = reconstruct_layers(original, pruned, lost_inputs, fit_on, kept, seed=cfg.seed, norms=following_norms(trace))
            self.recalibration["reconstructed_layers"] = refitted
            self.recalibration["not_reconstructed"] = [name for name in lost_inputs if name not in refitted]
        if not cfg.recalibrate_batches:
            return self.recalibration
        if not refitted:
            self.recalibration.update(self._repair_statistics(original, pruned, images, shuffled, order, kept, has_norms))
            return self.recalibration
        unused = shuffled[cfg.reconstruct_images : 2 * cfg.reconstruct_images]
        judge = unused if len(unused) else shuffled
        refit_state = {p.name: p.asnumpy() for p in pruned.get_parameters()}

        def judged_loss() -> float:
            return mean_cross_entropy(predict_logits(pruned, images[judge]), labels[judge])

        with data_errors("the labels must be class indices of the network's outputs"):
            loss_refit = judged_loss()
        done = self._repair_statistics(original, pruned, images, shuffled, order, kept, has_norms)
        loss_repaired = judged_loss()
        keep_repair = loss_repaired < loss_refit
        if keep_repair:
            self.recalibration.update(done)
        else:
            for parameter in pruned.get_parameters():
                parameter.set_data(Tensor(refit_state[parameter.name]))
        self.recalibration["statistics_choice"] = {
            "kept": bool(keep_repair), "loss_after_refit": loss_refit, "loss_with_statistics": loss_repaired,
            "judged_on_images": int(len(judge)), "held_out": bool(len(unused)),
        }
        return self.recalibration

    def _repair_statistics(
        self, original: nn.Cell, pruned: nn.Cell, images: np.ndarray, shuffled: np.ndarray, order: list[str], kept: dict[str, Any], has_norms: bool
    ) -> dict[str, Any]:
        """The statistics repair of :meth:`recalibrate` (``shuffled``: the seed's order of ``images``); what it did."""
        from gscore.nn.bn_recalib import recalibrate_batchnorm, recalibrate_outputs

        cfg = self.config
        if has_norms:
            batch = max(min(cfg.knockoff_batch_size, len(images)), 2)
            return {"batchnorm_batches": recalibrate_batchnorm(pruned, images, batch, cfg.recalibrate_batches, cfg.seed)}
        restandardise_on = images[shuffled[: cfg.recalibrate_batches * cfg.knockoff_batch_size]]
        return {"restandardised_layers": recalibrate_outputs(original, pruned, order, restandardise_on, kept)}

    def describe(self, network: nn.Cell | None = None) -> dict[str, Any]:
        """The checkpoint description of the pruned network: config, kept channels, shrink plan."""
        if self.plan is None:
            raise PhaseOrderError("nothing pruned yet: describe() follows convert()")
        return {
            "algorithm": type(self).__name__,
            "config": self.config.to_dict(),
            "kept_channels": {name: int(len(k)) for name, k in self.kept.items()},
            "groups": {name: list(group.producers) for name, group in self.groups.items()},
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


class KnockoffSCOP(SCOP):
    """SCOP with the paper's knockoff ranking by default, as Golden Stick's PrunerKf/FtCompressAlgo."""

    config_cls = KnockoffSCOPConfig


def _loses_inputs(original: nn.Cell, plan: ShrinkPlan, name: str) -> bool:
    """Whether layer ``name`` reads fewer inputs after ``plan`` than in ``original`` (a group that
    keeps every channel still lists its readers, which then need no refit)."""
    from gscore.nn.walk import get_cell

    cut = plan.cuts.get(name)
    return cut is not None and cut.in_keep is not None and len(cut.in_keep) < get_cell(original, name).in_channels


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
