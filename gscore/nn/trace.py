"""Tracing a network's structure from real forward passes: which layers share which channels.

Structured pruning must know, for every convolution, which layers read its output channels and
which other convolutions' channels are tied to them. Cell names and attribute order say nothing
reliable about that (a ``construct`` can call its cells in any order, reuse them, add tensors
with plain operators, pool with a functional op), so this module runs the network on a probe
input and watches it:

1. :func:`trace_calls` hooks every *atomic* cell (``Conv2d``, ``Dense``, ``BatchNorm2d`` or any
   cell without children) and records each call with its input and output tensors.
2. :func:`channel_groups` then probes every ``Conv2d`` by data flow: it perturbs a random subset
   ``S`` of the convolution's output channels, *pins* the outputs of every other ``Conv2d`` and
   ``Dense`` to their unperturbed values (so the perturbation stops at the first layers that
   mix channels), and records which channels of which cell inputs changed. Every changed input
   must carry exactly the channels of ``S`` at the same positions (NCHW channel ``c``, or the
   ``H*W`` features ``c*H*W ...`` of a flattened map, or feature ``c`` after global pooling);
   three probes with different subsets (one of them with the opposite sign, so a ReLU cannot hide
   every change) make a shifted or permuted channel map (a concat, a channel shuffle, a reshape)
   show. Operations outside cells -- the ``+`` of a residual block, ``ops.ReduceMean`` -- are
   invisible to hooks but not to this check.
3. Convolutions whose perturbations reach a common cell input are *tied*: their channels are
   added together somewhere (a residual block's ``conv2 + shortcut``), so channel ``c`` can only
   be removed from all of them at once. Tied convolutions form one :class:`ChannelGroup` with one
   set of kept channels, their BatchNorms and every consumer of the merged channels.

Supported: chains ``Conv2d -> [BatchNorm2d | activation | pooling | dropout | additions with other
such chains | functional channel-wise ops]* -> Conv2d`` (``group=1``), ``-> Flatten -> Dense`` or
``-> global pooling -> Dense``, fan-out to several consumers, and residual networks (inner and
outer channels). Everything else is returned in :attr:`ChannelGroups.unsupported` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from mindspore import Tensor, nn

from gscore.errors import GscoreError
from gscore.nn.norms import is_foldable_norm
from gscore.nn.walk import iter_cells

#: Cells traced as one unit even when they hold sub-cells (``Dense`` holds its activation).
ATOMIC_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Dense, nn.BatchNorm2d)

#: Cells that act on each channel separately and hold no per-channel parameters.
CHANNELWISE_FREE: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.HSwish, nn.HSigmoid,
    nn.Softsign, nn.Mish, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
)

#: Relative size of the probe perturbation; anything it reaches changes far beyond float noise.
_PERTURBATION = 10.0


class UnsupportedStructureError(GscoreError, ValueError):
    """A layer asked to be pruned sits in a structure gscore cannot shrink; the message says why."""


def is_atomic(cell: nn.Cell) -> bool:
    """True for the cells the tracer hooks: known layer types, foldable norms (whatever operator
    cell computes them) and cells without children."""
    return isinstance(cell, ATOMIC_TYPES) or not cell.name_cells() or is_foldable_norm(cell)


@dataclass
class CellCall:
    """One call of an atomic cell during the probe forward.

    ``inputs``/``output`` are the tensor objects themselves; ``index`` counts calls of the same
    cell (a shared ReLU is called several times).
    """

    name: str
    cell: nn.Cell
    index: int
    inputs: tuple[Any, ...]
    output: Any

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.index)

    @property
    def label(self) -> str:
        return self.name if self.index == 0 else f"{self.name} (call {self.index + 1})"


@dataclass
class Trace:
    """Every atomic cell call in execution order, the network output, and the probe input."""

    calls: list[CellCall]
    output: Any
    sample: np.ndarray

    def consumers(self, tensor: Any) -> list[CellCall]:
        """The calls that received ``tensor`` (this very object) as an input."""
        return [c for c in self.calls if any(t is tensor for t in c.inputs)]

    def calls_of(self, name: str) -> list[CellCall]:
        """Every call of the cell named ``name``."""
        return [c for c in self.calls if c.name == name]


class CallHooks:
    """Forward hooks on every atomic cell for the duration of a ``with`` block, in eval mode.

    ``on_call(name, cell, call_index, inputs, output)`` runs after each call; what it returns
    (unless None) replaces the output. Every cell's own train/eval mode is restored afterwards.
    """

    def __init__(self, network: nn.Cell, on_call: Any) -> None:
        self.network = network
        self.on_call = on_call
        self.handles: list[Any] = []

    def __enter__(self) -> "CallHooks":
        self.modes = [(cell, cell.training) for _, cell in self.network.cells_and_names()]  # outermost first
        self.network.set_train(False)  # BN must not update its statistics while we probe
        for name, cell in iter_cells(self.network, is_atomic):
            counter = {"n": 0}

            def after(cell_: nn.Cell, inputs: tuple, output: Any, _name: str = name, _counter: dict = counter) -> Any:
                index = _counter["n"]
                _counter["n"] += 1
                return self.on_call(_name, cell_, index, inputs, output)

            self.handles.append(cell.register_forward_hook(after))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        for cell, training in self.modes:
            cell.set_train(training)


def trace_calls(network: nn.Cell, sample: Any, run: Callable[[], Any] | None = None) -> Trace:
    """Run ``network`` on ``sample`` (eval mode) and record every atomic cell call.

    ``run`` calls the network some other way (several inputs, keyword inputs); ``sample`` is
    then only kept on the trace."""
    calls: list[CellCall] = []

    def record(name: str, cell: nn.Cell, index: int, inputs: tuple, output: Any) -> None:
        calls.append(CellCall(name, cell, index, tuple(inputs), output))

    with CallHooks(network, record):
        output = network(Tensor(sample)) if run is None else run()
    return Trace(calls, output, sample)


@dataclass(frozen=True)
class Consumer:
    """A layer that reads a group's channels: its input axis shrinks with them.

    ``kind`` is ``"conv"`` (input channels) or ``"dense"`` (input features: ``features_per_channel``
    consecutive features per channel, ``H*W`` after a flatten of an NCHW map, 1 after global pooling).
    """

    name: str
    kind: str
    features_per_channel: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels of one or more ``Conv2d`` that can only be removed together, and every
    layer that shrinks with them.

    ``producers`` are the tied convolutions in execution order (one, unless an addition merges
    their channels); ``norms`` the BatchNorm2d cells on the way (their per-channel parameters
    shrink too); ``consumers`` the layers whose input axis shrinks; ``producer_norms`` the
    BatchNorm2d right after each producer (None where there is none). The group is named after
    its first producer (:attr:`name`).
    """

    producers: tuple[str, ...]
    channels: int
    norms: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    producer_norms: tuple[str | None, ...] = ()

    @property
    def name(self) -> str:
        return self.producers[0]

    def norm_of(self, producer: str) -> str | None:
        """The BatchNorm2d that reads ``producer``'s output directly (its channel scale), or None."""
        return dict(zip(self.producers, self.producer_norms)).get(producer)


