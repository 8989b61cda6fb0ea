"""The PTQ algorithm: calibrate block by block, simulate, convert to integers, deploy.

Options (from :class:`~gscore.PTQConfig`, per layer overridable with ``layer_policies``):

* weights: int8 per output channel (symmetric), or int4/int8 per group of 64/128/256 input
  channels (asymmetric; int4 packed two per int8);
* activations: static int8 per tensor from calibration (asymmetric), or dynamic int8 per
  token (symmetric, computed at run time);
* ``OutliersSuppressionType.SMOOTH``: SmoothQuant with ``algo_args["alpha"]`` (default 0.5;
  a list of candidates searches, per group of layers sharing an input, the one whose
  quantized outputs on sampled calibration rows are closest to the float outputs);
  scales are folded into the preceding norm where the helper says a norm feeds the layers,
  and applied as an explicit input scale elsewhere;
* KV cache int8: static per channel (calibrated, asymmetric) or dynamic per token.

``algo_args["skip_leading_tokens"]`` (default 0) leaves the first positions of each
calibration window out of activation ranges (see :mod:`gscore.calib.observers`).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
from mindspore import Tensor, nn

from gscore.algorithm import PTQAlgorithm
from gscore.calib.layerwise import WholeNetworkHelper, calibrate_blockwise
from gscore.calib.observers import InputObserver, ObservingKVCache
from gscore.config import OutliersSuppressionType, PrecisionRecovery, PTQConfig, QuantDtype, QuantGranularity, check_bool, check_number
from gscore.errors import CalibrationDataError, ConfigError, GscoreWarning, NoQuantizableLayerError
from gscore.nn.kv_cache import DynamicInt8KVCache, FloatKVCache, StaticInt8KVCache
from gscore.nn.linear_view import is_linear, linear_view
from gscore.nn.passes import deployed_linear, dynamic_kv_caches, quantize_network, require_kv_caches, simulated_linear
from gscore.nn.quantizers import DynamicInputQuantizer, StaticInputQuantizer
from gscore.nn.walk import get_cell, iter_cells, replace_cell
from gscore.quant import Granularity, QuantScheme, compute_params
from gscore.quant.smooth import smooth_scales, smoothing_error
from gscore_ptq.policy import LinearPolicy, PolicyTable

_ACT_SCHEME = QuantScheme(bits=8, symmetric=False, signed=True, granularity=Granularity.PER_TENSOR)
_SEARCH_SAMPLE_ROWS = 512


def _full(block_name: str, relative: str) -> str:
    return f"{block_name}.{relative}" if block_name else relative


def _prefix(block_name: str) -> str:
    """Parameter-name prefix of cells inside ``block_name``."""
    return f"{block_name}." if block_name else ""


class PTQ(PTQAlgorithm):
    """Post-training quantization: A16W8, A16W4 per group, A8W8 static (SmoothQuant) or dynamic, KV-cache int8."""

    config_cls = PTQConfig
    supported_options = {
        "precision_recovery": (PrecisionRecovery.NONE,),
        "outliers_suppression": (OutliersSuppressionType.NONE, OutliersSuppressionType.SMOOTH),
        "weight_clip": (False,),
    }
    known_algo_args = frozenset({"alpha", "skip_leading_tokens", "progress"})

    def __init__(self, config: Any = None, layer_policies: Mapping[str, PTQConfig] | None = None) -> None:
        super().__init__(config)
        self.policies = PolicyTable(self.config, layer_policies)

    def validate_config(self) -> None:
        cfg = self.config
        if cfg.weight_quant_dtype is QuantDtype.INT4 and cfg.weight_quant_granularity is not QuantGranularity.PER_GROUP:
            raise ConfigError("int4 weights need weight_quant_granularity=per_group with group_size 64, 128 or 256")
        check_number(cfg.algo_args.get("skip_leading_tokens", 0), "algo_args['skip_leading_tokens']", 0, integer=True)
        check_bool(cfg.algo_args.get("progress", True), "algo_args['progress']")
        if "alpha" in cfg.algo_args and cfg.outliers_suppression is not OutliersSuppressionType.SMOOTH:
            warnings.warn("algo_args['alpha'] has no effect: it is SmoothQuant's migration strength and outliers_suppression is not 'smooth'", GscoreWarning, stacklevel=3)
        alpha = cfg.algo_args.get("alpha", 0.5)
        candidates = alpha if isinstance(alpha, list) and alpha else [alpha]
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0.0 <= a <= 1.0 for a in candidates):
            raise ConfigError(f"algo_args['alpha'] (SmoothQuant migration strength) must be a number in [0, 1] or a non-empty list of them, got {alpha!r}")

    @property
    def static_kv(self) -> bool:
        cfg = self.config
        return cfg.kvcache_quant_dtype is not None and cfg.kvcache_quant_granularity is QuantGranularity.PER_CHANNEL

    def _helper(self, network_helper: Any) -> Any:
        return network_helper if hasattr(network_helper, "blocks") else WholeNetworkHelper()

    def _check_network(self, network: nn.Cell) -> None:
        """Before the first change: policies and blacklist entries matching no layer warn; a
        KV-cache config needs a network with a gscore KV cache."""
        self.policies.warn_unmatched([name for name, _ in iter_cells(network, is_linear)])
        if self.config.kvcache_quant_dtype is not None:
            require_kv_caches(network, "ptq")

    def calibrate(self, network: nn.Cell, network_helper: Any = None, datasets: Any = None) -> nn.Cell:
        self._check_network(network)
        helper = self._helper(network_helper)
        names = [name for name, _ in iter_cells(network, is_linear) if self.policies.for_layer(name) is not None]
        if not names and self.config.kvcache_quant_dtype is None:
            raise NoQuantizableLayerError(f"no linear layer of {type(network).__name__} is left to quantize after opname_blacklist and layer_policies")
        needs_data = self.static_kv or any(self.policies.for_layer(n).needs_input_stats for n in names)
        if needs_data and datasets is None:
            raise CalibrationDataError(
                "this config calibrates activation ranges (static A8W8, SmoothQuant or static KV cache): "
                "pass calibration data, e.g. apply(net, helper, datasets=token_windows)"
            )
        if not needs_data:
            self._quantize_without_data(network, helper)
            return network
        self._helper_in_use = helper
        calibrate_blockwise(network, helper, datasets, self._process_block, progress=self.config.algo_args.get("progress", True))
        return network

    def _quantize_without_data(self, network: nn.Cell, helper: Any) -> None:
        for name, cell in list(iter_cells(network, is_linear)):
            policy = self.policies.for_layer(name)
            if policy is not None:
                iq = DynamicInputQuantizer() if policy.act == "dynamic" else None
                replace_cell(network, name, simulated_linear(linear_view(cell), policy.weight, input_quantizer=iq))
        if self.config.kvcache_quant_dtype is not None:
            dynamic_kv_caches(network)

    def _process_block(self, block_name: str, block: nn.Cell, state: Any) -> None:
        helper = self._helper_in_use
        linears = {rel: cell for rel, cell in iter_cells(block, is_linear)}
        policies = {rel: self.policies.for_layer(_full(block_name, rel)) for rel in linears}
        observed = [rel for rel, p in policies.items() if p is not None and p.needs_input_stats]
        caches = list(iter_cells(block, lambda c: isinstance(c, FloatKVCache)))
        stats = self._observe(block_name, block, state, helper, observed, caches)

        smooth: dict[str, np.ndarray | None] = {}
        weights: dict[str, np.ndarray] = {rel: linears[rel].weight.asnumpy().astype(np.float32) for rel in linears}
        if any(p is not None and p.smooth for p in policies.values()):
            smooth = self._smooth(block, helper, block_name, stats, weights)

        for rel, cell in linears.items():
            policy = policies[rel]
            if policy is None:
                continue
            iq = self._input_quantizer(policy, stats.get(rel))
            explicit = smooth.get(rel)
            replace_cell(block, rel, simulated_linear(linear_view(cell), policy.weight, weights[rel], iq, None if explicit is None else 1.0 / explicit), _prefix(block_name))
        self._place_kv_caches(block_name, block, caches, stats)

    def _observe(self, block_name: str, block: nn.Cell, state: Any, helper: Any, observed: list[str], caches: list[tuple[str, nn.Cell]]) -> dict[str, Any]:
        """Run the float block once with observers in place; returns stats by layer/cache name."""
        if not observed and not (self.static_kv and caches):
            return {}
        skip = int(self.config.algo_args.get("skip_leading_tokens", 0))
        prefix = _prefix(block_name)
        sample = _SEARCH_SAMPLE_ROWS if isinstance(self.config.algo_args.get("alpha"), list) else 0
        originals = {rel: get_cell(block, rel) for rel in observed}
        for rel, cell in originals.items():
            replace_cell(block, rel, InputObserver(cell, helper.tokens_per_sequence(), skip, sample), prefix)
        watchers = {}
        if self.static_kv:
            for name, cache in caches:
                watchers[name] = ObservingKVCache(cache.num_heads, cache.head_dim)
                replace_cell(block, name, watchers[name], prefix)
        helper.run_block(block, state)
        stats: dict[str, Any] = {rel: get_cell(block, rel).stats for rel in observed}
        for rel in observed:
            stats[rel].sample = get_cell(block, rel).sample
        stats.update(watchers)
        for rel, cell in originals.items():
            replace_cell(block, rel, cell, prefix)
        for name, cache in caches:
            replace_cell(block, name, cache, prefix)
        return stats

    def _smoothing_plan(self, block: nn.Cell, helper: Any, block_name: str) -> list[tuple[str | None, list[str]]]:
        """Groups of smoothed layers sharing an input, each with the norm to fold into or None.

        Folding into a norm is exact only when every layer that norm feeds is smoothed with
        the same scale; otherwise the group keeps an explicit input scale.
        """
        plan = []
        for norm_name, members in helper.smooth_groups(block):
            policies = [self.policies.for_layer(_full(block_name, m)) for m in members]
            smoothed = [m for m, p in zip(members, policies) if p is not None and p.smooth]
            if smoothed:
                plan.append((norm_name if len(smoothed) == len(members) else None, smoothed))
        return plan

    def _smooth(self, block: nn.Cell, helper: Any, block_name: str, stats: dict[str, Any], weights: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
        """SmoothQuant per group; returns by layer the scale ``s`` its input must be divided
        by, or None where ``1/s`` was folded into the norm. Every smoothed weight column is
        multiplied by ``s`` and the observed input ranges divided by it."""
        alpha = self.config.algo_args.get("alpha", 0.5)
        explicit: dict[str, np.ndarray | None] = {}
        for norm_name, members in self._smoothing_plan(block, helper, block_name):
            act_absmax = np.max([stats[m].absmax for m in members], axis=0)
            weight_absmax = np.max([np.abs(weights[m]).max(axis=0) for m in members], axis=0)
            if isinstance(alpha, list):
                s = min((smooth_scales(act_absmax, weight_absmax, a) for a in alpha), key=lambda c: self._smoothing_error(c, members, stats, weights))
            else:
                s = smooth_scales(act_absmax, weight_absmax, float(alpha))
            for m in members:
                weights[m] = weights[m] * s[None, :]
                stats[m].lo, stats[m].hi = stats[m].lo / s, stats[m].hi / s
            if norm_name is not None:
                norm = get_cell(block, norm_name)
                norm.weight.set_data(Tensor((norm.weight.asnumpy() / s).astype(np.float32)))
            explicit.update({m: None if norm_name is not None else s for m in members})
        return explicit

    def _smoothing_error(self, scales: np.ndarray, members: list[str], stats: dict[str, Any], weights: dict[str, np.ndarray]) -> float:
        """Output error of a group smoothed by ``scales`` (static per-tensor input range)."""
        first = stats[members[0]]
        lo, hi = (first.lo / scales).min(), (first.hi / scales).max()
        act = compute_params(np.array([[lo]]), np.array([[hi]]), _ACT_SCHEME)
        weight_scheme = QuantScheme(bits=8, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0)
        return smoothing_error(first.sample, [weights[m] for m in members], scales, act, weight_scheme)

    def _input_quantizer(self, policy: LinearPolicy, stats: Any) -> nn.Cell | None:
        if policy.act == "dynamic":
            return DynamicInputQuantizer()
        if policy.act == "static":
            params = compute_params(np.array([stats.lo.min()]), np.array([stats.hi.max()]), _ACT_SCHEME)
            return StaticInputQuantizer(float(params.scale[0]), float(params.zero_point[0]))
        return None

    def _place_kv_caches(self, block_name: str, block: nn.Cell, caches: list[tuple[str, nn.Cell]], stats: dict[str, Any]) -> None:
        if self.config.kvcache_quant_dtype is None:
            return
        for name, cache in caches:
            if self.static_kv:
                watcher = stats[name]
                k = compute_params(watcher.key_stats.lo, watcher.key_stats.hi, _ACT_SCHEME)
                v = compute_params(watcher.value_stats.lo, watcher.value_stats.hi, _ACT_SCHEME)
                new = StaticInt8KVCache(cache.num_heads, cache.head_dim, Tensor(k.scale), Tensor(k.zero_point), Tensor(v.scale), Tensor(v.zero_point))
            else:
                new = DynamicInt8KVCache(cache.num_heads, cache.head_dim)
            replace_cell(block, name, new, _prefix(block_name))

    def quantize(self, network: nn.Cell) -> nn.Cell:
        """Simulated layers become integer layers; a KV-only config has none to convert."""
        kv_only = self.config.weight_quant_dtype is None and not any(p for _, p in self.policies.rules)
        self.layers = [] if kv_only else quantize_network(network)
        return network

    def deploy(self, network: nn.Cell) -> nn.Cell:
        """Rebuild the quantized structure (placeholders) exactly as QUANTIZE would leave it."""
        self._check_network(network)
        helper = self._helper(self.network_helper)
        for block_name, block in helper.blocks(network):
            unfolded = {m for norm, members in self._smoothing_plan(block, helper, block_name) if norm is None for m in members}
            for rel, cell in list(iter_cells(block, is_linear)):
                policy = self.policies.for_layer(_full(block_name, rel))
                if policy is None:
                    continue
                iq = {"static": StaticInputQuantizer(1.0, 0.0), "dynamic": DynamicInputQuantizer(), None: None}[policy.act]
                replace_cell(block, rel, deployed_linear(linear_view(cell), policy.weight, iq, smooth=rel in unfolded), _prefix(block_name))
            if self.config.kvcache_quant_dtype is not None:
                for name, cache in list(iter_cells(block, lambda c: isinstance(c, FloatKVCache))):
                    ones = Tensor(np.ones((cache.num_heads, 1, cache.head_dim), np.float32))
                    zeros = Tensor(np.zeros((cache.num_heads, 1, cache.head_dim), np.float32))
                    new = StaticInt8KVCache(cache.num_heads, cache.head_dim, ones, zeros, ones, zeros) if self.static_kv else DynamicInt8KVCache(cache.num_heads, cache.head_dim)
                    replace_cell(block, name, new, _prefix(block_name))
        return network
