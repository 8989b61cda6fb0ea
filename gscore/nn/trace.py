"""Tracing a network's structure from a real forward pass: who feeds whom, channel by channel.

Structured pruning must know, for every convolution, which layers read its output channels.
Cell names and attribute order say nothing reliable about that (a ``construct`` can call its
cells in any order, reuse them, and add tensors with plain operators), so this module runs
the network once on a probe input and watches it:

1. :func:`trace_calls` hooks every *atomic* cell (``Conv2d``, ``Dense``, ``BatchNorm2d`` or any
   cell without children) and records each call with its input and output tensor objects.
   A tensor passed from one cell straight into another is the same Python object, so object
   identity gives the producer -> consumer edges between cells.
2. :func:`channel_groups` follows each ``Conv2d``'s output through channel-wise cells
   (BatchNorm2d, activations, pooling, dropout) to the layers that consume channels: another
   ``Conv2d`` (its input channels) or ``Flatten`` then ``Dense`` (its input features, ``H*W``
   per channel). Then it *verifies* the result by data flow: it perturbs the convolution's
   output, restores the consumers' outputs to their unperturbed values, and checks that no
   other cell input and not the network output changed. Operations outside cells (``x + y``
   of a residual block, ``ops.concat``, a functional reshape) are invisible to step 1 but not
   to this check, so a channel that also feeds a residual addition is reported, never pruned.

Supported: chains ``Conv2d -> [BatchNorm2d | activation | pooling | dropout]* -> Conv2d``
(``group=1``) or ``-> Flatten -> Dense``, including fan-out to several consumers and the inner
channels of residual blocks. Everything else is returned in :attr:`ChannelGroups.unsupported`
with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from mindspore import Tensor, nn

from gscore.errors import GscoreError
from gscore.nn.walk import iter_cells

#: Cells traced as one unit even when they hold sub-cells (``Dense`` holds its activation).
ATOMIC_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Dense, nn.BatchNorm2d)

#: Cells that act on each channel separately and hold no per-channel parameters.
CHANNELWISE_FREE: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.HSwish, nn.HSigmoid,
    nn.Softsign, nn.Mish, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity,
)

#: Relative size of the probe perturbation; anything it reaches changes far beyond float noise.
_PERTURBATION = 10.0


class UnsupportedStructureError(GscoreError, ValueError):
    """A layer asked to be pruned sits in a structure gscore cannot shrink; the message says why."""


def is_atomic(cell: nn.Cell) -> bool:
    """True for the cells the tracer hooks: known layer types and cells without children."""
    return isinstance(cell, ATOMIC_TYPES) or not cell.name_cells()


@dataclass
class CellCall:
    """One call of an atomic cell during the probe forward.

    ``inputs``/``output`` are the tensor objects themselves (kept alive so their identity is
    unique for the whole trace); ``index`` counts calls of the same cell (a shared ReLU is
    called several times).
    """

    name: str
    cell: nn.Cell
    index: int
    inputs: tuple[Any, ...]
    output: Any

    @property
    def label(self) -> str:
        return self.name if self.index == 0 else f"{self.name} (call {self.index + 1})"


@dataclass
class Trace:
    """Every atomic cell call in execution order, the network output, and identity edges."""

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
    """A layer that reads a convolution's channels: its input axis shrinks with them.

    ``kind`` is ``"conv"`` (input channels) or ``"dense"`` (input features after a flatten,
    ``features_per_channel`` = H*W consecutive features per channel, NCHW order).
    """

    name: str
    kind: str
    features_per_channel: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """A ``Conv2d`` whose output channels can be removed, and every layer that must follow.

    ``norms`` are the BatchNorm2d cells on the way (their per-channel parameters shrink too);
    ``consumers`` the layers whose input axis shrinks.
    """

    producer: str
    channels: int
    norms: tuple[str, ...]
    consumers: tuple[Consumer, ...]


@dataclass
class ChannelGroups:
    """Result of :func:`channel_groups`: prunable groups by producer, and the refused convolutions."""

    groups: dict[str, ChannelGroup] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)


class _Unsupported(Exception):
    """Internal: the chain from one convolution cannot be followed; the message says why."""


@dataclass
class _Chain:
    """What :func:`_follow` found: the group, and the calls the perturbation may legitimately reach."""

    group: ChannelGroup
    passes: set[tuple[str, int]]
    pinned: set[tuple[str, int]]


def _follow(trace: Trace, producer: CellCall) -> _Chain:
    """Walk from ``producer``'s output through channel-wise cells to the channel consumers."""
    norms: list[str] = []
    consumers: list[Consumer] = []
    passes = {(producer.name, producer.index)}
    pinned: set[tuple[str, int]] = set()
    frontier = [producer]
    while frontier:
        call = frontier.pop()
        readers = trace.consumers(call.output)
        if not readers:
            raise _Unsupported(
                f"the output of {call.label} is used by an operation outside the traced cells "
                "(e.g. a residual addition, a concat or the network output)"
            )
        for reader in readers:
            cell = reader.cell
            if isinstance(cell, nn.Conv2d):
                if cell.group != 1:
                    raise _Unsupported(f"it feeds {reader.label}, a grouped convolution (group={cell.group}), which is not supported")
                _single_call(trace, reader)
                consumers.append(Consumer(reader.name, "conv"))
                pinned.add((reader.name, reader.index))
            elif isinstance(cell, nn.BatchNorm2d):
                _single_call(trace, reader)
                norms.append(reader.name)
                passes.add((reader.name, reader.index))
                frontier.append(reader)
            elif isinstance(cell, CHANNELWISE_FREE):
                passes.add((reader.name, reader.index))
                frontier.append(reader)
            elif isinstance(cell, nn.Flatten):
                passes.add((reader.name, reader.index))
                for dense_call, consumer in _dense_after_flatten(trace, reader):
                    consumers.append(consumer)
                    pinned.add((dense_call.name, dense_call.index))
            else:
                raise _Unsupported(f"it feeds {reader.label} ({type(cell).__name__}), which cannot be shrunk along channels")
    group = ChannelGroup(producer.name, int(producer.output.shape[1]), tuple(dict.fromkeys(norms)), tuple(dict.fromkeys(consumers)))
    return _Chain(group, passes, pinned)