@dataclass
class ChannelGroups:
    """Result of :func:`channel_groups`: prunable groups by name, and the refused convolutions with why."""

    groups: dict[str, ChannelGroup] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)

    def group_of(self, convolution: str) -> ChannelGroup | None:
        """The group ``convolution`` produces channels for, or None."""
        return next((g for g in self.groups.values() if convolution in g.producers), None)


class _Unsupported(Exception):
    """Internal: a convolution's channels cannot be followed; the message says why."""


@dataclass
class _Reach:
    """Where the channels of one producer go: cells by role, and every cell input they reach."""

    norms: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    own_norm: str | None = None  # the BatchNorm2d reading the producer's output tensor itself
    touched: set[tuple[str, int, int]] = field(default_factory=set)  # (cell, call index, input position)


def _changed_units(now: Tensor, before: Tensor) -> tuple[bool, np.ndarray | None]:
    """``(anything changed, mask of the changed channel units)``: units are axis 1 of a 4-d tensor
    (channels) or the last axis of a 2-d one (features); None for other ranks."""
    a, b = now.asnumpy(), before.asnumpy()
    differs = ~np.isclose(a, b, rtol=1e-4, atol=1e-5)
    if a.ndim == 4:
        return bool(differs.any()), differs.any(axis=(0, 2, 3))
    if a.ndim == 2:
        return bool(differs.any()), differs.any(axis=0)
    return bool(differs.any()), None


def _aligned(changed: np.ndarray | None, subset: np.ndarray, channels: int, ndim: int) -> int | None:
    """Features per channel if the ``changed`` units lie within the ``subset`` channels' own
    positions (``f`` consecutive units per channel), else None."""
    if changed is None:
        return None
    units = changed.shape[0]
    if ndim == 4 and units != channels:
        return None
    if units % channels:
        return None
    per_channel = units // channels
    allowed = np.repeat(subset, per_channel)
    return per_channel if not np.any(changed & ~allowed) else None


