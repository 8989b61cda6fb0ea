"""The PTQ algorithm: prepare the model, calibrate block by block, simulate, convert, deploy.

Options (from :class:`~gscore.PTQConfig`, per layer overridable with ``layer_policies``;
``algo_args`` knobs in :mod:`gscore_ptq.args`):

* ``nn.Conv2d`` layers: int8 weights per output channel, rounded to nearest, inputs float
  (a per-group config refuses them: exclude them with ``opname_blacklist``);
* weights: int8 per output channel (symmetric), or int4/int8 per group of 64/128/256 input
  channels (asymmetric; int4 packed two per int8); rounded to nearest, or with GPTQ
  (``precision_recovery=gptq``) on each layer's input Hessian, optionally after a weight
  clipping search (``weight_clip=True``);
* activations: static int8 per tensor from calibration (asymmetric), or dynamic int8 per
  token (symmetric, computed at run time); int4 weights with dynamic int8 activations are A8W4;
* outlier suppression: SmoothQuant (``smooth``; a list of strengths is searched per block on
  the block output), AWQ (``awq``; strengths searched per group of layers sharing an input),
  or a QuaRot-style rotation of the residual stream (``rotation``, gscore's extension) with
  an online Hadamard before ``down_proj``;
* a fixed float prefix of tokens (``algo_args["prefix"]``, e.g. ``[bos]``): its keys and values
  are computed once by the float model and kept unquantized, so the attention-sink token's
  huge activations never enter the quantized layers or their static ranges;
* KV cache int8: static per channel (calibrated, asymmetric) or dynamic per token;
* the output head (``algo_args["head"] = "int8"``): its own linear layer (an untied copy of a
  tied embedding table), int8 per row, weight-only, rounded to nearest, whatever the blocks
  get — the largest matrix a decode step reads, a quarter of its float bytes;
* distillation (``algo_args["distill_epochs"]``): ``convert`` trains the deployed weight scales
  toward the float model's outputs on the calibration data, codes fixed, and on windows the
  float model sampled itself (``distill_samples``) (:mod:`gscore.calib.distill`; what it did
  is in ``algo.distillation``); with ``calibrate_on_samples`` the sampled windows feed every
  calibration statistic too (GPTQ's Hessians, the clipping search).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from typing import Any, Mapping

import numpy as np
from mindspore import Tensor, nn

from gscore import dist
from gscore.algorithm import PTQAlgorithm
from gscore.calib.data_parallel import data_parallel
from gscore.calib.distill import DistillResult, sampled_windows, teacher_log_probs, tune_weight_scales
from gscore.calib.layerwise import calibrate_blockwise
from gscore.calib.network_helper import as_helper, require_methods
from gscore.config import OutliersSuppressionType, PrecisionRecovery, PTQConfig, QuantDtype, QuantGranularity
from gscore.errors import CalibrationDataError, ConfigError, NoQuantizableLayerError
from gscore.nn.kv_cache import DynamicInt8KVCache, FloatKVCache, StaticInt8KVCache
from gscore.nn.linear_view import is_linear, linear_view
from gscore.nn.passes import WeightSpec, deployed_conv, deployed_linear, dynamic_kv_caches, is_weight_layer, quantize_network, require_kv_caches, simulated_conv, simulated_linear
from gscore.nn.quantizers import DynamicInputQuantizer, StaticInputQuantizer
from gscore.nn.rotation import rotate_residual_stream
from gscore.nn.walk import get_cell, iter_cells, replace_cell
from gscore.quant import randomized_hadamard
from gscore_ptq.args import KNOWN_ARGS, parse_args
from gscore_ptq.block import BlockCalibrator, full_name, name_prefix
from gscore_ptq.policy import PolicyTable


HEAD_SPEC = WeightSpec(bits=8)
"""The int8 head: per output row (one scale per vocabulary entry), symmetric, rounded to nearest."""


class PTQ(PTQAlgorithm):
    """Post-training quantization: A16W8, A16W4, A8W8 static/dynamic, A8W4, KV int8; SmoothQuant, AWQ, rotation, GPTQ."""

    config_cls = PTQConfig
    supported_options = {
        "precision_recovery": (PrecisionRecovery.NONE, PrecisionRecovery.GPTQ),
        "outliers_suppression": (OutliersSuppressionType.NONE, OutliersSuppressionType.SMOOTH, OutliersSuppressionType.AWQ, OutliersSuppressionType.ROTATION),
    }
    known_algo_args = KNOWN_ARGS

    def __init__(self, config: Any = None, layer_policies: Mapping[str, PTQConfig] | None = None) -> None:
        super().__init__(config)
        self.policies = PolicyTable(self.config, layer_policies)
        self._teacher: tuple[list[Any], list[np.ndarray]] | None = None
        self.distillation: DistillResult | None = None
        """What ``convert``'s weight-scale distillation did (None when it did not run)."""

    def validate_config(self) -> None:
        cfg = self.config
        if cfg.weight_quant_dtype is QuantDtype.INT4 and cfg.weight_quant_granularity is not QuantGranularity.PER_GROUP:
            raise ConfigError("int4 weights need weight_quant_granularity=per_group with group_size 64, 128 or 256")
        if cfg.weight_quant_dtype is QuantDtype.INT4 and cfg.act_quant_dtype is not None and cfg.act_quant_granularity is not QuantGranularity.PER_TOKEN:
            raise ConfigError("A8W4 (int4 weights, int8 activations) needs dynamic activations: act_quant_granularity=per_token")
        self.args = parse_args(cfg)
        g = self.args.gptq
        if cfg.weight_quant_granularity is QuantGranularity.PER_GROUP and g.desc_act and not g.static_groups:
            raise ConfigError("GPTQ desc_act with per-group weights needs algo_args static_groups=True (groups are stored for contiguous input columns)")

    @property
    def static_kv(self) -> bool:
        cfg = self.config
        return cfg.kvcache_quant_dtype is not None and cfg.kvcache_quant_granularity is QuantGranularity.PER_CHANNEL

    @property
    def rotates(self) -> bool:
        return self.config.outliers_suppression is OutliersSuppressionType.ROTATION

    @property
    def int8_head(self) -> bool:
        return self.args.head == "int8"

    def _helper(self, network_helper: Any) -> Any:
        helper = as_helper(network_helper)
        needs = (["rotation"] if self.rotates else []) + (["a token prefix"] if self.args.prefix else []) + (["an int8 output head"] if self.int8_head else [])
        require_methods(helper, needs)
        return helper

    def _check_network(self, network: nn.Cell) -> None:
        """Before the first change: policies and blacklist entries matching no layer warn; a
        KV-cache config needs a network with a gscore KV cache."""
        self.policies.warn_unmatched([name for name, _ in iter_cells(network, is_weight_layer)])
        if self.config.kvcache_quant_dtype is not None:
            require_kv_caches(network, "ptq")

    def calibrate(self, network: nn.Cell, network_helper: Any = None, datasets: Any = None) -> nn.Cell:
        self._check_network(network)
        helper = data_parallel(self._helper(network_helper))  # under msrun: this worker's shard, statistics combined
        names = [name for name, _ in iter_cells(network, is_linear) if self.policies.for_layer(name) is not None]
        convs = self._convs(network)
        if not names and not convs and self.config.kvcache_quant_dtype is None:
            raise NoQuantizableLayerError(f"no linear or Conv2d layer of {type(network).__name__} is left to quantize after opname_blacklist and layer_policies")
        distills = self.args.distill_epochs > 0 and (self.config.weight_quant_dtype is not None or self.int8_head)  # else: warned, no effect
        needs_data = self.static_kv or distills or any(self.policies.for_layer(n).needs_input_stats for n in names)
        if needs_data and datasets is None:
            raise CalibrationDataError(
                "this config calibrates from data (static A8W8, SmoothQuant, AWQ, clipping, GPTQ, static KV cache or distillation): "
                "pass calibration data, e.g. apply(net, helper, datasets=token_windows)"
            )
        self._teacher = self._float_outputs(network, helper, datasets) if distills else None
        if distills and self.args.calibrate_on_samples:
            datasets = self._teacher[0]  # the calibration windows, then the sampled ones
        self._prepare(network, helper, deploy=False)
        simulated = [(name, simulated_conv(conv, spec, name)) for name, conv, spec in convs]  # all scales first: a NaN weight changes nothing
        for name, cell in simulated:
            replace_cell(network, name, cell)
        if not needs_data:
            self._quantize_without_data(network)
            return network
        calibrator = BlockCalibrator(self.policies, self.args, helper, self.static_kv, self.config.kvcache_quant_dtype is not None)
        calibrate_blockwise(network, helper, datasets, calibrator, progress=self.args.progress)
        return network

    def _float_outputs(self, network: nn.Cell, helper: Any, datasets: Any) -> tuple[list[Any], list[np.ndarray]]:
        """The calibration samples and the float network's log-probabilities on each, kept for
        ``convert``'s distillation (taken before anything changes the network)."""
        if dist.active():
            raise ConfigError("algo_args distill_epochs needs one process: distillation is not data-parallel; run calibration without msrun")
        require_methods(helper, ["distillation"])
        samples = list(datasets) if isinstance(datasets, Iterable) else [datasets]  # a helper's own state is one item (it may refuse)
        if not samples:
            raise CalibrationDataError("distillation needs at least one calibration sample; datasets is empty")
        if self.args.distill_samples:
            require_methods(helper, ["distillation on sampled windows"])
            try:
                samples += list(sampled_windows(lambda prompts, new_tokens, seed: helper.generate(network, prompts, new_tokens, temperature=1.0, seed=seed, stop_at_eos=False),
                                                np.asarray(samples), self.args.distill_samples))
            except ValueError as error:
                raise CalibrationDataError(f"algo_args distill_samples: {error}") from None
        return samples, teacher_log_probs(lambda sample: helper.logits(network, sample), samples)

    def _convs(self, network: nn.Cell) -> list[tuple[str, nn.Cell, Any]]:
        """``(name, layer, weight spec)`` of every Conv2d to quantize. Convolutions get int8
        weights per output channel, rounded to nearest; their inputs stay float (activation
        quantization, smoothing and GPTQ apply to linear layers)."""
        found = []
        for name, cell in iter_cells(network, lambda c: isinstance(c, nn.Conv2d)):
            policy = self.policies.for_layer(name)
            if policy is not None:
                found.append((name, cell, policy.weight))
        refused = sorted(name for name, _, spec in found if spec.group_size or spec.bits != 8)
        if refused:
            raise ConfigError(
                f"Conv2d layers {refused}: convolutions are quantized to int8 per output channel only, not per group or int4; "
                "exclude them with opname_blacklist (or give them a per-channel int8 config in layer_policies)"
            )
        return found

    def prepare_reference(self, network: nn.Cell, network_helper: Any = None) -> nn.Cell:
        """Give float ``network`` the model-level structure this config adds before quantizing
        (rotation, float prefix, a linear head) and leave it float: it computes the float
        model's function in the quantized network's basis, the like-for-like reference of a
        per-layer comparison."""
        self._prepare(network, self._helper(network_helper), deploy=False, quantize_head=False)
        return network

    def _prepare(self, network: nn.Cell, helper: Any, deploy: bool, quantize_head: bool = True) -> None:
        """Model-level structure before any block is quantized: rotation, then the float prefix
        (computed by the float model), then the int8 head (simulated, or in DEPLOY mode a
        placeholder; ``quantize_head=False`` leaves it a float linear layer).

        In DEPLOY mode only the structure is built (the checkpoint holds the rotated weights,
        the prefix's keys and values and the head's codes)."""
        if self.rotates:
            stream = helper.residual_stream(network)
            if not self.args.rotate_values:
                stream = dataclasses.replace(stream, value_heads=())
            rotation = randomized_hadamard(stream.size, self.args.rotation_seed)
            helper.prepare_rotation(network, rotation)
            if not deploy:
                rotate_residual_stream(network, stream, rotation)
        if self.args.prefix:
            ids = self._prefix_ids(network, helper)
            if deploy:
                helper.prefix_placeholders(network, len(ids))
            else:
                helper.set_prefix(network, ids)
        if self.int8_head:
            name = helper.linear_head(network)
            if quantize_head:
                view = linear_view(get_cell(network, name))
                replace_cell(network, name, deployed_linear(view, HEAD_SPEC) if deploy else simulated_linear(view, HEAD_SPEC))

    def _prefix_ids(self, network: nn.Cell, helper: Any) -> np.ndarray:
        """The prefix token ids (``"bos"`` asks the helper for the model's BOS token)."""
        prefix = self.args.prefix
        if prefix == "bos":
            bos = helper.bos_token_id(network)
            if bos is None:
                raise ConfigError(f"algo_args prefix='bos' but {type(helper).__name__} knows no BOS token for this model; give the token ids instead")
            prefix = (bos,)
        return np.asarray(prefix, np.int32)

    def _quantize_without_data(self, network: nn.Cell) -> None:
        for name, cell in list(iter_cells(network, is_linear)):
            policy = self.policies.for_layer(name)
            if policy is not None:
                iq = DynamicInputQuantizer() if policy.act == "dynamic" else None
                replace_cell(network, name, simulated_linear(linear_view(cell), policy.weight, input_quantizer=iq))
        if self.config.kvcache_quant_dtype is not None:
            dynamic_kv_caches(network)

    def quantize(self, network: nn.Cell) -> nn.Cell:
        """Simulated layers become integer layers; a KV-only config has none to convert."""
        kv_only = self.config.weight_quant_dtype is None and not any(p for _, p in self.policies.rules) and not self.int8_head
        self.layers = [] if kv_only else quantize_network(network)
        if self._teacher is not None:
            samples, teacher = self._teacher
            helper = self._helper(self.network_helper)
            self.distillation = tune_weight_scales(network, lambda sample: helper.logits(network, sample), samples, teacher,
                                                   self.args.distill_epochs, self.args.distill_learning_rate, progress=self.args.progress)
            self._teacher = None
        return network

    def deploy(self, network: nn.Cell) -> nn.Cell:
        """Rebuild the quantized structure exactly as QUANTIZE would leave it, with NaN placeholders
        (scales, zero points, prefix entries) that only a loaded checkpoint makes finite."""
        self._check_network(network)
        helper = self._helper(self.network_helper)
        self._prepare(network, helper, deploy=True)
        for name, conv, spec in self._convs(network):
            replace_cell(network, name, deployed_conv(conv, spec, name))
        plans = BlockCalibrator(self.policies, self.args, helper, self.static_kv, self.config.kvcache_quant_dtype is not None)
        for block_name, block in helper.blocks(network):
            explicit = {m for plan in plans.scaling_plan(block, block_name) if plan.norm is None for m in plan.members}
            for rel, cell in list(iter_cells(block, is_linear)):
                policy = self.policies.for_layer(full_name(block_name, rel))
                if policy is None:
                    continue
                iq = {"static": StaticInputQuantizer(np.nan, np.nan), "dynamic": DynamicInputQuantizer(), None: None}[policy.act]
                replace_cell(block, rel, deployed_linear(linear_view(cell), policy.weight, iq, smooth=rel in explicit), name_prefix(block_name))
            if self.config.kvcache_quant_dtype is not None:
                for name, cache in list(iter_cells(block, lambda c: isinstance(c, FloatKVCache))):
                    nan = Tensor(np.full((cache.num_heads, 1, cache.head_dim), np.nan, np.float32))
                    new = StaticInt8KVCache(cache.num_heads, cache.head_dim, nan, nan, nan, nan) if self.static_kv else DynamicInt8KVCache(cache.num_heads, cache.head_dim)
                    replace_cell(block, name, new, name_prefix(block_name))
        return network
