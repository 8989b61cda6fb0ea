"""The NetworkHelper contract: every method an algorithm may call on a network it does not know.

:class:`NetworkHelperProtocol` lists them all. :class:`NetworkHelper` is the base to subclass: it
implements every method that has a generic answer, so ``NetworkHelper()`` itself drives any
network made of MindSpore cells, and a model adapter overrides only what it knows better
(``LlamaHelper`` splits the decoder itself and names its smoothing groups).

Generic defaults (see :mod:`gscore.calib.discovery`):

* ``blocks``: the repeated blocks, found as the ``CellList``/``SequentialCell`` of same-typed
  cells holding the most quantizable layers; a network without one is a single block;
* ``block_inputs`` / ``run_block`` / ``take`` / ``block_output``: the first block's inputs are
  captured from real forwards of the network on ``datasets``; each block's output replaces
  its first input for the next block, its other inputs (an attention mask, ...) are passed on;
* ``smooth_groups``: traced on the block: the linear layers that read one tensor, with the
  norm producing it when the norm's output reaches nothing else (so ``1/s`` can be folded in).

``datasets`` (calibration data) for the generic helper is a non-empty iterable of network
inputs, one forward each: a Tensor or numpy array (``net(x)``), a tuple (``net(*items)``: input
ids and attention mask, ...) or a dict (``net(**items)``). A list item is one array, not several
inputs. Model adapters document their own form (``LlamaHelper``: int token windows ``[n, tokens]``).

Methods with no generic answer are left out of :class:`NetworkHelper` (so ``hasattr`` tells
whether a helper has them) and listed in :data:`OPTIONAL_METHODS`: an algorithm needing one
raises :class:`~gscore.errors.MissingHelperMethodError` naming it (:func:`require_methods`).
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from gscore.errors import MissingHelperMethodError

SmoothGroups = tuple[tuple[str | None, tuple[str, ...]], ...]
"""``((norm or None, (linear, ...)), ...)``: names relative to a block; layers sharing an input."""

CALIBRATION_METHODS = ("blocks", "block_inputs", "run_block", "take", "block_output", "smooth_groups", "tokens_per_sequence")
"""What layer-by-layer calibration calls (every one has a generic default in :class:`NetworkHelper`)."""

OPTIONAL_METHODS = {
    "generation": ("generate",),
    "rotation": ("residual_stream", "prepare_rotation"),
    "a token prefix": ("set_prefix", "prefix_placeholders", "bos_token_id"),
    "an int8 output head": ("linear_head",),
    "distillation": ("logits",),
    "distillation on sampled windows": ("logits", "generate"),
}
"""Methods only a model adapter can provide, by the feature that needs them."""


class NetworkHelperProtocol(Protocol):
    """Every method gscore's algorithms call on a network helper (units and shapes in each doc)."""

    def get_spec(self, name: str) -> Any:
        """A model fact by name (``batch_size``, ``seq_length``, ...), or None if unknown."""

    def generate(self, network: Any, input_ids: Any, max_new_tokens: int = 1, **kwargs: Any) -> Any:
        """Run ``network`` on ``input_ids`` (int array ``[batch, seq]``); returns new token ids."""

    def blocks(self, network: Any) -> list[tuple[str, Any]]:
        """``(full name, cell)`` of the repeated blocks, in execution order."""

    def block_inputs(self, network: Any, datasets: Any) -> Any:
        """The first block's inputs for the whole calibration set (a state only the helper reads)."""

    def run_block(self, block: Any, state: Any) -> Any:
        """The next state: ``block`` applied to ``state``."""

    def take(self, state: Any, count: int) -> Any:
        """The state of the first ``count`` calibration items (a cheaper state for searches)."""

    def calls_block_once(self, state: Any) -> bool:
        """Optional: whether ``run_block`` runs ``state`` in one call of the block, each layer
        called once with every calibration row. Lets PTQ calibrate a block in one pass
        (true-sequential); a helper without it gets two passes per block."""

    def block_output(self, state: Any) -> Any:
        """The block outputs held by ``state`` as one float32 numpy array (compared in searches)."""

    def smooth_groups(self, block: Any) -> SmoothGroups:
        """Linear layers of ``block`` sharing an input, with the norm producing it or None."""

    def tokens_per_sequence(self) -> int:
        """Rows per sequence in a linear layer's input (to skip leading tokens); 0: not a sequence model."""

    def residual_stream(self, network: Any) -> Any:
        """Where the residual stream is read and written (:class:`~gscore.nn.rotation.ResidualStream`)."""

    def prepare_rotation(self, network: Any, rotation: Any) -> None:
        """Build the online rotations a network rotated by ``rotation [hidden, hidden]`` needs."""

    def set_prefix(self, network: Any, token_ids: Any) -> None:
        """Give ``network`` a fixed float prefix of ``token_ids``."""

    def prefix_placeholders(self, network: Any, length: int) -> None:
        """Room for a prefix of ``length`` tokens, for a checkpoint to fill (DEPLOY mode)."""

    def bos_token_id(self, network: Any) -> int | None:
        """The model's beginning-of-sequence token, or None."""

    def linear_head(self, network: Any) -> str:
        """Make the output head a linear layer (same logits) a quantizer can replace; its name."""

    def logits(self, network: Any, sample: Any) -> Any:
        """``network``'s logits for one calibration sample (an item of ``datasets``), as a differentiable float tensor ``[..., classes]``."""


