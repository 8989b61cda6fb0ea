"""KV caches for decoder models: the float cache and the int8 caches it can be swapped for.

A cache cell is called once per attention layer and step with the new queries, keys and values
(``q [batch, heads, new_tokens, head_dim]``, ``k``/``v [batch, kv_heads, new_tokens, head_dim]``,
RoPE applied) and the additive mask ``[new_tokens, cached_tokens]``: it *stores* the new keys
and values, then returns the attention of the queries over every cached entry, shaped
``[batch * new_tokens, heads * head_dim]`` (what the output projection takes). Queries always
attend to what the cache holds — for an int8 cache, the dequantised entries, their own position
included — so measured perplexity shows the real cost of an int8 cache, also during a
full-sequence prefill. Heads are grouped: query head ``h`` reads kv head ``h // (heads / kv_heads)``.

A model may also pass a fixed float *prefix* (``prefix_key``/``prefix_value [1, kv_heads, P,
head_dim]``, see :meth:`gscore.models.llama.LlamaForCausalLM.set_prefix`): entries every
sequence starts with, never stored in (or quantized by) the cache, attended before the cache's
own. The mask then has ``P`` more columns, first.

Two storage modes:

* *growing* (default): a list of stored chunks, concatenated on read, emptied by :meth:`reset`;
  any number of tokens.
* *preallocated* (:meth:`FloatKVCache.allocate`): fixed token-major buffers
  ``[capacity, batch, kv_heads, ...]`` and a ``length`` counter, so shapes never change between
  steps and a decode step can be compiled once (:mod:`gscore.nn.decoding`). The mask is then
  ``[new_tokens, capacity]``. The buffers are parameters only while allocated (never in a
  checkpoint: :meth:`release` removes them).

With native kernels (:mod:`gscore.kernels`) attention runs as one operator that reads the int8
entries directly (dequantisation folded into its dot products); a preallocated cache also
stores the new entries inside that same operator. Growing caches use it for any number of new
tokens: a 512-token prefill (perplexity windows, calibration passes) took 2.4 ms a layer in the
kernel against 16 ms in MindSpore ops (``bench/results/kernels_amd_vnni.md``). Without native
kernels, MindSpore ops throughout.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from gscore import kernels
from gscore.kernels.ops import primitive


def attention_ops(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, prefix_key: Tensor | None = None, prefix_value: Tensor | None = None) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` with MindSpore ops, kv heads repeated for the query
    heads; ``q [b, heads, t, d]``, ``k``/``v [b, kv_heads, s, d]`` -> ``[b, t, heads, d]``.
    A float prefix ``[1, kv_heads, p, d]`` goes before ``k``/``v`` (``mask [t, p + s]``)."""
    if prefix_key is not None:
        shape = (k.shape[0], k.shape[1], prefix_key.shape[2], k.shape[3])
        k = ops.cat([ops.broadcast_to(prefix_key, shape), k], axis=2)
        v = ops.cat([ops.broadcast_to(prefix_value, shape), v], axis=2)
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = ops.repeat_interleave(k, group, axis=1)
        v = ops.repeat_interleave(v, group, axis=1)
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale
    # The mask is tiled to the scores' shape first: MindSpore's CPU Add broadcasting [t, s] over
    # [b, heads, t, s] took ~15 ms at 9 heads x 512 x 512, tile and an add of equal shapes ~1.7 ms
    # (a third of a 512-token prefill went to that add). Same sums either way.
    scores = scores + ops.tile(ops.reshape(mask, (1, 1, *mask.shape)), (scores.shape[0], scores.shape[1], 1, 1))
    out = ops.matmul(ops.softmax(scores, axis=-1), v)
    return ops.transpose(out, (0, 2, 1, 3))