def _probe(network: nn.Cell, trace: Trace, producer: CellCall, subset: np.ndarray, sign: float, seed: int) -> tuple[dict[tuple[str, int, int], np.ndarray | None], bool]:
    """Perturb ``subset`` channels of ``producer``; return the changed units of every reached cell
    input (pinned Conv2d/Dense outputs stop the spread) and whether the network output changed."""
    baseline = {c.key: c for c in trace.calls}
    rng = np.random.default_rng(seed)
    reached: dict[tuple[str, int, int], np.ndarray | None] = {}

    def perturb(name: str, cell: nn.Cell, index: int, inputs: tuple, output: Any) -> Any:
        base = baseline[(name, index)]
        for position, (now, before) in enumerate(zip(inputs, base.inputs)):
            if isinstance(now, Tensor) and isinstance(before, Tensor):
                moved, units = _changed_units(now, before)
                if moved:
                    reached[(name, index, position)] = units
        if (name, index) == producer.key:
            values = output.asnumpy()
            scale = _PERTURBATION * (np.abs(values).mean() + 1.0)
            noise = sign * scale * (1.0 + np.abs(rng.standard_normal(values.shape)))
            return Tensor((values + noise * subset.reshape(1, -1, 1, 1)).astype(values.dtype))
        if isinstance(cell, (nn.Conv2d, nn.Dense)):
            return base.output
        return None

    with CallHooks(network, perturb):
        output = network(Tensor(trace.sample))
    return reached, differs(_as_tuple(output), _as_tuple(trace.output))


def _single_call(trace: Trace, call: CellCall) -> None:
    calls = len(trace.calls_of(call.name))
    if calls != 1:
        raise _Unsupported(f"{call.name} ({type(call.cell).__name__}) is called {calls} times; a shared layer cannot be shrunk for one caller")