def _dense_after_flatten(trace: Trace, flatten: CellCall) -> list[tuple[CellCall, Consumer]]:
    shape = flatten.inputs[0].shape
    if len(shape) != 4:
        raise _Unsupported(f"{flatten.label} flattens a {len(shape)}-d tensor; only NCHW feature maps are supported")
    readers = trace.consumers(flatten.output)
    bad = [r.label for r in readers if not isinstance(r.cell, nn.Dense)]
    if not readers or bad:
        raise _Unsupported(f"the flattened output of {flatten.label} feeds {', '.join(bad) or 'an operation outside the traced cells'}, not only Dense layers")
    for reader in readers:
        _single_call(trace, reader)
    return [(r, Consumer(r.name, "dense", int(shape[2] * shape[3]))) for r in readers]


def _single_call(trace: Trace, call: CellCall) -> None:
    if len(trace.calls_of(call.name)) != 1:
        raise _Unsupported(f"{call.name} ({type(call.cell).__name__}) is called {len(trace.calls_of(call.name))} times; a shared layer cannot be shrunk for one caller")


def _leaks(network: nn.Cell, trace: Trace, chain: _Chain) -> str | None:
    """Perturb the producer's output, pin the consumers' outputs, report what else changed."""
    reached = perturbation_reach(network, trace, (chain.group.producer, 0), chain.passes, chain.pinned)
    if reached == NETWORK_OUTPUT:
        return "its channels reach the network output without passing through a supported consumer"
    if reached:
        return f"its channels also reach {reached} through an operation outside the traced cells (e.g. a residual addition)"
    return None


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
    now = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    before = tuple(trace.output) if isinstance(trace.output, (tuple, list)) else (trace.output,)
    return NETWORK_OUTPUT if differs(now, before) else None


def differs(now: tuple[Any, ...], before: tuple[Any, ...]) -> bool:
    """True if any tensor in ``now`` differs from its counterpart in ``before`` beyond float noise."""
    return any(
        not np.allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-5)
        for a, b in zip(now, before)
        if isinstance(a, Tensor) and isinstance(b, Tensor)
    )


def channel_groups(network: nn.Cell, sample: np.ndarray) -> ChannelGroups:
    """Trace ``network`` on ``sample`` (a small batch, e.g. ``[2, 1, 28, 28]``) and group channels.

    Every ``Conv2d`` lands either in :attr:`ChannelGroups.groups` (with the layers that shrink
    with it) or in :attr:`ChannelGroups.unsupported` (with the reason). The network is run in
    eval mode, once plus once per candidate convolution, and is left unchanged.
    """
    trace = trace_calls(network, sample)
    result = ChannelGroups()
    for call in trace.calls:
        if not isinstance(call.cell, nn.Conv2d) or call.index > 0:
            continue
        try:
            _single_call(trace, call)
            chain = _follow(trace, call)
        except _Unsupported as reason:
            result.unsupported[call.name] = str(reason)
            continue
        leak = _leaks(network, trace, chain)
        if leak:
            result.unsupported[call.name] = leak
        else:
            result.groups[call.name] = chain.group
    return result
