"""Decoding with the forward pass compiled into MindSpore graphs.

Run op by op (PyNative), a decode step of a small LLM is dominated by framework overhead: each
of the few hundred small operators per token costs far more to dispatch than to compute. A
compiled graph dispatches them from C++. Graphs need fixed shapes, so the KV caches switch to
preallocated buffers (:meth:`gscore.nn.kv_cache.FloatKVCache.allocate`) and the mask covers
the whole capacity; then a decode step has the same shapes at every position and compiles once
(and the prompt's prefill once per prompt length).

The network must offer ``forward(input_ids, cos, sin, mask, last=False)`` (tensors, and
``last`` for the last token's logits only),
``position_inputs(tokens, start, width)``, ``reset_cache()``, ``prefix_length`` and ``config``, as
:class:`gscore.models.llama.LlamaForCausalLM` does. If it also offers ``group_linears()``, the
decoder calls it (unless told not to): a deployed Llama then runs each block as a few
linear-group operators (:mod:`gscore.nn.linear_group`), bit-identical and with a third of the
operators per token, and while the caches are preallocated as one operator per block; the
network keeps running grouped after the decoder closes (same results). A
:class:`CompiledDecoder` is called like the network itself (``decoder(input_ids, start)``), so
greedy loops written for the network (``LlamaHelper.generate``) run it unchanged.

When every block runs as one operator, a single-token step of batch 1 (what greedy decoding
asks for) skips the graph: :class:`gscore.nn.native_step.NativeStep` calls the same kernels in
the same order itself, bit-identical, without the graph launch that cost about a third of an
A16W4 step (``native_steps=False`` keeps the graph, to measure what that buys).
"""

from __future__ import annotations

from typing import Any

import mindspore as ms
from mindspore import Tensor, nn

from gscore.errors import ConfigError
from gscore.nn.kv_cache import FloatKVCache
from gscore.nn.native_step import NativeStep
from gscore.nn.walk import iter_cells


class _DecodeGraph(nn.Cell):
    """``network.forward`` under a cell of its own, one per decoder, for ``ms.jit`` to compile.

    MindSpore keys a compiled cell method by the cell, so a second decoder jitting the
    network's own method would run the first decoder's graph, which reads and writes the caches
    that decoder released (and ignores grouping changes since). A new cell is a new key."""

    def __init__(self, network: nn.Cell, last: bool) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.last = last

    def construct(self, input_ids: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        return self.network.forward(input_ids, cos, sin, mask, last=self.last)


class CompiledDecoder:
    """``network``'s forward as compiled graphs over KV caches of ``capacity`` tokens.

    ``graph=False`` (or setting :attr:`graph` later) runs the same fixed-shape forward op by op
    instead, on the same caches: what compiling buys, measured. Use as a context manager (or
    call :meth:`close`): leaving gives the caches back their growing storage and drops the
    buffers, so the network's parameters are as before. ``group_linears=False`` leaves the
    blocks ungrouped, ``fuse_blocks=False`` grouped but not one operator each (to measure what
    each buys); :attr:`grouped_blocks` counts the blocks the network grouped.
    ``native_steps=False`` (or setting :attr:`native_steps` later) runs single-token steps
    through the graph too; :attr:`native` is the :class:`~gscore.nn.native_step.NativeStep` that
    runs them otherwise (None where the network cannot, e.g. blocks not fused).
    """

    def __init__(
        self, network: nn.Cell, capacity: int, batch: int = 1, graph: bool = True, group_linears: bool = True, fuse_blocks: bool = True, native_steps: bool = True
    ) -> None:
        limit = network.config.max_positions - network.prefix_length
        if capacity < 1 or capacity > limit:
            raise ConfigError(f"capacity must be 1..{limit} tokens (max_positions less the fixed prefix), got {capacity}")
        self.network = network
        self.config = network.config
        group = getattr(network, "group_linears", None) if group_linears else None
        self.grouped_blocks = group(fuse_blocks) if group is not None else 0
        self.capacity, self.batch = capacity, batch
        self.caches = list(iter_cells(network, lambda c: isinstance(c, FloatKVCache)))
        if any(cache.capacity for _, cache in self.caches):
            raise ConfigError("this network's KV caches are held by an open CompiledDecoder; close it (or leave its with-block) before building another")
        for name, cache in self.caches:
            cache.allocate(batch, capacity, name)
        self.filled = 0
        self.graph = graph
        self._compiled = {last: ms.jit(_DecodeGraph(network, last).construct) for last in (False, True)}
        self.native = NativeStep.for_network(network, capacity) if batch == 1 else None
        self.native_steps = native_steps

    def __call__(self, input_ids: Tensor, start: int = 0, last: bool = False) -> Tensor:
        """Logits ``[batch, tokens, vocab]`` for ``input_ids [batch, tokens]`` at positions
        ``start ..``; ``start`` must be the number of tokens already cached. ``last``: the last
        token's only, ``[batch, 1, vocab]`` (the network's ``forward`` with ``last``; a graph
        of its own)."""
        batch, tokens = input_ids.shape
        if batch != self.batch:
            raise ConfigError(f"this decoder holds caches for batch {self.batch}, got input of batch {batch}")
        if start != self.filled:
            raise ConfigError(f"the caches hold {self.filled} tokens; a call must start there, got start={start} (reset_cache() to begin again)")
        if start + tokens > self.capacity:
            raise ConfigError(f"{start + tokens} tokens exceed the cache capacity of {self.capacity}; build the decoder with a larger capacity")
        if self.graph and self.native_steps and self.native is not None and tokens == 1:
            logits = self.native.step(int(input_ids.asnumpy()[0, 0]), start)
        else:
            inputs = (input_ids, *self.network.position_inputs(tokens, start, self.capacity))
            logits = self._compiled[last](*inputs) if self.graph else self.network.forward(*inputs, last=last)
        self.filled += tokens
        return logits

    def reset_cache(self) -> None:
        """Empty the caches (a new sequence starts)."""
        self.network.reset_cache()
        self.filled = 0

    def close(self) -> None:
        """Give the caches back their growing storage."""
        self.native = None
        for _, cache in self.caches:
            cache.release()
        self.caches = []

    def __enter__(self) -> "CompiledDecoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
