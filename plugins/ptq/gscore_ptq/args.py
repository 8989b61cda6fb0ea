"""``PTQConfig.algo_args`` of the ``ptq`` algorithm, parsed once into a frozen, validated form.

Golden Stick's names are kept where it has the knob:

=====================  ==========================================  ==========================
key                    meaning                                     used with
=====================  ==========================================  ==========================
``alpha``              SmoothQuant migration strength, or a list   ``outliers_suppression=
                       searched per block on its output            smooth``
``smooth_alpha``       AWQ strengths searched per group of layers  ``awq``
``duo_scaling``        AWQ scales from activations *and* weights   ``awq``
``weight_clip_ratio``  clipping ratios searched per (row, group)   ``weight_clip=True``
``block_size``         GPTQ columns per lazy update                ``precision_recovery=gptq``
``damp_percent``       GPTQ damping, fraction of mean(diag H)      ``gptq``
``desc_act``           GPTQ in order of decreasing activation      ``gptq``
``static_groups``      GPTQ group params from the original weight  ``gptq``
``refit_scales``       GPTQ scales re-solved for the chosen codes  ``gptq``
                       (least squares on the Hessian; gscore's)
``rotation_seed``      seed of the randomized Hadamard rotation    ``rotation``
``rotate_values``      also rotate every value head (v_proj rows,  ``rotation``
                       o_proj columns; gscore's): for quantized
                       activations, not for 4-bit weights
``prefix``             token ids kept as a float KV prefix, or     any config (see README)
                       ``"bos"`` for the model's BOS token
``head``               ``"int8"``: the output head as an int8     any config
                       per-row layer (weight-only, rounded to
                       nearest); ``"float"`` (default) keeps it
``distill_epochs``     epochs of end-to-end weight-scale tuning    weight quantization
                       against the float model in ``convert``
                       (0: none; gscore's, see below)
``distill_learning_rate`` its Adam step as a fraction of each     ``distill_epochs`` > 0
                       layer's mean ``|scale|`` (default 5e-4)
``distill_samples``    windows the float model samples itself,     ``distill_epochs`` > 0
                       trained on besides the calibration ones
                       (default 0; token windows, see below)
``calibrate_on_samples`` the sampled windows join the calibration   ``distill_samples`` > 0
                       ones for every statistic too (GPTQ
                       Hessians, clipping, ranges; default False)
``skip_leading_tokens`` leading positions left out of statistics   calibrated configs
``true_sequential``    calibrate each block in one pass, each      calibrated configs
                       group of layers on the outputs of the
                       groups before it, already quantized
                       (default True; False: two passes, every
                       layer on the float block; see below)
``search_windows``     calibration windows that score a search     ``alpha`` list
``progress``           show progress bars                          any
=====================  ==========================================  ==========================

Distillation (:mod:`gscore.calib.distill`): ``apply`` keeps the float model's log-probabilities
of every calibration sample (the helper's ``logits``), ``convert`` then trains the deployed
layers' weight scales toward them, every integer code fixed. It needs calibration data and a
helper with ``logits``; it runs in one process (not under ``msrun``). The learning rate is
relative because scales differ tenfold between int8 and int4 layers. The study in
``bench/results/ptq_distill.md`` trained SmolLM2 W4 at an absolute 3e-5 (about 5e-4 of the median
layer's mean scale, 0.066); an absolute 2e-4 (about 3e-3 relative) diverged. With
``distill_samples``, ``apply`` first lets the float model write that many windows as long as the
calibration windows (:func:`gscore.calib.distill.sampled_windows`: temperature 1, each prompted by
8 tokens of a calibration window; the helper's ``generate`` with ``temperature`` and ``seed``),
so the scales learn from more text than the calibration windows hold; it costs a decode of every
sampled window (SmolLM2: 14-18 s per 512-token window on 2 cores) and a teacher's
log-probabilities each. With ``calibrate_on_samples`` the sampled windows also join the
calibration windows for every statistic ``apply`` gathers: GPTQ's Hessians from 8 windows of
512 tokens are thin for layers 576 and 1536 wide, and the float model's own text thickens them
without more data (SmolLM2 W4 distilled: +7.23 % against +8.79 %,
``bench/results/ptq_calibrate_on_samples.md``).

One pass or two (``true_sequential``): by default a block is calibrated in one pass over its
calibration inputs. When the forward reaches a group of layers sharing an input (q/k/v, o,
gate/up, down), they are observed, migrated, clipped and rounded there, and the pass goes on
through the quantized group (:class:`gscore_ptq.block.BlockCalibrator`). Its output feeds the
next block, so no second pass runs: calibration costs one forward per block plus the
statistics and the rounding, instead of two. Each layer's statistics then come from the
quantized layers before it in the block, as AutoGPTQ does by default (its ``true_sequential``).
With ``False`` every layer of a block is observed on the float block in a first pass, and the
quantized block runs in a second. Two passes are also used where one cannot do: a helper that runs the data in
several calls per block (``windows_per_forward`` smaller than the data, the generic helper,
data-parallel workers), a SmoothQuant strength search (scored on whole-block outputs), or a
static int8 KV cache (it needs every key and value before attention reads them).

A key that the config does not use is a warning (it would silently do nothing); an unknown key
or a bad value is a :class:`~gscore.errors.ConfigError` naming what is allowed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from gscore.config import OutliersSuppressionType, PrecisionRecovery, PTQConfig, check_bool, check_number
from gscore.errors import ConfigError, GscoreWarning

DEFAULT_AWQ_ALPHAS = tuple(i / 20 for i in range(20))
DEFAULT_CLIP_RATIOS = tuple(1.0 - i / 20 for i in range(10))
HEAD_CHOICES = ("float", "int8")


def _numbers(key: str, value: Any, low: float, high: float, low_open: bool = False) -> tuple[float, ...]:
    """A number or a non-empty list of numbers in the bounds, as a tuple."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"algo_args[{key!r}] must be a number or a non-empty list of numbers in [{low}, {high}], got {value!r}")
    return tuple(check_number(v, f"algo_args[{key!r}]", low, high, low_open=low_open) for v in values)


