"""A single-token decode step of a deployed Llama as native kernel calls, without a graph launch.

Under :class:`gscore.nn.decoding.CompiledDecoder` a deployed SmolLM2 step is a MindSpore graph of
a token lookup, one ``gsk_decoder_layer`` operator per block, the final norm and the float head.
Launching that graph (binding every operator's few dozen inputs, allocating outputs) took about
a third of an A16W4 step on a 2-core machine (``bench/results/decode_floor*.md``). When every
block runs as one operator, the step is nothing but those kernels, so :class:`NativeStep` calls
them itself through ctypes (:class:`gscore.kernels.direct.Call`), in the graph's order, on the
network's own parameters (numpy views of their memory) and KV caches (written in place, so graph
calls and native steps share one cache): the logits are bit-identical to the graph's.

The views are only valid while each parameter keeps its storage; a checkpoint load or
``set_data`` may move it. Every step therefore compares each parameter's data pointer with the
one its view was made from and rebuilds the calls when any moved (a fraction of a microsecond
a parameter).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mindspore import Parameter, Tensor

from gscore import kernels
from gscore.kernels.direct import Call


class ParameterCopiedError(RuntimeError):
    """MindSpore gave a copy of a parameter where the native step needs a view of its memory."""


class NativeStep:
    """``network``'s decode step for one token of batch 1 over its preallocated KV caches of
    ``capacity`` positions; ``step(token, start)`` gives the logits ``[1, 1, vocab]``.

    Build it with :meth:`for_network`, which returns None for a network it cannot run (a block
    not fused into one operator, a head that is neither the float ``f32_linear`` kernel nor a
    quantized linear on one kernel call, entry or exit rotations, a MindSpore that gives copies
    of parameters); the caller keeps its graph then.
    :attr:`calls` are the step's kernel calls in order (what ``bench/decode_floor.py`` times alone)."""

    def __init__(self, network: Any, capacity: int) -> None:
        self.network = network
        config = network.config
        self.prefix = network.prefix_length
        self.capacity = capacity
        self.x = [np.zeros((1, config.hidden_size), np.float32) for _ in range(2)]  # ping-pong hidden states
        self.cos = np.zeros((1, config.head_dim), np.float32)
        self.sin = np.zeros((1, config.head_dim), np.float32)
        self.mask = np.zeros((1, self.prefix + capacity), np.float32)
        self.normed = np.zeros((1, config.hidden_size), np.float32)
        self.logits = np.zeros((1, config.vocab_size), np.float32)
        self._build()

    @classmethod
    def for_network(cls, network: Any, capacity: int) -> NativeStep | None:
        """A native step for ``network`` if every part of its step is a native kernel, else None."""
        model = getattr(network, "model", None)
        if model is None or not kernels.enabled() or not _native_head(network):
            return None
        if model.entry_rotation is not None or model.exit_rotation is not None or model.norm.norm.native is None:
            return None
        if not all(layer.block_op is not None and layer.self_attn.kv_cache.takes_rows for layer in model.layers):
            return None
        try:
            return cls(network, capacity)
        except ParameterCopiedError:
            return None

    def _build(self) -> None:
        """The calls of one step, on views of the parameters as they are stored now."""
        level = kernels.level()
        model = self.network.model
        x, cos, sin, mask = (Tensor(a) for a in (self.x[0], self.cos, self.sin, self.mask))  # stand-ins, found by identity
        own = {id(cos): self.cos, id(sin): self.sin, id(mask): self.mask}
        self.calls: list[Call] = []
        self.parameters: list[Parameter] = []
        for i, layer in enumerate(model.layers):
            own[id(x)] = self.x[i % 2]  # the hidden state flips between the two buffers
            inputs = [own[id(t)] if id(t) in own else self._view(t) for t in layer.block_inputs(x, cos, sin, mask)]
            self.calls.append(Call("decoder_layer", level, inputs, [self.x[(i + 1) % 2]]))
        hidden = self.x[len(model.layers) % 2]
        self.calls.append(Call("rms_norm", level, [hidden, self._view(model.norm.weight), model.norm.norm.eps_tensor.asnumpy()], [self.normed]))
        if self.network.head_is_linear:  # a quantized head: its own kernel call, as QuantLinear.project_native makes it
            head = self.network.lm_head
            self.calls.append(Call(head.kernel, level, [self.normed, *(self._view(t) for t in head.kernel_inputs())], [self.logits]))
        else:
            self.calls.append(Call("f32_linear", level, [self.normed, self._view(self.network.head_table())], [self.logits]))
        self.table = self._view(model.embed_tokens.embedding_table)
        self.pointers = tuple(p.data_ptr() for p in self.parameters)

    def _view(self, tensor: Tensor) -> np.ndarray:
        """A parameter as a numpy view of its memory (a constant tensor as a copy, kept here)."""
        array = tensor.asnumpy()
        if isinstance(tensor, Parameter):
            if array.ctypes.data != tensor.data_ptr():
                raise ParameterCopiedError(f"{tensor.name}: MindSpore gave a copy, not a view of the parameter's memory; the native step cannot write or read it in place")
            self.parameters.append(tensor)
        return array

    def step(self, token: int, start: int) -> Tensor:
        """Logits ``[1, 1, vocab]`` of ``token`` at position ``start`` (positions already cached);
        the token's keys and values are appended to the caches."""
        vocab = self.table.shape[0]
        if not 0 <= token < vocab:
            raise ValueError(f"token id {token} is outside the vocabulary [0, {vocab})")
        first = self.prefix + start
        if start >= self.capacity or first >= self.network.config.max_positions:
            raise ValueError(f"position {start} is past the cache capacity {self.capacity} or max_positions")
        if tuple(p.data_ptr() for p in self.parameters) != self.pointers:
            self._build()
        np.copyto(self.x[0][0], self.table[token])
        np.copyto(self.cos[0], self.network.cos[first])
        np.copyto(self.sin[0], self.network.sin[first])
        self.mask[0, : first + 1] = 0.0
        self.mask[0, first + 1 :] = np.float32(-1e9)
        for call in self.calls:
            call.run()
        return Tensor(self.logits.reshape(1, 1, -1))


def _native_head(network: Any) -> bool:
    """Whether the output head is one kernel call: the float head on ``f32_linear``, or a linear
    head deployed on a native kernel with nothing around the call (no bias, activation or smooth
    scale applied outside it)."""
    if not network.head_is_linear:
        return getattr(network, "head_kernel", None) is not None
    head = network.lm_head
    return getattr(head, "native", None) is not None and head.groupable and not head.has_bias
