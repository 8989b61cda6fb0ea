"""Named PTQ configurations: the settings the main job, the bench and the README talk about.

Each preset is a dict of :class:`~gscore.PTQConfig` fields (mode excluded). ``prefix: "bos"``
keeps the model's BOS token as a float KV prefix (see :mod:`gscore_ptq.args`): the
attention-sink activations then never reach a quantized layer or a static range.
"""

from __future__ import annotations

from typing import Any

_W4 = {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128}
_GPTQ_ACT_ORDER = {"precision_recovery": "gptq", "algo_args": {"desc_act": True, "static_groups": True, "prefix": "bos"}}
"""GPTQ in activation order with static groups, the BOS token kept as a float prefix: without the
prefix the attention-sink token dominates XᵀX and GPTQ ends up worse than round-to-nearest (at
int4, and at int8 too: A16W8 GPTQ +0.26 % without, −0.20 % with, bench/results/ptq_a16w8.md)."""
_ROTATION_CLIP_GPTQ = {"outliers_suppression": "rotation", "weight_clip": True, "precision_recovery": "gptq",
                       "algo_args": {**_GPTQ_ACT_ORDER["algo_args"], "refit_scales": True}}
"""The best 4-bit weights measured on SmolLM2: the residual rotation spreads outlier channels, the
clipping search (scored on each layer's Hessian) picks each group's range, GPTQ then quantizes in
activation order and re-solves each row's scales for the codes it chose. W4 g128 +10.3 % at the
default rotation seed, +11.0 % on average over four seeds, against GPTQ alone +15.8 %; the scale
refit gained 1.25 % ± 0.47 over the four seeds (bench/results/ptq_w4_seeds.md). Value heads are
not rotated here: over four seeds it moved W4 by +0.4, -2.4, -0.6 and +0.2 points, no consistent
effect."""

_DISTILL_SAMPLED = {"distill_epochs": 1, "distill_samples": 64}
"""Weight-scale distillation: one epoch over the calibration windows and 64 windows the float model
samples itself, at the default relative learning rate (5e-4 of each layer's mean scale: the best
absolute rate at the median layer, bench/results/ptq_distill.md). On W4, from the same calibrated
network: -2.86 % ± 0.47 perplexity, against -1.12 % ± 0.20 for three epochs on the 8 calibration
windows alone (the presets' first form; more epochs there only over-fitted those windows) and
-1.88 % ± 0.42 with 16 sampled windows (as many steps as those three epochs): more of the float
model's own text kept helping (scratch study at git 4785594, in issue #8's note). Bench rows:
W4 +8.79 % ± 0.81 (bench/results/ptq_distill_sampled.md), A8W4 +7.95 % ± 0.80, paired -2.96 % ± 0.35
against no distillation (bench/results/ptq_distill_a8w4_sampled.md; +8.82 % ± 1.02 with one calibration
pass per block, bench/results/ptq_a8w4_preset_one_pass_amd_vnni.md). More does not help W4: 128 sampled
windows +8.89 % ± 0.77, paired +0.10 % ± 0.22 against 64 (bench/results/ptq_distill_sampled128.md); a second
epoch, or twice the learning rate, moved it by +0.07 % ± 0.25 and 0.00 % ± 0.20 (scratch studies, issue #8's note).
Nor does training more than the scales: the norm gains too, at the scales' relative rate or four times it, -0.08 % ± 0.09
and +0.31 % ± 0.25; the per-group zero points too (about 4e-3 integer steps per Adam step), -0.02 % ± 0.19 (scratch
studies at git 7b64efc, paired against the scales alone from the same calibrated network).

The W4 preset also calibrates on the sampled windows (``calibrate_on_samples``): GPTQ's Hessians and the
clipping search then see 72 windows instead of 8, and the distilled network measured +7.23 % ± 0.80, paired
-1.44 % ± 0.63 against the same preset without it (bench/results/ptq_calibrate_on_samples.md); over rotation
seeds 0, 1 and 2 with one calibration pass +6.50 % (runs +5.75 % to +7.20 %,
bench/results/ptq_w4_preset_one_pass_seeds_amd_vnni.md); over those and three earlier two-pass runs +7.12 %
(bench/results/ptq_w4_preset_runs_amd_vnni.md). The A8W4
preset does not: with it A8W4 measured +7.21 % ± 0.80, paired -0.68 % ± 0.78 against +7.95 %, within noise
(bench/results/ptq_a8w4_calibrate_on_samples.md)."""