def _follow(network: nn.Cell, trace: Trace, producer: CellCall) -> _Reach:
    """Probe ``producer`` and classify every cell its channels reach (see the module docstring)."""
    _single_call(trace, producer)
    if producer.cell.group != 1:
        raise _Unsupported(f"it is a grouped convolution (group={producer.cell.group}), whose output channels are tied to its inputs")
    channels = int(producer.output.shape[1])
    calls = {c.key: c for c in trace.calls}
    rng = np.random.default_rng(0)
    half = np.zeros(channels, bool)
    half[rng.permutation(channels)[: max(1, channels // 2)]] = True
    other = rng.permutation(channels)[: max(1, channels // 2)]
    # a random half of the channels, its complement, another random half with the opposite sign
    probes = [(half, 1.0), (~half if channels > 1 else half, 1.0), (np.isin(np.arange(channels), other), -1.0)]
    reach = _Reach()
    per_channel: dict[tuple[str, int, int], int] = {}
    for number, (subset, sign) in enumerate(probes):
        reached, out_changed = _probe(network, trace, producer, subset, sign, seed=number)
        if out_changed:
            raise _Unsupported("its channels reach the network output without passing through a layer that consumes channels")
        for where, changed in reached.items():
            call = calls[where[:2]]
            ndim = call.inputs[where[2]].ndim
            f = _aligned(changed, subset, channels, ndim)
            if f is None:
                raise _Unsupported(
                    f"its channels reach input {where[2]} of {call.label} ({type(call.cell).__name__}) at other positions "
                    "(a concat, reshape or channel-mixing operation outside the cells)"
                )
            if per_channel.setdefault(where, f) != f:
                raise _Unsupported(f"its channels reach {call.label} with an inconsistent layout")
    for where in sorted(per_channel, key=lambda w: [c.key for c in trace.calls].index(w[:2])):
        call = calls[where[:2]]
        cell, f = call.cell, per_channel[where]
        if call.key == producer.key:
            continue
        reach.touched.add(where)
        if isinstance(cell, nn.Conv2d):
            if cell.group != 1:
                raise _Unsupported(f"it feeds {call.label}, a grouped convolution (group={cell.group}), which is not supported")
            _single_call(trace, call)
            reach.consumers.append(Consumer(call.name, "conv"))
        elif isinstance(cell, nn.Dense):
            if call.inputs[where[2]].ndim != 2:
                raise _Unsupported(f"it feeds {call.label}, a Dense applied to a {call.inputs[where[2]].ndim}-d tensor; only [n, features] inputs are supported")
            _single_call(trace, call)
            reach.consumers.append(Consumer(call.name, "dense", f))
        elif isinstance(cell, nn.BatchNorm2d):
            _single_call(trace, call)
            reach.norms.append(call.name)
            if call.inputs[0] is producer.output:
                reach.own_norm = call.name
        elif not isinstance(cell, CHANNELWISE_FREE):
            raise _Unsupported(f"it feeds {call.label} ({type(cell).__name__}), which cannot be shrunk along channels")
    return reach


NETWORK_OUTPUT = "the network output"


def perturbation_reach(
    network: nn.Cell,
    trace: Trace,
    producer: tuple[str, int],
    passes: set[tuple[str, int]],
    pinned: set[tuple[str, int]],
    run: Callable[[], Any] | None = None,
) -> str | None:
    """What a perturbation of one call's output reaches beyond where it may go, or None.

    Reruns ``network`` (``run``, else on ``trace.sample``) with the ``producer`` call's output
    (``(cell name, call index)``) perturbed and the ``pinned`` calls' outputs held at their
    traced values. Returns the label of the first call outside ``passes`` and ``pinned`` whose
    input changed, else :data:`NETWORK_OUTPUT` if the output changed, else None.
    """
    baseline = {(c.name, c.index): c for c in trace.calls}
    noise_rng = np.random.default_rng(0)
    changed: list[str] = []

    def perturb(name: str, cell: nn.Cell, index: int, inputs: tuple, output: Any) -> Any:
        key = (name, index)
        base = baseline[key]
        if key != producer and key not in passes and key not in pinned and differs(tuple(inputs), base.inputs):
            changed.append(base.label)
        if key == producer:
            values = output.asnumpy()
            scale = _PERTURBATION * (np.abs(values).mean() + 1.0)
            return Tensor(values + scale * noise_rng.standard_normal(values.shape).astype(values.dtype))
        if key in pinned:
            return base.output
        return None

    with CallHooks(network, perturb):
        output = network(Tensor(trace.sample)) if run is None else run()
    if changed:
        return changed[0]
    return NETWORK_OUTPUT if differs(_as_tuple(output), _as_tuple(trace.output)) else None


def _as_tuple(output: Any) -> tuple[Any, ...]:
    """A network's output as a tuple of outputs."""
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def differs(now: tuple[Any, ...], before: tuple[Any, ...]) -> bool:
    """True if any tensor in ``now`` differs from its counterpart in ``before`` beyond float noise."""
    return any(
        not np.allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-5)
        for a, b in zip(now, before)
        if isinstance(a, Tensor) and isinstance(b, Tensor)
    )


def channel_groups(network: nn.Cell, sample: np.ndarray) -> ChannelGroups:
    """Trace ``network`` on ``sample`` (a small batch, e.g. ``[2, 1, 28, 28]``) and group channels.

    Every ``Conv2d`` lands either in one of :attr:`ChannelGroups.groups` (with the convolutions
    tied to it and the layers that shrink with them) or in :attr:`ChannelGroups.unsupported` (with
    the reason; a convolution tied to an unsupported one is unsupported too). The network runs in
    eval mode, once plus three times per convolution, and is left unchanged.
    """
    trace = trace_calls(network, sample)
    producers = [c for c in trace.calls if isinstance(c.cell, nn.Conv2d) and c.index == 0]
    reaches: dict[str, _Reach] = {}
    result = ChannelGroups()
    for call in producers:
        try:
            reaches[call.name] = _follow(network, trace, call)
        except _Unsupported as reason:
            result.unsupported[call.name] = str(reason)
    order = [c.name for c in producers]
    parent = {name: name for name in order}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    owner: dict[tuple[str, int, int], str] = {}
    for name in order:
        touched = reaches[name].touched if name in reaches else set()
        for where in touched:
            if where in owner:
                a, b = sorted((root(owner[where]), root(name)), key=order.index)
                parent[b] = a
            else:
                owner[where] = name
    members: dict[str, list[str]] = {}
    for name in order:
        members.setdefault(root(name), []).append(name)
    for tied in members.values():
        bad = [n for n in tied if n in result.unsupported]
        if bad:
            for name in tied:
                result.unsupported.setdefault(name, f"its channels are added to those of {bad[0]}, which cannot be pruned: {result.unsupported[bad[0]]}")
            continue
        norms = [n for name in tied for n in reaches[name].norms]
        consumers = [c for name in tied for c in reaches[name].consumers]
        channels = int(trace.calls_of(tied[0])[0].output.shape[1])
        own = tuple(reaches[name].own_norm for name in tied)
        result.groups[tied[0]] = ChannelGroup(tuple(tied), channels, tuple(dict.fromkeys(norms)), tuple(dict.fromkeys(consumers)), own)
    return result