@dataclass(frozen=True)
class GPTQArgs:
    """Golden Stick's ``GPTQQuantConfig`` fields."""

    block_size: int = 128
    damp_percent: float = 0.01
    desc_act: bool = False
    static_groups: bool = False
    refit_scales: bool = False  # gscore's extension (gscore.quant.refit)


@dataclass(frozen=True)
class PTQArgs:
    """Every ``algo_args`` knob of ``ptq``, validated (see the module table)."""

    alpha: tuple[float, ...] = (0.5,)
    smooth_alpha: tuple[float, ...] = DEFAULT_AWQ_ALPHAS
    duo_scaling: bool = True
    weight_clip_ratio: tuple[float, ...] = DEFAULT_CLIP_RATIOS
    gptq: GPTQArgs = GPTQArgs()
    rotation_seed: int = 0
    rotate_values: bool = False
    prefix: tuple[int, ...] | str = ()
    head: str = "float"
    distill_epochs: int = 0
    distill_learning_rate: float = 5e-4
    distill_samples: int = 0
    calibrate_on_samples: bool = False
    skip_leading_tokens: int = 0
    true_sequential: bool = True
    search_windows: int = 2
    progress: bool = True

    @property
    def alpha_search(self) -> bool:
        """True when SmoothQuant searches among several strengths."""
        return len(self.alpha) > 1


_SMOOTH = (lambda c: c.outliers_suppression is OutliersSuppressionType.SMOOTH, "outliers_suppression='smooth'")
_AWQ = (lambda c: c.outliers_suppression is OutliersSuppressionType.AWQ, "outliers_suppression='awq'")
_GPTQ = (lambda c: c.precision_recovery is PrecisionRecovery.GPTQ, "precision_recovery='gptq'")
_ROTATION = (lambda c: c.outliers_suppression is OutliersSuppressionType.ROTATION, "outliers_suppression='rotation'")
_ANY = (lambda c: True, "any config")
_WEIGHTS = (lambda c: c.weight_quant_dtype is not None or c.algo_args.get("head") == "int8", "quantized weights (weight_quant_dtype or head='int8')")
_DISTILLS = (lambda c: _WEIGHTS[0](c) and bool(c.algo_args.get("distill_epochs")), "distill_epochs > 0")
_SAMPLES = (lambda c: _DISTILLS[0](c) and bool(c.algo_args.get("distill_samples")), "distill_epochs > 0 and distill_samples > 0")
_USED_BY = {
    "alpha": _SMOOTH,
    "search_windows": _SMOOTH,
    "smooth_alpha": _AWQ,
    "duo_scaling": _AWQ,
    "weight_clip_ratio": (lambda c: c.weight_clip, "weight_clip=True"),
    "block_size": _GPTQ,
    "damp_percent": _GPTQ,
    "desc_act": _GPTQ,
    "static_groups": _GPTQ,
    "refit_scales": _GPTQ,
    "rotation_seed": _ROTATION,
    "rotate_values": _ROTATION,
    "prefix": _ANY,
    "head": _ANY,
    "distill_epochs": _WEIGHTS,
    "distill_learning_rate": _DISTILLS,
    "distill_samples": _DISTILLS,
    "calibrate_on_samples": _SAMPLES,
    "skip_leading_tokens": _ANY,
    "true_sequential": _ANY,
    "progress": _ANY,
}
KNOWN_ARGS = frozenset(_USED_BY)