class NetworkHelper:
    """Subclass per model family, or use as is for any network (generic defaults).

    ``sample`` is one network input (in the ``datasets`` item form) to trace smoothing groups
    on when no calibration data is seen, as when a DEPLOY-mode PTQ with SmoothQuant rebuilds
    the quantized structure.
    """

    sample: Any = None  # a class default too: subclasses need not call this __init__

    def __init__(self, sample: Any = None) -> None:
        self.sample = sample

    def get_spec(self, name: str) -> Any:
        return getattr(self, "specs", {}).get(name)

    def blocks(self, network: Any) -> list[tuple[str, Any]]:
        from gscore.calib.discovery import find_blocks

        self.__dict__["_network"] = weakref.ref(network)  # to trace ``sample`` through when a block's inputs are needed
        return find_blocks(network)

    def block_inputs(self, network: Any, datasets: Any) -> Any:
        from gscore.calib.discovery import capture_block_inputs

        state, probes = capture_block_inputs(network, self.blocks(network), datasets)
        self._probes().update(probes)
        return state

    def run_block(self, block: Any, state: Any) -> Any:
        return state.advance(block)

    def take(self, state: Any, count: int) -> Any:
        return state.first(count)

    def block_output(self, state: Any) -> Any:
        return state.output()

    def smooth_groups(self, block: Any) -> SmoothGroups:
        from gscore.calib.discovery import single_layer_groups, traced_smooth_groups

        cache = self.__dict__.setdefault("_groups", weakref.WeakKeyDictionary())
        if block not in cache:
            call = self._probe(block)
            cache[block] = single_layer_groups(block) if call is None else traced_smooth_groups(block, call)
        return cache[block]

    def tokens_per_sequence(self) -> int:
        return 0

    def _probes(self) -> weakref.WeakKeyDictionary:
        """One recorded call per block (kept only while the block lives)."""
        return self.__dict__.setdefault("_probe_calls", weakref.WeakKeyDictionary())

    def _probe(self, block: Any) -> Any:
        """One recorded call of ``block`` (its inputs), from the calibration data or ``sample``;
        None when there is none and tracing can be done without (a block without a norm to fold into)."""
        from gscore.calib.discovery import capture_block_inputs, has_foldable_norm

        probes = self._probes()
        network = self.__dict__["_network"]() if "_network" in self.__dict__ else None
        if block not in probes and self.sample is not None and network is not None:
            probes.update(capture_block_inputs(network, self.blocks(network), [self.sample])[1])
        if block in probes:
            return probes[block]
        if not has_foldable_norm(block):
            return None
        raise MissingHelperMethodError(
            f"{type(self).__name__} finds which norm feeds which layers by tracing a real call of the block, and has seen none of "
            f"{type(block).__name__}: pass calibration data, or give the helper one network input, NetworkHelper(sample=...), "
            "or override smooth_groups(block)"
        )


def as_helper(helper: Any) -> Any:
    """The helper an algorithm calibrates with: ``None`` is the generic :class:`NetworkHelper`; a
    :class:`NetworkHelper` (subclass) is used as is; any other object must have every
    calibration method, or :class:`~gscore.errors.MissingHelperMethodError` names those it lacks."""
    if helper is None:
        return NetworkHelper()
    if not isinstance(helper, NetworkHelper):
        missing = [m for m in CALIBRATION_METHODS if not callable(getattr(helper, m, None))]
        if missing:
            raise MissingHelperMethodError(
                f"network helper {type(helper).__name__} lacks {missing}, which layer-by-layer calibration calls; subclass "
                "gscore.calib.NetworkHelper to inherit generic ones (or pass network_helper=None for the generic helper)"
            )
    return helper


def require_methods(helper: Any, features: list[str]) -> None:
    """Raise :class:`~gscore.errors.MissingHelperMethodError` unless ``helper`` has every method
    of :data:`OPTIONAL_METHODS` that ``features`` (its keys) need."""
    missing = [m for f in features for m in OPTIONAL_METHODS[f] if not callable(getattr(helper, m, None))]
    if missing:
        raise MissingHelperMethodError(
            f"{' and '.join(features)} need a network helper that knows the model's structure; {type(helper).__name__} lacks "
            f"{missing} (a model adapter provides them, e.g. gscore.model('llama').helper(); see `gscore models`)"
        )