PRESETS: dict[str, dict[str, Any]] = {
    "a16w8": {},
    "a16w8-gptq": {"precision_recovery": "gptq", "algo_args": {"desc_act": True, "prefix": "bos"}},
    "a16w4-g128": dict(_W4),
    "a16w4-g128-gptq": {**_W4, **_GPTQ_ACT_ORDER},
    "a16w4-g128-rotation-clip-gptq": {**_W4, **_ROTATION_CLIP_GPTQ},
    "a16w4-g128-rotation-clip-gptq-distill": {**_W4, **_ROTATION_CLIP_GPTQ,
                                              "algo_args": {**_ROTATION_CLIP_GPTQ["algo_args"], **_DISTILL_SAMPLED, "calibrate_on_samples": True}},
    "a16w4-g128-awq-gptq": {**_W4, "outliers_suppression": "awq", "weight_clip": True, "precision_recovery": "gptq",
                            "algo_args": {"desc_act": True, "static_groups": True, "prefix": "bos"}},
    "a8w8": {"act_quant_dtype": "int8"},
    "a8w8-smooth": {"act_quant_dtype": "int8", "outliers_suppression": "smooth"},
    "a8w8-rotation": {"act_quant_dtype": "int8", "outliers_suppression": "rotation", "algo_args": {"prefix": "bos", "rotate_values": True}},
    "a8w8-dynamic": {"act_quant_dtype": "int8", "act_quant_granularity": "per_token"},
    "a8w8-dynamic-rotation": {"act_quant_dtype": "int8", "act_quant_granularity": "per_token", "outliers_suppression": "rotation",
                              "algo_args": {"prefix": "bos"}},
    "a8w4-gptq": {**_W4, "act_quant_dtype": "int8", "act_quant_granularity": "per_token", **_GPTQ_ACT_ORDER},
    "a8w4-rotation-clip-gptq": {**_W4, "act_quant_dtype": "int8", "act_quant_granularity": "per_token", **_ROTATION_CLIP_GPTQ},
    "a8w4-rotation-clip-gptq-distill": {**_W4, "act_quant_dtype": "int8", "act_quant_granularity": "per_token", **_ROTATION_CLIP_GPTQ,
                                        "algo_args": {**_ROTATION_CLIP_GPTQ["algo_args"], **_DISTILL_SAMPLED}},
    "kv-int8": {"weight_quant_dtype": None, "kvcache_quant_dtype": "int8"},
    "kv-int8-dynamic": {"weight_quant_dtype": None, "kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"},
    "a8w8-rotation-kv-int8": {"act_quant_dtype": "int8", "outliers_suppression": "rotation", "kvcache_quant_dtype": "int8",
                              "algo_args": {"prefix": "bos", "rotate_values": True}},
}
"""Preset name -> PTQConfig fields. ``a8w8-rotation`` is the best static A8W8 (see bench/results/ptq.md); its value
heads are rotated too (``rotate_values``: +0.17 % against +0.54 % without, bench/results/ptq_value_heads.md), which
the 4-bit weight presets leave out (no consistent effect on them over four rotation seeds)."""

DEFAULT = "a8w8-rotation"


def preset(name: str, **algo_args: Any) -> dict[str, Any]:
    """The PTQConfig fields of preset ``name``, with ``algo_args`` merged in (e.g. ``progress=False``).

    Raises KeyError naming the presets for an unknown name.
    """
    if name not in PRESETS:
        raise KeyError(f"no PTQ preset {name!r}; presets: {', '.join(PRESETS)}")
    fields = dict(PRESETS[name])
    fields["algo_args"] = {**fields.get("algo_args", {}), **algo_args}
    return fields
