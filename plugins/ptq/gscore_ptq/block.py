"""One block of layer-by-layer PTQ calibration: observe, suppress outliers, quantize weights.

For every block the driver (:func:`gscore.calib.layerwise.calibrate_blockwise`) hands over,
:class:`BlockCalibrator`

1. observes the inputs of the linears that need statistics (per-channel ranges, ``XᵀX`` for
   GPTQ, mean ``|x|`` for AWQ, sample rows for searches) and of the KV caches;
2. migrates outliers (SmoothQuant, or AWQ scales searched per group of layers sharing an
   input) into the weights: ``x / s`` and ``W · s``, ``1/s`` folded into the norm that feeds the
   group when every layer it feeds is scaled alike, else kept as the layer's explicit
   ``smooth_scale``;
3. searches weight clipping, then rounds the weights (round to nearest, or GPTQ on the
   Hessian of the scaled inputs) and puts the simulated layers and KV caches in place.

By default this happens in one pass over the block, group by group of layers sharing an
input, as the forward reaches each (true-sequential, :class:`_GroupInPass`): the pass's output
is the calibrated block's, and the driver hands it to the next block without running this one
again. Where one pass cannot do (``true_sequential`` off, a helper that runs the data in several
calls, a SmoothQuant strength search, a static int8 KV cache), step 1 is a pass of the float
block with observers over every layer at once, and the driver then runs the calibrated block.

Layers that share an input (q/k/v, gate/up) share one Hessian: it is collected once, and GPTQ
quantizes their stacked weights in one call. GPTQ treats every output row on its own given the
Hessian, so this is the same computation as one call per layer, with one ``XᵀX``, one
factorization and one column loop per group instead of one per layer.

A list of SmoothQuant strengths is searched per block on the block's *output*: each candidate
quantizes the whole block (round to nearest) and runs it on a few calibration windows; the
strength whose output is closest to the float block's is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mindspore import Tensor, nn

from gscore.calib.observers import Collect, InputObserver, ObservingKVCache
from gscore.errors import CalibrationDataError
from gscore.nn.kv_cache import DynamicInt8KVCache, FloatKVCache, StaticInt8KVCache
from gscore.nn.linear_view import is_linear, linear_view, ms_float_dtype_to_numpy
from gscore.nn.norms import norm_values, set_folded
from gscore.nn.passes import simulated_linear, stored_params
from gscore.nn.quantizers import DynamicInputQuantizer, StaticInputQuantizer
from gscore.nn.walk import get_cell, iter_cells, replace_cell
from gscore.quant import Granularity, QuantParams, QuantScheme, awq_scales, awq_weight_mean, compute_params, gptq_quantize, scaled_fake_quantize, search_weight_clip
from gscore.quant.smooth import smooth_scales
from gscore_ptq.args import PTQArgs
from gscore_ptq.policy import LinearPolicy, PolicyTable

ACT_SCHEME = QuantScheme(bits=8, symmetric=False, signed=True, granularity=Granularity.PER_TENSOR)
SAMPLE_ROWS = 512  # input rows kept per layer for AWQ and for clipping without GPTQ (Golden Stick: ~512)


def full_name(block_name: str, relative: str) -> str:
    return f"{block_name}.{relative}" if block_name else relative


def name_prefix(block_name: str) -> str:
    """Parameter-name prefix of cells inside ``block_name``."""
    return f"{block_name}." if block_name else ""


@dataclass
class LayerWork:
    """One linear layer while its block is calibrated: float weight (scaled as the layer's
    input channels get migration scales) and the statistics of its *unscaled* input.

    ``divisor`` is the product of every scale ``s`` its input has been divided by so far
    (None: none); statistics are read through it.
    """

    cell: nn.Cell
    policy: LinearPolicy
    weight: np.ndarray
    observer: InputObserver | None = None
    divisor: np.ndarray | None = None
    explicit: bool = False  # the divisor must be applied by the layer itself (no norm absorbed it)
    hessian_of: str | None = None  # the layer (this one, or one sharing its input) whose observer collects XᵀX

    def scale_input(self, s: np.ndarray, folded: bool) -> None:
        """Divide the input by ``s`` and multiply the weight columns by ``s``."""
        self.weight = self.weight * s[None, :]
        self.divisor = s if self.divisor is None else self.divisor * s
        self.explicit = self.explicit or not folded

    def _per_channel(self, values: np.ndarray) -> np.ndarray:
        return values if self.divisor is None else values / self.divisor

    @property
    def lo(self) -> np.ndarray:
        return self._per_channel(self.observer.stats.lo)

    @property
    def hi(self) -> np.ndarray:
        return self._per_channel(self.observer.stats.hi)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    @property
    def absmean(self) -> np.ndarray:
        return self._per_channel(self.observer.absmean.mean())

    @property
    def sample(self) -> np.ndarray:
        return self._per_channel(self.observer.sample)

    def hessian(self, work: dict[str, "LayerWork"]) -> np.ndarray:
        """``2XᵀX/rows`` of this layer's scaled input (``work``: the block's layers, one of
        which collected it)."""
        h = work[self.hessian_of].observer.hessian.hessian()
        return h if self.divisor is None else h / np.outer(self.divisor, self.divisor)


@dataclass
class Plan:
    """A group of scaled layers sharing an input, with the norm that can absorb ``1/s`` (or None)."""

    norm: str | None
    members: list[str] = field(default_factory=list)


class BlockCalibrator:
    """Calibrates the blocks of one network for one PTQ algorithm instance."""

    def __init__(self, policies: PolicyTable, args: PTQArgs, helper: Any, static_kv: bool, kv_quant: bool) -> None:
        self.policies = policies
        self.args = args
        self.helper = helper
        self.static_kv = static_kv
        self.kv_quant = kv_quant

    # -- structure -----------------------------------------------------------------------

    def scaling_plan(self, block: nn.Cell, block_name: str) -> list[Plan]:
        """Groups of input-scaled layers sharing an input, each with the norm to fold into or None.

        Folding into a norm is exact only when every layer that norm feeds is scaled with the
        same ``s``; otherwise the group keeps an explicit input scale. DEPLOY rebuilds the
        same plan to know which layers carry a ``smooth_scale``.
        """
        scales = [rel for rel, _ in iter_cells(block, is_linear) if (p := self.policies.for_layer(full_name(block_name, rel))) is not None and p.scales_input]
        if not scales:  # nothing to group: no need to ask (or trace) the helper
            return []
        plans = []
        for norm_name, members in self.helper.smooth_groups(block):
            scaled = [m for m in members if (p := self.policies.for_layer(full_name(block_name, m))) is not None and p.scales_input]
            if scaled:
                plans.append(Plan(norm_name if len(scaled) == len(members) else None, scaled))
        return plans

    # -- the pipeline --------------------------------------------------------------------

    def __call__(self, block_name: str, block: nn.Cell, state: Any) -> Any:
        """Calibrate ``block`` on ``state``; returns the state after the calibrated block when
        the one true-sequential pass produced it, else None (the driver runs the block)."""
        work = {
            rel: LayerWork(cell, policy, cell.weight.asnumpy().astype(np.float32))
            for rel, cell in iter_cells(block, is_linear)
            if (policy := self.policies.for_layer(full_name(block_name, rel))) is not None
        }
        caches = list(iter_cells(block, lambda c: isinstance(c, FloatKVCache)))
        plans = self.scaling_plan(block, block_name)
        norms = {plan.norm: norm_values(get_cell(block, plan.norm)) for plan in plans if plan.norm}
        if self._in_one_pass(work, caches, state):
            return self._calibrate_in_one_pass(block_name, block, state, work, caches, plans, norms)
        watchers = self._observe(block_name, block, state, work, caches)
        if any(w.policy.smooth for w in work.values()) and self.args.alpha_search:
            alpha = self._search_alpha(block_name, block, state, work, plans, norms)
        else:
            alpha = self.args.alpha[0]
        self._place(block_name, block, work, plans, norms, alpha, gptq=True)
        self._place_kv_caches(block_name, block, caches, watchers)
        return None

    def _in_one_pass(self, work: dict[str, LayerWork], caches: list[tuple[str, nn.Cell]], state: Any) -> bool:
        """Whether the block is calibrated true-sequentially, in one pass: asked for
        (``true_sequential``), useful (some layer needs statistics; otherwise no observing pass
        runs anyway) and possible: the helper runs the whole state in one call of the block
        (``calls_block_once``), no SmoothQuant strength search scores whole-block outputs, and
        no static int8 KV cache must see every key and value before attention runs on it."""
        calls_once = getattr(self.helper, "calls_block_once", None)
        return (
            self.args.true_sequential
            and calls_once is not None
            and calls_once(state)
            and any(w.policy.needs_input_stats for w in work.values())
            and not (self.static_kv and caches)
            and not (self.args.alpha_search and any(w.policy.smooth for w in work.values()))
        )

    def _calibrate_in_one_pass(self, block_name: str, block: nn.Cell, state: Any, work: dict[str, LayerWork], caches: list[tuple[str, nn.Cell]],
                               plans: list[Plan], norms: dict[str, list[np.ndarray]]) -> Any:
        """Run the block once, calibrating each group of layers sharing an input when the
        forward reaches it (:class:`_GroupInPass`); returns the state after the calibrated block."""
        self._share_hessians(block, work)
        self._place_kv_caches(block_name, block, caches, {})  # dynamic int8 caches (static ones take two passes)
        prefix = name_prefix(block_name)
        groups = []
        for members in self._input_groups(block, work):
            group = _GroupInPass(self, block, {m: work[m] for m in members}, [p for p in plans if set(p.members) <= set(members)], norms)
            groups.append(group)
            for rel in members:
                replace_cell(block, rel, _QuantizeOnCall(group, rel), prefix)
        after = self.helper.run_block(block, state)
        for group in groups:
            for rel, cell in group.calibrated(block_name).items():
                replace_cell(block, rel, cell, prefix)
        return after

    def _input_groups(self, block: nn.Cell, work: dict[str, LayerWork]) -> list[list[str]]:
        """The layers of ``work`` by shared input (the helper's smoothing groups; a layer in none is alone)."""
        groups, grouped = [], set()
        for _, members in self.helper.smooth_groups(block):
            group = [m for m in members if m in work and m not in grouped]
            if group:
                groups.append(group)
                grouped.update(group)
        return groups + [[rel] for rel in work if rel not in grouped]

    def _observer(self, w: LayerWork, rel: str) -> InputObserver:
        """The observer collecting what ``w``'s policy needs from its input."""
        collect = Collect(hessian=w.hessian_of == rel, absmean=w.policy.awq, sample_rows=SAMPLE_ROWS if (w.policy.awq or (w.policy.clip and not w.policy.gptq)) else 0)
        return InputObserver(w.cell, self.helper.tokens_per_sequence(), self.args.skip_leading_tokens, collect)

    def _observe(self, block_name: str, block: nn.Cell, state: Any, work: dict[str, LayerWork], caches: list[tuple[str, nn.Cell]]) -> dict[str, ObservingKVCache]:
        """Run the float block once with observers in place; attach them to ``work``."""
        observed = [rel for rel, w in work.items() if w.policy.needs_input_stats]
        if not observed and not (self.static_kv and caches):
            return {}
        prefix = name_prefix(block_name)
        self._share_hessians(block, work)
        for rel in observed:
            work[rel].observer = self._observer(work[rel], rel)
            replace_cell(block, rel, work[rel].observer, prefix)
        watchers = {}
        if self.static_kv:
            for name, cache in caches:
                watchers[name] = ObservingKVCache(cache.num_heads, cache.head_dim)
                replace_cell(block, name, watchers[name], prefix)
        try:
            self.helper.run_block(block, state)
        finally:
            for rel in observed:
                replace_cell(block, rel, work[rel].cell, prefix)
            for name, cache in caches:
                replace_cell(block, name, cache, prefix)
        return watchers

    def _share_hessians(self, block: nn.Cell, work: dict[str, LayerWork]) -> None:
        """Set ``hessian_of`` of every GPTQ layer: the first GPTQ layer of its shared-input group."""
        gptq = [rel for rel, w in work.items() if w.policy.gptq]
        for rel in gptq:
            work[rel].hessian_of = rel
        if len(gptq) < 2:
            return
        for _, members in self.helper.smooth_groups(block):
            sharing = [m for m in members if m in gptq]
            for member in sharing[1:]:
                work[member].hessian_of = sharing[0]

    def _migrate(self, work: dict[str, LayerWork], plans: list[Plan], alpha: float) -> dict[str, np.ndarray]:
        """Apply SmoothQuant (``alpha``) or AWQ scales to every plan; returns ``1/s`` by folded norm."""
        folded: dict[str, np.ndarray] = {}
        for plan in plans:
            members = [work[m] for m in plan.members]
            if members[0].policy.awq:
                s = self._awq_scales(members)
            else:
                act = np.max([m.absmax for m in members], axis=0)
                weight = np.max([np.abs(m.weight).max(axis=0) for m in members], axis=0)
                s = smooth_scales(act, weight, alpha)
            for member in members:
                member.scale_input(s, folded=plan.norm is not None)
            if plan.norm is not None:
                folded[plan.norm] = 1.0 / s
        return folded

    def _awq_scales(self, members: list[LayerWork]) -> np.ndarray:
        """AWQ: the strength whose scaled, quantized group outputs on sample rows are closest to float."""
        first = members[0]
        scheme = _weight_scheme(first)
        store = ms_float_dtype_to_numpy(linear_view(first.cell).compute_dtype)
        x = first.sample
        references = [x @ m.weight.T for m in members]
        weight_mean = awq_weight_mean([m.weight for m in members], scheme.group_size)
        best, best_error = np.ones(x.shape[1], np.float32), np.inf
        for alpha in self.args.smooth_alpha:
            s = awq_scales(first.absmean, weight_mean, alpha, duo_scaling=self.args.duo_scaling)
            error = sum(float(np.sum((x @ scaled_fake_quantize(m.weight, s, scheme, scale_dtype=store).T - ref) ** 2)) for m, ref in zip(members, references))
            if error < best_error:
                best, best_error = s, error
        return best

    def _search_alpha(self, block_name: str, block: nn.Cell, state: Any, work: dict[str, LayerWork], plans: list[Plan], norms: dict[str, list[np.ndarray]]) -> float:
        """The SmoothQuant strength whose round-to-nearest block output is closest to the float one."""
        subset = self.helper.take(state, self.args.search_windows)
        reference = self.helper.block_output(self.helper.run_block(block, subset))
        originals = {rel: (w.cell, w.weight, w.divisor, w.explicit) for rel, w in work.items()}
        prefix = name_prefix(block_name)
        best, best_error = self.args.alpha[0], np.inf
        for alpha in self.args.alpha:
            self._place(block_name, block, work, plans, norms, alpha, gptq=False)
            output = self.helper.block_output(self.helper.run_block(block, subset))
            error = float(np.sum((output - reference) ** 2))
            if error < best_error:
                best, best_error = alpha, error
            for rel, (cell, weight, divisor, explicit) in originals.items():
                replace_cell(block, rel, cell, prefix)
                cell.weight.set_data(Tensor(weight))
                work[rel].weight, work[rel].divisor, work[rel].explicit = weight, divisor, explicit
            for norm, values in norms.items():
                set_folded(get_cell(block, norm), values, None)
        return best

    def _place(self, block_name: str, block: nn.Cell, work: dict[str, LayerWork], plans: list[Plan], norms: dict[str, list[np.ndarray]], alpha: float, gptq: bool) -> None:
        """Migrate outliers, round the weights and put the simulated layers in place."""
        for rel, cell in self._simulate(block, work, plans, norms, alpha, gptq)[0].items():
            replace_cell(block, rel, cell, name_prefix(block_name))

    def _simulate(self, block: nn.Cell, work: dict[str, LayerWork], plans: list[Plan], norms: dict[str, list[np.ndarray]], alpha: float,
                  gptq: bool) -> tuple[dict[str, nn.Cell], dict[str, np.ndarray]]:
        """Migrate outliers (``1/s`` folded into the norms that absorb it) and round the weights:
        the simulated cell of every layer of ``work``, not yet in place, and ``1/s`` by folded norm."""
        folded = self._migrate(work, plans, alpha)
        for norm, inverse in folded.items():
            set_folded(get_cell(block, norm), norms[norm], inverse)
        rounded = self._round(work, gptq)
        cells = {}
        for rel, w in work.items():
            weight, params = rounded[rel]
            smooth = 1.0 / w.divisor if w.explicit else None
            cells[rel] = simulated_linear(linear_view(w.cell), w.policy.weight, weight, self._input_quantizer(w), smooth, params)
        return cells, folded

    def _round(self, work: dict[str, LayerWork], gptq: bool) -> dict[str, tuple[np.ndarray, QuantParams | None]]:
        """Every layer's weight to simulate and its params (None: observe them from that weight).

        Clipping alone simulates the clipped weight. With GPTQ, the clipping search only picks
        the params (the clipped ranges) and GPTQ quantizes the *unclipped* weight with them, so
        the error of every value beyond a clipped range is fed back to the columns after it.
        GPTQ layers with one Hessian, scheme and input scaling are quantized stacked, in one call.
        """
        rounded: dict[str, tuple[np.ndarray, QuantParams | None]] = {}
        batches: dict[tuple[Any, ...], list[tuple[str, QuantParams | None]]] = {}
        for rel, w in work.items():
            view = linear_view(w.cell)
            scheme = w.policy.weight.scheme(view)
            store = ms_float_dtype_to_numpy(view.compute_dtype)
            clipped = None
            if w.policy.clip:  # a GPTQ layer's clipping is scored on its Hessian: every calibration row, in fewer flops
                x, hessian = (None, w.hessian(work)) if w.policy.gptq else (w.sample, None)
                clipped = search_weight_clip(w.weight, x, scheme, self.args.weight_clip_ratio, scale_dtype=store, hessian=hessian).weight
            if gptq and w.policy.gptq:
                params = None if clipped is None else stored_params(clipped, view, w.policy.weight)
                divisor = None if w.divisor is None else w.divisor.tobytes()
                batches.setdefault((w.hessian_of, scheme, np.dtype(store), w.policy.clip, divisor), []).append((rel, params))
            else:
                rounded[rel] = (w.weight if clipped is None else clipped), None
        for (_, scheme, store, *_), members in batches.items():
            rounded.update(self._gptq(work, members, scheme, store))
        return rounded

    def _gptq(self, work: dict[str, LayerWork], members: list[tuple[str, QuantParams | None]], scheme: QuantScheme, store: np.dtype) -> dict[str, tuple[np.ndarray, QuantParams]]:
        """GPTQ of layers sharing one Hessian (``members``: name and clipped params or None),
        their weights stacked: GPTQ quantizes each output row on its own given the Hessian."""
        g = self.args.gptq
        weights = [work[rel].weight for rel, _ in members]
        fixed = [params for _, params in members]
        params = None
        if fixed[0] is not None:
            params = QuantParams(np.concatenate([p.scale for p in fixed]), np.concatenate([p.zero_point for p in fixed]), fixed[0].scheme)
        result = gptq_quantize(np.concatenate(weights), work[members[0][0]].hessian(work), scheme, block_size=g.block_size, damp_percent=g.damp_percent,
                               act_order=g.desc_act, static_groups=g.static_groups, scale_dtype=store, params=params,
                               refit_scales=g.refit_scales)
        cuts = np.cumsum([len(weight) for weight in weights])[:-1]
        parts = zip(np.split(result.weight, cuts), np.split(result.params.scale, cuts), np.split(result.params.zero_point, cuts))
        return {rel: (np.array(weight), QuantParams(scale, zero_point, result.params.scheme)) for (rel, _), (weight, scale, zero_point) in zip(members, parts)}

    def _input_quantizer(self, w: LayerWork) -> nn.Cell | None:
        if w.policy.act == "dynamic":
            return DynamicInputQuantizer()
        if w.policy.act == "static":
            params = compute_params(np.array([w.lo.min()]), np.array([w.hi.max()]), ACT_SCHEME)
            return StaticInputQuantizer(float(params.scale[0]), float(params.zero_point[0]))
        return None

    def _place_kv_caches(self, block_name: str, block: nn.Cell, caches: list[tuple[str, nn.Cell]], watchers: dict[str, ObservingKVCache]) -> None:
        if not self.kv_quant:
            return
        for name, cache in caches:
            if self.static_kv:
                watcher = watchers[name]
                k = compute_params(watcher.key_stats.lo, watcher.key_stats.hi, ACT_SCHEME)
                v = compute_params(watcher.value_stats.lo, watcher.value_stats.hi, ACT_SCHEME)
                new = StaticInt8KVCache(cache.num_heads, cache.head_dim, Tensor(k.scale), Tensor(k.zero_point), Tensor(v.scale), Tensor(v.zero_point))
            else:
                new = DynamicInt8KVCache(cache.num_heads, cache.head_dim)
            replace_cell(block, name, new, name_prefix(block_name))


def _weight_scheme(w: LayerWork) -> QuantScheme:
    return w.policy.weight.scheme(linear_view(w.cell))


class _GroupInPass:
    """Layers sharing an input, calibrated inside the one pass over their block.

    The first call of any of them hands over the group's input ``x`` (every calibration row:
    the helper runs the state in one call): the layers' observers record it, the group is
    migrated, clipped and rounded exactly as after an observing pass, and every call of the
    pass then runs the simulated layer. So each group's statistics come from the outputs of
    the groups before it, already quantized (true-sequential, AutoGPTQ's default
    ``true_sequential=True``), and the pass's output is the calibrated block's.

    When ``1/s`` was folded into the norm producing ``x``, that norm already ran in this
    pass: its output is multiplied by ``1/s`` here instead. The product can differ from the
    folded norm's output in the last bit, so the next block's calibration inputs may differ
    that much from what the deployed network computes; the calibrated layers are the same.
    """

    def __init__(self, calibrator: BlockCalibrator, block: nn.Cell, work: dict[str, LayerWork], plans: list[Plan], norms: dict[str, list[np.ndarray]]) -> None:
        self.calibrator, self.block, self.work, self.plans, self.norms = calibrator, block, work, plans, norms
        self.cells: dict[str, nn.Cell] | None = None
        self.inverse: Tensor | None = None

    def forward(self, member: str, x: Tensor) -> Tensor:
        if self.cells is None:
            self._calibrate(x)
        return self.cells[member](x if self.inverse is None else x * self.inverse)

    def _calibrate(self, x: Tensor) -> None:
        calibrator = self.calibrator
        for rel, w in self.work.items():
            if w.policy.needs_input_stats:
                w.observer = calibrator._observer(w, rel)
                w.observer.record(x)
        self.cells, folded = calibrator._simulate(self.block, self.work, self.plans, self.norms, calibrator.args.alpha[0], gptq=True)
        if folded:
            (inverse,) = folded.values()
            self.inverse = Tensor(inverse, x.dtype)

    def calibrated(self, block_name: str) -> dict[str, nn.Cell]:
        """The simulated cells, by name in the block; raises if the pass never called the group."""
        if self.cells is None:
            names = [full_name(block_name, rel) for rel in self.work]
            raise CalibrationDataError(f"layers {names} were never called when their block ran on the calibration data, so they cannot be calibrated")
        return self.cells


class _QuantizeOnCall(nn.Cell):
    """Stands in for one layer of a :class:`_GroupInPass` while its block's one pass runs."""

    def __init__(self, group: _GroupInPass, member: str) -> None:
        super().__init__()
        self.group, self.member = group, member

    def construct(self, x: Tensor) -> Tensor:
        return self.group.forward(self.member, x)