class FloatKVCache(nn.Cell):
    """Stores keys and values in float32 (the float baseline).

    ``num_heads``/``head_dim`` describe the entries (``[batch, num_heads, tokens, head_dim]``)
    so a quantizer can build per-channel parameters without running the model. Subclasses
    define how entries are stored (:meth:`encode`), read back (:meth:`decode`) and handed to
    the native attention kernel (:attr:`kernel_kind`, :meth:`kernel_args`).
    """

    kernel_kind = "float"

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.keys: list[tuple[Tensor, ...]] = []
        self.values: list[tuple[Tensor, ...]] = []
        self.capacity = 0
        self.parts = 0
        self.native = None
        self.fused = None

    # -- storage format: subclasses override ------------------------------------------------

    def encode(self, x: Tensor, which: int) -> tuple[Tensor, ...]:
        """What is stored for ``x [batch, heads, tokens, head_dim]`` (``which``: 0 keys, 1
        values): a tuple of tensors shaped ``[batch, heads, tokens, ...]``."""
        return (ops.cast(x, ms.float32),)

    def decode(self, stored: tuple[Tensor, ...], which: int) -> Tensor:
        """The float32 entries ``[batch, heads, tokens, head_dim]`` of stored parts."""
        return stored[0]

    def kernel_args(self, keys: tuple[Tensor, ...], values: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The stored parts and parameters in the order the attention kernels take them."""
        return (*keys, *values)

    # -- growing storage --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every cached entry (a new sequence starts)."""
        self.keys, self.values = [], []
        if self.capacity:  # in place: compiled graphs hold this parameter's memory
            ops.assign(self.length, Tensor(np.zeros(1, np.int32)))

    def stored_bytes(self) -> int:
        """Bytes held by the cache storage (data and per-entry scales)."""
        if self.capacity:
            return sum(p.nbytes for p in self._all_buffers())
        return sum(t.nbytes for chunk in self.keys + self.values for t in chunk)

    def _append(self, k: Tensor, v: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        self.keys.append(self.encode(k, 0))
        self.values.append(self.encode(v, 1))
        joined_k = tuple(ops.cat(parts, axis=2) for parts in zip(*self.keys))
        joined_v = tuple(ops.cat(parts, axis=2) for parts in zip(*self.values))
        return joined_k, joined_v

    # -- preallocated storage ---------------------------------------------------------------

    def allocate(self, batch: int, capacity: int, name: str) -> None:
        """Switch to preallocated buffers for ``batch`` sequences of up to ``capacity`` tokens;
        ``name`` (the cell's path in the network) makes the parameter names unique."""
        self.release()
        probe = self.encode(Tensor(np.zeros((batch, self.num_heads, 1, self.head_dim), np.float32)), 0)
        if len(probe) not in (1, 2):
            raise TypeError(f"{type(self).__name__}.encode returns {len(probe)} parts; preallocated caches hold 1 or 2")
        self.parts = len(probe)
        for side in ("key", "value"):
            for i, part in enumerate(probe):
                shape = (capacity, batch, self.num_heads, part.shape[-1])
                buffer = Parameter(Tensor(np.zeros(shape, part.asnumpy().dtype)), name=f"{name}.{side}_buffer{i}", requires_grad=False)
                setattr(self, f"{side}_buffer{i}", buffer)
        self.length = Parameter(Tensor(np.zeros(1, np.int32)), name=f"{name}.length", requires_grad=False)
        self.capacity = capacity
        self.keys, self.values = [], []
        self.fused = primitive(f"cache_attention_{self.kernel_kind}")

    def release(self) -> None:
        """Back to growing storage; the buffers (and their parameters) are dropped."""
        if not self.capacity:
            return
        for side in ("key", "value"):
            for i in range(self.parts):
                delattr(self, f"{side}_buffer{i}")
        delattr(self, "length")
        self.capacity = 0
        self.fused = None

    def _all_buffers(self) -> list[Parameter]:
        return [*self._side("key"), *self._side("value")]

    def _side(self, side: str) -> tuple[Parameter, ...]:
        """The buffers of one side, by plain attribute access (compiles in graph mode)."""
        if side == "key":
            return (self.key_buffer0,) if self.parts == 1 else (self.key_buffer0, self.key_buffer1)
        return (self.value_buffer0,) if self.parts == 1 else (self.value_buffer0, self.value_buffer1)

    def _write(self, k: Tensor, v: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """MindSpore-ops store into the buffers; returns every buffer as ``[batch, heads, capacity, ...]``."""
        rows = self.length + ops.arange(0, k.shape[2], dtype=ms.int32)
        for side, x, which in (("key", k, 0), ("value", v, 1)):
            for buffer, part in zip(self._side(side), self.encode(x, which)):
                ops.scatter_update(buffer, rows, ops.transpose(part, (2, 0, 1, 3)))
        ops.assign_add(self.length, ops.full((1,), k.shape[2], dtype=ms.int32))
        keys = tuple(ops.transpose(b, (1, 2, 0, 3)) for b in self._side("key"))
        values = tuple(ops.transpose(b, (1, 2, 0, 3)) for b in self._side("value"))
        return keys, values

    # -- attention --------------------------------------------------------------------------

    def _native_kernel(self) -> object:
        if self.native is None and kernels.enabled():
            self.native = primitive(f"attention_{self.kernel_kind}")
        return self.native

    @property
    def takes_rows(self) -> bool:
        """Whether :meth:`attend_rows` works: a preallocated cache with its native operator."""
        return bool(self.capacity) and self.fused is not None

    def attend_rows(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, prefix_key: Tensor | None = None, prefix_value: Tensor | None = None) -> Tensor:
        """As the cell's call, for ``q``/``k``/``v`` given as the projections compute them,
        token rows ``[batch * tokens, heads * head_dim]``: the native operator reads that layout
        itself, which saves a decode step three transposes per layer (about 30 µs each on
        MindSpore's CPU runtime). Only when :attr:`takes_rows`; the same operator also takes the
        cell's ``[batch, heads, tokens, head_dim]`` layout."""
        return self.fused(q, k, v, *self.row_inputs(mask, scale, prefix_key, prefix_value))

    def row_inputs(self, mask: Tensor, scale: float, prefix_key: Tensor | None = None, prefix_value: Tensor | None = None) -> tuple[Tensor, ...]:
        """What the preallocated cache's native operator takes after q, k, v: the buffers (and
        their quantization parameters), the fill length, ``mask``, the softmax ``scale`` as a
        tensor and the optional float prefix. Only when :attr:`takes_rows`."""
        softmax_scale = ops.full((1,), scale, dtype=ms.float32)
        prefix = () if prefix_key is None else (prefix_key, prefix_value)
        return (*self.kernel_args(self._side("key"), self._side("value")), self.length, mask, softmax_scale, *prefix)

    def construct(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, prefix_key: Tensor | None = None, prefix_value: Tensor | None = None) -> Tensor:
        prefix = () if prefix_key is None else (prefix_key, prefix_value)
        if self.takes_rows:
            out = self.attend_rows(q, k, v, mask, scale, prefix_key, prefix_value)
        elif self.capacity:
            keys, values = self._write(k, v)
            out = attention_ops(q, self.decode(keys, 0), self.decode(values, 1), mask, scale, *prefix)
        else:
            keys, values = self._append(k, v)
            native = self._native_kernel()
            if native is not None:
                out = native(q, *self.kernel_args(keys, values), mask, ops.full((1,), scale, dtype=ms.float32), *prefix)
            else:
                out = attention_ops(q, self.decode(keys, 0), self.decode(values, 1), mask, scale, *prefix)
        return ops.reshape(out, (-1, q.shape[1] * q.shape[3]))


class StaticInt8KVCache(FloatKVCache):
    """int8 storage with per-channel scales from calibration: one per (kv head, head dim).

    ``k_scale``/``v_scale`` and ``k_zp``/``v_zp`` are parameters of shape ``[kv_heads, 1,
    head_dim]`` so they land in the checkpoint; asymmetric (zero point) because keys are not
    centred. Stored entries are ``q = clip(round(x / scale) + zp, -128, 127)``.
    """

    kernel_kind = "channel"

    def __init__(self, num_heads: int, head_dim: int, k_scale: Tensor, k_zp: Tensor, v_scale: Tensor, v_zp: Tensor) -> None:
        super().__init__(num_heads, head_dim)
        self.k_scale = Parameter(k_scale, name="k_scale", requires_grad=False)
        self.k_zp = Parameter(k_zp, name="k_zp", requires_grad=False)
        self.v_scale = Parameter(v_scale, name="v_scale", requires_grad=False)
        self.v_zp = Parameter(v_zp, name="v_zp", requires_grad=False)

    def _scale_zp(self, which: int) -> tuple[Tensor, Tensor]:
        return (self.k_scale, self.k_zp) if which == 0 else (self.v_scale, self.v_zp)

    def encode(self, x: Tensor, which: int) -> tuple[Tensor, ...]:
        scale, zp = self._scale_zp(which)
        q = ops.clamp(ops.round(ops.cast(x, ms.float32) / scale) + zp, -128, 127)
        return (ops.cast(q, ms.int8),)

    def decode(self, stored: tuple[Tensor, ...], which: int) -> Tensor:
        scale, zp = self._scale_zp(which)
        return (ops.cast(stored[0], ms.float32) - zp) * scale

    def kernel_args(self, keys: tuple[Tensor, ...], values: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (keys[0], self.k_scale, self.k_zp, values[0], self.v_scale, self.v_zp)


class DynamicInt8KVCache(FloatKVCache):
    """int8 storage with a symmetric scale per (token, kv head), computed as entries arrive.

    Needs no calibration; each stored chunk carries its scales ``[batch, kv_heads, tokens, 1]``
    in float32 (4 bytes per 64-value head vector: 6 % overhead at head_dim 64).
    """

    kernel_kind = "token"

    def encode(self, x: Tensor, which: int) -> tuple[Tensor, ...]:
        x = ops.cast(x, ms.float32)
        scale = ops.maximum(ops.amax(ops.abs(x), axis=-1, keepdims=True) / 127.0, 1e-8)
        return ops.cast(ops.clamp(ops.round(x / scale), -127, 127), ms.int8), scale

    def decode(self, stored: tuple[Tensor, ...], which: int) -> Tensor:
        return ops.cast(stored[0], ms.float32) * stored[1]
