"""KV caches for decoder models: the float cache and the int8 caches it can be swapped for.

A cache cell is asked once per attention call to *store* the new keys/values (``[batch,
kv_heads, new_tokens, head_dim]``) and to *return* every cached entry as the attention will
see it. Queries therefore always attend to what the cache holds — for an int8 cache, the
dequantised entries, their own position included — so measured perplexity shows the real
cost of an int8 cache, also during a full-sequence prefill.

The storage is a list of tensors per call (concatenated on read), reset by :meth:`reset`.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


class FloatKVCache(nn.Cell):
    """Stores keys and values in the compute dtype (the float baseline).

    ``num_heads``/``head_dim`` describe the entries (``[batch, num_heads, tokens, head_dim]``)
    so a quantizer can build per-channel parameters without running the model.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def reset(self) -> None:
        """Forget every cached entry (a new sequence starts)."""
        self.keys, self.values = [], []

    def encode(self, x: Tensor, which: int) -> tuple[Tensor, ...]:
        """What is stored for ``x`` (``which``: 0 keys, 1 values)."""
        return (x,)

    def decode(self, stored: tuple[Tensor, ...], which: int) -> Tensor:
        """The float tensor attention sees for one stored chunk."""
        return stored[0]

    def construct(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.keys.append(self.encode(k, 0))
        self.values.append(self.encode(v, 1))
        k_all = ops.cat([self.decode(s, 0) for s in self.keys], axis=2)
        v_all = ops.cat([self.decode(s, 1) for s in self.values], axis=2)
        return k_all, v_all

    def stored_bytes(self) -> int:
        """Bytes held by the cache storage (data and per-entry scales)."""
        return sum(t.nbytes for chunk in self.keys + self.values for t in chunk)


class StaticInt8KVCache(FloatKVCache):
    """int8 storage with per-channel scales from calibration: one per (kv head, head dim).

    ``k_scale``/``v_scale`` and ``k_zp``/``v_zp`` are parameters of shape ``[kv_heads, 1,
    head_dim]`` so they land in the checkpoint; asymmetric (zero point) because keys are not
    centred. Stored entries are ``q = clip(round(x / scale) + zp, -128, 127)``.
    """

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


class DynamicInt8KVCache(FloatKVCache):
    """int8 storage with a symmetric scale per (token, kv head), computed as entries arrive.

    Needs no calibration; each stored chunk carries its scales ``[batch, kv_heads, tokens, 1]``
    in float32 (4 bytes per 64-value head vector: 6 % overhead at head_dim 64).
    """

    def encode(self, x: Tensor, which: int) -> tuple[Tensor, ...]:
        x = ops.cast(x, ms.float32)
        scale = ops.maximum(ops.amax(ops.abs(x), axis=-1, keepdims=True) / 127.0, 1e-8)
        return ops.cast(ops.clamp(ops.round(x / scale), -127, 127), ms.int8), scale

    def decode(self, stored: tuple[Tensor, ...], which: int) -> Tensor:
        return ops.cast(stored[0], ms.float32) * stored[1]
