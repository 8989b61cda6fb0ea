"""SCOPConfig: how many channels to remove, how to choose them, how to train the knockoff stage;
KnockoffSCOPConfig: the same with the SCOP paper's knockoff ranking as the default.

Fields (all validated in ``__post_init__``; a bad value raises ``ConfigError`` saying what is
allowed):

* ``prune_rate`` -- fraction of the prunable convolutions' output channels to remove, in [0, 1).
  0 keeps every channel (the network is still rebuilt, unchanged in size).
* ``selection`` -- ``"layer"`` removes ``int(prune_rate * C)`` channels of every convolution
  (Golden Stick's rule); ``"global"`` removes the ``int(prune_rate * sum C)`` lowest scores over
  all prunable convolutions together, so layers with many useless channels lose more.
* ``min_channels`` -- every pruned convolution keeps at least this many channels (>= 1).
* ``ranking`` -- how channels are chosen. ``"reconstruction"`` (default) chooses the channels
  for the least-squares refit that ``convert`` applies: per group, the channels whose loss the
  refit of the layers reading them compensates best go first (greedy group Optimal Brain Surgeon
  on the float network's activations, :func:`gscore.nn.reconstruct.reconstruction_scores`;
  ThiNet's idea). It needs no knockoff stage (``apply`` only traces), ``selection="layer"`` and
  ``reconstruct_images > 0``. ``"knockoff"`` is the SCOP paper's: the knockoff stage trains a
  coefficient per channel, scored with the channel's scale (:mod:`gscore_scop.scoring`); the
  Golden Stick names (``PrunerKfCompressAlgo``, ``PrunerFtCompressAlgo``) and ``scop-knockoff``
  default to it (:class:`KnockoffSCOPConfig`). Over three float networks per bench network,
  reconstruction's mean is ahead of L1-norm, BN-gamma and random choices right after pruning at
  every rate, knockoff's is not (``bench/results/scop_*_runs.md``).
* ``layers`` -- full names of the convolutions to prune; empty means every convolution that
  tracing finds prunable (the others are skipped and listed in ``SCOP.skipped``). A named
  convolution that cannot be pruned is an error with the reason.
* ``opname_blacklist`` -- substrings of convolution names never to prune (Golden Stick's rule).
* ``knockoff_epochs`` / ``knockoff_batch_size`` / ``knockoff_learning_rate`` -- the knockoff stage
  run by ``apply`` when it is given data: epochs over the images, real images per step (the
  step sees twice as many: the batch and its knockoff), Adam learning rate of the coefficients.
  ``knockoff_epochs=0`` only inserts the coefficients; train them with ``SCOP.train_knockoff``.
  ``knockoff_batch_size`` is also the batch of the statistics repair; the other knockoff
  options given away from their defaults without ``ranking="knockoff"`` are an error, since
  nothing would train them.
* ``knockoff_separation`` -- final weight of the ramped cost ``mean(k)`` that separates real from
  knockoff features (:mod:`gscore_scop.knockoff`); 0 is the paper's plain objective.
* ``reconstruct_images`` -- after pruning, ``convert`` first refits every Conv2d / Dense that
  lost input channels by least squares, so that on this many of the ``apply`` images its
  outputs match the float network's (:mod:`gscore.nn.reconstruct`): what the removed channels
  contributed is re-expressed through the ones that remain, where a statistics repair only
  moves means. On the digit ResNet at rate 0.3 it lifted the accuracy right after pruning from
  36-60 % to 97 % (float 97.5 %). A layer is refitted only when the images give at least as
  many rows as it has inputs (a Dense layer gets one row per image; the others are listed in
  ``algo.recalibration``); a convolution without bias gets its intercept in the BatchNorm that
  reads it. 0 turns it off.
* ``recalibrate_batches`` -- the statistics repair, forward passes over this many batches of the
  ``apply`` images: BatchNorm statistics re-estimated, or in a network without BatchNorm every
  layer with a bias re-standardised to the float network's output mean and spread
  (:mod:`gscore.nn.bn_recalib`). Without the refit it always runs: the layers after a pruned
  convolution see different inputs, and stale statistics or shifted means cost far more accuracy
  than the removed channels. After the refit it is kept only if it lowers the cross-entropy on
  ``apply`` images the refit did not use (``algo.recalibration["statistics_choice"]`` has both
  losses): it restores the spread the least-squares fit shrinks, but it also re-normalises the
  fit's errors, which at high prune rates costs more than it gives. 0 turns it off.
* ``seed`` -- seeds the batch order, the knockoff permutations and the recalibration batches (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gscore.config import StrictEnum, VersionedConfig, check_names, check_number, coerce_enum
from gscore.errors import ConfigError


#: The options only the knockoff stage reads (``knockoff_batch_size`` also batches the statistics repair).
KNOCKOFF_ONLY = ("knockoff_epochs", "knockoff_learning_rate", "knockoff_separation")


class Ranking(StrictEnum):
    """What orders a group's channels: SCOP's knockoff coefficients, or the cost to the refit."""

    KNOCKOFF = "knockoff"
    RECONSTRUCTION = "reconstruction"


class Selection(StrictEnum):
    """Where the prune rate applies: to every layer alone, or to all prunable layers together."""

    LAYER = "layer"
    GLOBAL = "global"


@dataclass
class SCOPConfig(VersionedConfig):
    """Options of the ``scop`` algorithm (see the module docstring for each field).

    Immutable once built; derive variants with ``dataclasses.replace``."""

    prune_rate: float = 0.0
    selection: Selection = Selection.LAYER
    min_channels: int = 1
    ranking: Ranking = Ranking.RECONSTRUCTION
    layers: list[str] = field(default_factory=list)
    opname_blacklist: list[str] = field(default_factory=list)
    knockoff_epochs: int = 5
    knockoff_batch_size: int = 64
    knockoff_learning_rate: float = 0.01
    knockoff_separation: float = 1.0
    reconstruct_images: int = 1024
    recalibrate_batches: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        self.selection = coerce_enum(Selection, self.selection, "selection")
        self.ranking = coerce_enum(Ranking, self.ranking, "ranking")
        self.prune_rate = check_number(self.prune_rate, "prune_rate", 0.0, 1.0, high_open=True)
        for name, low in (("min_channels", 1), ("knockoff_epochs", 0), ("knockoff_batch_size", 1), ("reconstruct_images", 0), ("recalibrate_batches", 0), ("seed", 0)):
            setattr(self, name, check_number(getattr(self, name), name, low, integer=True))
        self.knockoff_learning_rate = check_number(self.knockoff_learning_rate, "knockoff_learning_rate", 0.0, low_open=True)
        self.knockoff_separation = check_number(self.knockoff_separation, "knockoff_separation", 0.0)
        for name in ("layers", "opname_blacklist"):
            setattr(self, name, check_names(getattr(self, name), name, "cell names", allow_empty_strings=False))
        if self.prune_rate == 0.0:
            self.warn_without_effect(("selection", "min_channels"), "prune_rate is 0, so no channel is removed")
        if self.ranking is Ranking.RECONSTRUCTION:
            self._check_reconstruction_options()

    def _check_reconstruction_options(self) -> None:
        """``ranking="reconstruction"`` ranks for the refit, per group, with no knockoff stage."""
        if self.selection is not Selection.LAYER:
            raise ConfigError(
                "ranking='reconstruction' removes int(prune_rate * C) channels of every group: it needs selection='layer' "
                "(selection='global' works with ranking='knockoff')"
            )
        if not self.reconstruct_images:
            raise ConfigError(
                "ranking='reconstruction' chooses channels for the least-squares refit: it needs reconstruct_images > 0 "
                "(to prune without the refit, use ranking='knockoff')"
            )
        stray = [f"{name}={getattr(self, name)!r}" for name in self.changed_fields(KNOCKOFF_ONLY)]
        if stray:
            raise ConfigError(
                f"{', '.join(stray)}: options of the knockoff stage, which ranking='reconstruction' (SCOPConfig's default) does not run; "
                f"set ranking='knockoff' to train knockoff coefficients, or leave {', '.join(KNOCKOFF_ONLY)} at their defaults"
            )


@dataclass
class KnockoffSCOPConfig(SCOPConfig):
    """:class:`SCOPConfig` whose ranking defaults to the SCOP paper's knockoff coefficients: what
    Golden Stick's ``PrunerKfCompressAlgo`` / ``PrunerFtCompressAlgo`` compute."""

    ranking: Ranking = Ranking.KNOCKOFF
