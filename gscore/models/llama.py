"""A compact Llama in MindSpore with a real KV cache, for CPU inference and quantization.

Why our own: mindformers' ``LlamaForCausalLM`` runs a full-sequence forward on CPU, but its
``generate`` and its incremental KV cache use kernels CPU lacks (``ArgMaxExt``; float16-only
``ApplyRotaryPosEmb``). This model keeps the usual HF parameter names
(``model.layers.{i}.self_attn.q_proj.weight`` ...) so checkpoints map one to one.

Shapes: hidden states travel as 2-D ``[batch * tokens, hidden]`` (``nn.Dense`` is several times
faster on 2-D input); attention reshapes to ``[batch, heads, tokens, head_dim]``. RoPE is
rotate-half. Every projection is an ``nn.Dense`` without bias, so weight quantizers find them;
each attention owns a ``kv_cache`` cell that quantizers can swap for an int8 one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from gscore.nn.fused import Add, RMSNormOp, Rotary, SiluMul
from gscore.nn.kv_cache import FloatKVCache


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture numbers of a Llama (defaults: SmolLM2-135M)."""

    vocab_size: int = 49152
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    max_positions: int = 2048
    bos_token_id: int = 1
    eos_token_id: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class RMSNorm(nn.Cell):
    """``x / rms(x) * weight`` over the last axis, in float32 (one fused operator)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(size, np.float32)), name="weight")
        self.norm = RMSNormOp(eps)

    def construct(self, x: Tensor) -> Tensor:
        return self.norm(x, self.weight)


def rope_tables(config: LlamaConfig) -> tuple[Tensor, Tensor]:
    """cos and sin, ``[max_positions, head_dim]``, for rotate-half RoPE."""
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim))
    angles = np.outer(np.arange(config.max_positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    return Tensor(np.cos(angles).astype(np.float32)), Tensor(np.sin(angles).astype(np.float32))


class Attention(nn.Cell):
    """Grouped-query self-attention with RoPE and a swappable KV cache cell."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        h, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, hd
        self.q_proj = nn.Dense(h, config.num_heads * hd, has_bias=False)
        self.k_proj = nn.Dense(h, config.num_kv_heads * hd, has_bias=False)
        self.v_proj = nn.Dense(h, config.num_kv_heads * hd, has_bias=False)
        self.o_proj = nn.Dense(config.num_heads * hd, h, has_bias=False)
        self.kv_cache = FloatKVCache(config.num_kv_heads, hd)
        self.rotary = Rotary()
        self.scale = 1.0 / math.sqrt(hd)

    def _heads(self, x: Tensor, batch: int, heads: int) -> Tensor:
        return ops.transpose(ops.reshape(x, (batch, -1, heads, self.head_dim)), (0, 2, 1, 3))

    def construct(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        q = self._heads(self.q_proj(x), batch, self.num_heads)
        k = self._heads(self.k_proj(x), batch, self.num_kv_heads)
        v = self._heads(self.v_proj(x), batch, self.num_kv_heads)
        q = self.rotary(q, cos, sin)
        k = self.rotary(k, cos, sin)
        return self.o_proj(self.kv_cache(q, k, v, mask, self.scale))


class MLP(nn.Cell):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Dense(config.hidden_size, config.intermediate_size, has_bias=False)
        self.up_proj = nn.Dense(config.hidden_size, config.intermediate_size, has_bias=False)
        self.down_proj = nn.Dense(config.intermediate_size, config.hidden_size, has_bias=False)
        self.gate = SiluMul()

    def construct(self, x: Tensor) -> Tensor:
        return self.down_proj(self.gate(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Cell):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        self.residual = Add()

    def construct(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        x = self.residual(x, self.self_attn(self.input_layernorm(x), batch, cos, sin, mask))
        return self.residual(x, self.mlp(self.post_attention_layernorm(x)))


class LlamaModel(nn.Cell):
    """Embeddings, decoder layers and the final norm (HF name ``model``)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.CellList([DecoderLayer(config) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Cell):
    """Llama with tied output embeddings; ``construct(input_ids, start)`` returns logits.

    ``input_ids``: int32 ``[batch, tokens]``; ``start``: how many positions the KV caches
    already hold (0 for a fresh sequence). Returns float32 logits ``[batch, tokens, vocab]``.
    Call :meth:`reset_cache` before each new sequence.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.cos, self.sin = rope_tables(config)
        self.tied_head = ops.MatMul(transpose_b=True)

    def reset_cache(self) -> None:
        """Empty every layer's KV cache."""
        for layer in self.model.layers:
            layer.self_attn.kv_cache.reset()

    def cache_bytes(self) -> int:
        """Bytes held by all KV caches now."""
        return sum(layer.self_attn.kv_cache.stored_bytes() for layer in self.model.layers)

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings as 2-D hidden states ``[batch * tokens, hidden]``."""
        return ops.reshape(self.model.embed_tokens(input_ids), (-1, self.config.hidden_size))

    def position_inputs(self, tokens: int, start: int, width: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """cos, sin ``[tokens, head_dim]`` and the additive causal mask ``[tokens, width]``
        (``width`` defaults to ``start + tokens``; preallocated KV caches want their capacity)."""
        if start + tokens > self.config.max_positions:
            raise ValueError(f"sequence of {start + tokens} positions exceeds max_positions={self.config.max_positions}")
        cos, sin = self.cos[start : start + tokens], self.sin[start : start + tokens]
        keys = np.arange(max(width, start + tokens))[None, :]
        queries = np.arange(start, start + tokens)[:, None]
        mask = Tensor(np.where(keys > queries, np.float32(-1e9), np.float32(0.0)))
        return cos, sin, mask

    def head(self, hidden: Tensor, batch: int) -> Tensor:
        """Final norm and tied output projection: logits ``[batch, tokens, vocab]``."""
        logits = self.tied_head(self.model.norm(hidden), self.model.embed_tokens.embedding_table)
        return ops.reshape(logits, (batch, -1, self.config.vocab_size))

    def construct(self, input_ids: Tensor, start: int = 0) -> Tensor:
        return self.forward(input_ids, *self.position_inputs(input_ids.shape[1], start))

    def forward(self, input_ids: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        """Logits from token ids and their position inputs: tensors only, so it compiles as a
        graph (:class:`gscore.nn.decoding.CompiledDecoder` runs it that way)."""
        batch = input_ids.shape[0]
        hidden = self.embed(input_ids)
        for layer in self.model.layers:
            hidden = layer(hidden, batch, cos, sin, mask)
        return self.head(hidden, batch)


def build_llama(config: LlamaConfig, weights: dict[str, np.ndarray] | None = None) -> LlamaForCausalLM:
    """A :class:`LlamaForCausalLM`, loaded from HF-named float32 ``weights`` when given.

    Only the first ``config.num_layers`` layers of ``weights`` are used (a shallower model
    for fast tests); any missing or mis-shaped tensor is an error naming it.
    """
    net = LlamaForCausalLM(config)
    if weights is not None:
        params = dict(net.parameters_and_names())
        renamed = {"model.embed_tokens.weight": "model.embed_tokens.embedding_table"}
        wanted = {renamed.get(k, k): v for k, v in weights.items() if _layer_index(k) < config.num_layers}
        missing = sorted(set(params) - set(wanted))
        if missing:
            raise KeyError(f"weights lack {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for name, param in params.items():
            value = wanted[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name}: weights have shape {value.shape}, the network expects {tuple(param.shape)}")
            param.set_data(Tensor(value, ms.float32))
    net.set_train(False)
    return net


def _layer_index(name: str) -> int:
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 3 and parts[1] == "layers" else -1