def parse_args(config: PTQConfig) -> PTQArgs:
    """The validated :class:`PTQArgs` of ``config.algo_args``; warns about keys without effect."""
    raw: Mapping[str, Any] = config.algo_args
    for key in sorted(raw):
        used, needs = _USED_BY[key]
        if not used(config):
            warnings.warn(f"algo_args[{key!r}] has no effect: it is used with {needs}", GscoreWarning, stacklevel=5)
    gptq = GPTQArgs(
        block_size=check_number(raw.get("block_size", 128), "algo_args['block_size']", 1, integer=True),
        damp_percent=check_number(raw.get("damp_percent", 0.01), "algo_args['damp_percent']", 0.0, 1.0),
        desc_act=check_bool(raw.get("desc_act", False), "algo_args['desc_act']"),
        static_groups=check_bool(raw.get("static_groups", False), "algo_args['static_groups']"),
        refit_scales=check_bool(raw.get("refit_scales", False), "algo_args['refit_scales']"),
    )
    prefix = raw.get("prefix", ())
    if prefix != "bos" and (not isinstance(prefix, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prefix)):
        raise ConfigError(f"algo_args['prefix'] must be a list of token ids (ints >= 0) or 'bos' (the model's BOS token), got {prefix!r}")
    head = raw.get("head", "float")
    if head not in HEAD_CHOICES:
        raise ConfigError(f"algo_args['head'] must be one of {list(HEAD_CHOICES)} (the output head kept float, or int8 per row), got {head!r}")
    return PTQArgs(
        alpha=_numbers("alpha", raw.get("alpha", 0.5), 0.0, 1.0),
        smooth_alpha=_numbers("smooth_alpha", raw.get("smooth_alpha", list(DEFAULT_AWQ_ALPHAS)), 0.0, 1.0),
        duo_scaling=check_bool(raw.get("duo_scaling", True), "algo_args['duo_scaling']"),
        weight_clip_ratio=_numbers("weight_clip_ratio", raw.get("weight_clip_ratio", list(DEFAULT_CLIP_RATIOS)), 0.0, 1.0, low_open=True),
        gptq=gptq,
        rotation_seed=check_number(raw.get("rotation_seed", 0), "algo_args['rotation_seed']", 0, integer=True),
        rotate_values=check_bool(raw.get("rotate_values", False), "algo_args['rotate_values']"),
        prefix=prefix if isinstance(prefix, str) else tuple(prefix),
        head=head,
        distill_epochs=check_number(raw.get("distill_epochs", 0), "algo_args['distill_epochs']", 0, integer=True),
        distill_learning_rate=check_number(raw.get("distill_learning_rate", 5e-4), "algo_args['distill_learning_rate']", 0.0, 1.0, low_open=True),
        distill_samples=check_number(raw.get("distill_samples", 0), "algo_args['distill_samples']", 0, integer=True),
        calibrate_on_samples=check_bool(raw.get("calibrate_on_samples", False), "algo_args['calibrate_on_samples']"),
        skip_leading_tokens=check_number(raw.get("skip_leading_tokens", 0), "algo_args['skip_leading_tokens']", 0, integer=True),
        true_sequential=check_bool(raw.get("true_sequential", True), "algo_args['true_sequential']"),
        search_windows=check_number(raw.get("search_windows", 2), "algo_args['search_windows']", 1, integer=True),
        progress=check_bool(raw.get("progress", True), "algo_args['progress']"),
    )
