"""A compact Llama in MindSpore with a real KV cache, for CPU inference and quantization.

Why our own: mindformers' ``LlamaForCausalLM`` runs a full-sequence forward on CPU, but its
``generate`` and its incremental KV cache use kernels CPU lacks (``ArgMaxExt``; float16-only
``ApplyRotaryPosEmb``). This model keeps the usual HF parameter names
(``model.layers.{i}.self_attn.q_proj.weight`` ...) so checkpoints map one to one.

Shapes: hidden states travel as 2-D ``[batch * tokens, hidden]`` (``nn.Dense`` is several times
faster on 2-D input); attention reshapes to ``[batch, heads, tokens, head_dim]``. RoPE is
rotate-half. Every projection is an ``nn.Dense`` (q/k/v/o with a bias when the config says so,
as Qwen2's q/k/v), so weight quantizers find them; each attention owns a ``kv_cache`` cell that
quantizers can swap for an int8 one. The output head is the embedding table (tied) or its own
``lm_head.weight`` (untied); either way it is not an ``nn.Dense`` and stays float, unless
:meth:`LlamaForCausalLM.linear_head` makes it one (``lm_head``, an untied copy for a tied
model) for a quantizer to replace: the head is the largest single matrix a decode step reads.
The element-wise steps (RMSNorm, RoPE, the SiLU gate, residual adds) are cells of
:mod:`gscore.nn.fused` (one native operator each with the kernels), and the cache cell computes
the attention itself, so a decode step is few operators and :meth:`LlamaForCausalLM.forward`
(tensors only) compiles as a graph (:class:`gscore.nn.decoding.CompiledDecoder`).

Two optional structures serve quantization (both absent in a plain model):

* a fixed *prefix*: every attention can hold float keys/values of a few leading tokens
  (``prefix_key``/``prefix_value``, ``[1, kv_heads, P, head_dim]``) that every sequence
  starts with, computed once by the float model (:meth:`LlamaForCausalLM.set_prefix`). The
  attention-sink activations then live in those float entries and never in the quantized
  layers (nor in an int8 KV cache: the cache cell attends to them as float); positions of the
  real tokens start at ``P``.
* online rotations for a QuaRot-style rotation of the residual stream: of the ``down_proj``
  input (``mlp.down_rotation``), the part that cannot be folded into weights, and, for a
  model with a tied head, of the stream itself where it enters and leaves the decoder
  (``model.entry_rotation`` / ``model.exit_rotation``), so embedding and head stay one table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from gscore.errors import CheckpointMismatchError
from gscore.kernels.ops import primitive
from gscore.nn.fused import Add, RMSNormOp, Rotary, SiluMul
from gscore.nn.kv_cache import FloatKVCache
from gscore.nn.linear_group import LinearGroup, can_group
from gscore.nn.rotation import OnlineHadamard


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture numbers of a Llama (defaults: SmolLM2-135M).

    ``head_dim`` 0 means ``hidden_size // num_heads`` (set in ``__post_init__``); a model may
    give it explicitly, then q/k/v project to ``num_heads * head_dim`` whatever the hidden
    size. ``qkv_bias`` / ``o_proj_bias``: the projections carry a bias (Qwen2: q/k/v;
    Llama's ``attention_bias``: all four). ``tie_word_embeddings``: the output head is the
    embedding table; otherwise it is its own ``lm_head.weight``.
    """

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
    tie_word_embeddings: bool = True
    qkv_bias: bool = False
    o_proj_bias: bool = False
    head_dim: int = 0

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)


class RMSNorm(nn.Cell):
    """``x / rms(x) * weight`` over the last axis, in float32 (one fused operator)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(size, np.float32)), name="weight")
        self.norm = RMSNormOp(eps)

    def construct(self, x: Tensor) -> Tensor:
        return self.norm(x, self.weight)


def rope_tables(config: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, ``[max_positions, head_dim]`` float32, for rotate-half RoPE. Kept in numpy:
    a decode step wraps its row as a new tensor (about 10 µs), where slicing a MindSpore tensor
    is an operator launch."""
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim))
    angles = np.outer(np.arange(config.max_positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class Attention(nn.Cell):
    """Grouped-query self-attention with RoPE and a swappable KV cache cell."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        h, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, hd
        self.q_proj = nn.Dense(h, config.num_heads * hd, has_bias=config.qkv_bias)
        self.k_proj = nn.Dense(h, config.num_kv_heads * hd, has_bias=config.qkv_bias)
        self.v_proj = nn.Dense(h, config.num_kv_heads * hd, has_bias=config.qkv_bias)
        self.o_proj = nn.Dense(config.num_heads * hd, h, has_bias=config.o_proj_bias)
        self.kv_cache = FloatKVCache(config.num_kv_heads, hd)
        self.rotary = Rotary()
        self.scale = 1.0 / math.sqrt(hd)
        self.prefix_length = 0

    def set_prefix(self, keys: np.ndarray, values: np.ndarray, name_prefix: str) -> None:
        """Keep float ``keys``/``values`` ``[1, kv_heads, P, head_dim]`` (after RoPE) before every
        sequence's own entries; ``name_prefix`` is this cell's path (``model.layers.3.self_attn.``)."""
        expected = (1, self.num_kv_heads, keys.shape[2], self.head_dim)
        if keys.shape != expected or values.shape != expected:
            raise ValueError(f"prefix keys/values must be {expected}, got {keys.shape} and {values.shape}")
        self.prefix_key = Parameter(Tensor(keys.astype(np.float32)), name=f"{name_prefix}prefix_key", requires_grad=False)
        self.prefix_value = Parameter(Tensor(values.astype(np.float32)), name=f"{name_prefix}prefix_value", requires_grad=False)
        self.prefix_length = int(keys.shape[2])

    def heads(self, x: Tensor, batch: int, heads: int) -> Tensor:
        """``[batch * tokens, heads * head_dim]`` -> ``[batch, heads, tokens, head_dim]``."""
        return ops.transpose(ops.reshape(x, (batch, -1, heads, self.head_dim)), (0, 2, 1, 3))

    def attend_rows(self, q: Tensor, k: Tensor, v: Tensor, batch: int, mask: Tensor) -> Tensor:
        """:meth:`attend` for ``q``/``k``/``v`` as the projections give them, ``[batch * tokens,
        heads * head_dim]``: straight to a preallocated native cache when it takes that layout
        (:attr:`FloatKVCache.takes_rows`), through :meth:`heads` otherwise."""
        if self.kv_cache.takes_rows:
            return self.kv_cache.fused(q, k, v, *self.cache_inputs(mask))
        return self.attend(self.heads(q, batch, self.num_heads), self.heads(k, batch, self.num_kv_heads), self.heads(v, batch, self.num_kv_heads), mask)

    def cache_inputs(self, mask: Tensor) -> tuple[Tensor, ...]:
        """What the preallocated cache's native operator takes after q, k, v
        (:meth:`FloatKVCache.row_inputs`), with this layer's float prefix if it has one."""
        if self.prefix_length:
            return self.kv_cache.row_inputs(mask, self.scale, self.prefix_key, self.prefix_value)
        return self.kv_cache.row_inputs(mask, self.scale)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Attention through the KV cache of ``q``/``k``/``v`` ``[batch, heads, tokens,
        head_dim]`` (queries and keys after RoPE): ``[batch * tokens, num_heads * head_dim]``,
        the input of o_proj."""
        if self.prefix_length:
            return self.kv_cache(q, k, v, mask, self.scale, self.prefix_key, self.prefix_value)
        return self.kv_cache(q, k, v, mask, self.scale)

    def construct(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        q = self.rotary(self.heads(self.q_proj(x), batch, self.num_heads), cos, sin)
        k = self.rotary(self.heads(self.k_proj(x), batch, self.num_kv_heads), cos, sin)
        v = self.heads(self.v_proj(x), batch, self.num_kv_heads)
        return self.o_proj(self.attend(q, k, v, mask))


class MLP(nn.Cell):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``.

    ``down_rotation`` (None unless a rotation installed one) is a parameter-free cell applied to
    ``down_proj``'s input; ``down_proj``'s weight then carries the inverse rotation.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Dense(config.hidden_size, config.intermediate_size, has_bias=False)
        self.up_proj = nn.Dense(config.hidden_size, config.intermediate_size, has_bias=False)
        self.down_proj = nn.Dense(config.intermediate_size, config.hidden_size, has_bias=False)
        self.gate = SiluMul()
        self.down_rotation = None

    def construct(self, x: Tensor) -> Tensor:
        h = self.gate(self.gate_proj(x), self.up_proj(x))
        if self.down_rotation is not None:
            h = self.down_rotation(h)
        return self.down_proj(h)


class DecoderLayer(nn.Cell):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    After :meth:`group_linears` (deployed layers on native kernels) the block runs as four
    linear-group operators around the attention — norm + q/k/v + RoPE, o_proj + residual,
    norm + gate/up + SiLU gate, down_proj + residual — instead of fourteen operators, with
    bit-identical results (:mod:`gscore.nn.linear_group`). With a preallocated native KV cache
    (:class:`gscore.nn.decoding.CompiledDecoder`) those five operators, and a native online
    rotation before down_proj, run as one (``gsk_decoder_layer``), again bit-identical: a decode
    step then launches one operator per block.
    """

    CACHE_KINDS = ("float", "channel", "token")
    """The KV cache kinds ``gsk_decoder_layer`` takes, in the order of its meta input."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        self.residual = Add()
        self.grouped = False
        self.block_op = None

    def group_linears(self, fuse_block: bool = True) -> bool:
        """Compute the block with linear-group operators from now on, if every linear layer is
        deployed on a native kernel (:func:`gscore.nn.linear_group.can_group`) and the norms and
        the residual add are native; returns whether it did. ``fuse_block``: also run the whole
        block as one operator whenever its KV cache is preallocated and native (and an online
        rotation before down_proj, if any, native). Parameters do not change."""
        attn, mlp = self.self_attn, self.mlp
        native = all(cell.native is not None for cell in (self.input_layernorm.norm, self.post_attention_layernorm.norm, self.residual, mlp.gate))
        groups = [(attn.q_proj, attn.k_proj, attn.v_proj), (attn.o_proj,), (mlp.gate_proj, mlp.up_proj), (mlp.down_proj,)]
        if not native or not all(can_group(group) for group in groups):
            return False
        self.attention_in = LinearGroup(groups[0], prologue="rms_norm", rope=True)
        self.attention_out = LinearGroup(groups[1], epilogue="add")
        self.mlp_in = LinearGroup(groups[2], prologue="rms_norm", epilogue="silu_mul")
        self.mlp_out = LinearGroup(groups[3], epilogue="add")
        self.grouped = True
        self.block_op = None
        kind, rotation = attn.kv_cache.kernel_kind, mlp.down_rotation
        if fuse_block and kind in self.CACHE_KINDS and (rotation is None or (isinstance(rotation, OnlineHadamard) and rotation.native is not None)):
            plans = (*self.attention_in.plan_values, *self.attention_out.plan_values, *self.mlp_in.plan_values, *self.mlp_out.plan_values)
            eps = [norm.norm.eps_tensor.asnumpy().view(np.int32)[0] for norm in (self.input_layernorm, self.post_attention_layernorm)]
            layers = [layer for group in groups for layer in group]
            sizes = [layer.kernel_group_size for layer in layers]
            implied = sum(1 << at for at, layer in enumerate(layers) if layer.zero_points_implied)
            self.block_meta = Tensor(np.array([*plans, self.CACHE_KINDS.index(kind), int(rotation is not None), *eps, *sizes, implied], np.int32))
            self.block_op = primitive("decoder_layer")
        return True

    def construct(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        if self.grouped:
            return self.construct_grouped(x, batch, cos, sin, mask)
        x = self.residual(x, self.self_attn(self.input_layernorm(x), batch, cos, sin, mask))
        return self.residual(x, self.mlp(self.post_attention_layernorm(x)))

    def block_inputs(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        """The inputs of the whole-block operator (``gsk_decoder_layer``) for hidden states ``x``
        ``[tokens, hidden]``: the norms' eps, the int4 group sizes and which zero points are
        zero are in ``block_meta`` (csrc/entry.cc); the KV cache is written in place."""
        attn, mlp = self.self_attn, self.mlp
        rotation = () if mlp.down_rotation is None else (mlp.down_rotation.left, mlp.down_rotation.right)
        return (
            self.block_meta, x, self.input_layernorm.weight, cos, sin,
            *attn.q_proj.group_inputs(block=True), *attn.k_proj.group_inputs(block=True), *attn.v_proj.group_inputs(block=True),
            *attn.o_proj.group_inputs(block=True),
            self.post_attention_layernorm.weight, *mlp.gate_proj.group_inputs(block=True), *mlp.up_proj.group_inputs(block=True),
            *mlp.down_proj.group_inputs(block=True),
            *rotation,
            *attn.cache_inputs(mask),
        )

    def construct_grouped(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        attn, mlp = self.self_attn, self.mlp
        norm = self.input_layernorm
        if self.block_op is not None and attn.kv_cache.takes_rows:
            return self.block_op(*self.block_inputs(x, cos, sin, mask))
        qkv = attn.q_proj.group_inputs() + attn.k_proj.group_inputs() + attn.v_proj.group_inputs()
        q, k, v = self.attention_in(x, (norm.weight, norm.norm.eps_tensor, cos, sin), qkv)
        x = self.attention_out(attn.attend_rows(q, k, v, batch, mask), (x,), attn.o_proj.group_inputs())
        norm = self.post_attention_layernorm
        h = self.mlp_in(x, (norm.weight, norm.norm.eps_tensor), mlp.gate_proj.group_inputs() + mlp.up_proj.group_inputs())
        if mlp.down_rotation is not None:
            h = mlp.down_rotation(h)
        return self.mlp_out(h, (x,), mlp.down_proj.group_inputs())


class LlamaModel(nn.Cell):
    """Embeddings, decoder layers and the final norm (HF name ``model``)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.CellList([DecoderLayer(config) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.entry_rotation = None
        self.exit_rotation = None


class LMHead(nn.Cell):
    """An untied output projection: ``weight`` ``[vocab, hidden]`` (HF ``lm_head.weight``).

    A bare weight rather than an ``nn.Dense``: like the tied head it is not one of the linear
    layers quantizers walk, so calibrate and deploy agree that the head stays float (until
    :meth:`LlamaForCausalLM.linear_head` asks otherwise).
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.weight = Parameter(initializer(Normal(0.02), (config.vocab_size, config.hidden_size), ms.float32), name="weight")


class LlamaForCausalLM(nn.Cell):
    """Llama with a tied or untied output head; ``construct(input_ids, start)`` returns logits.

    ``input_ids``: int32 ``[batch, tokens]``; ``start``: how many positions the KV caches
    already hold (0 for a fresh sequence). Returns float32 logits ``[batch, tokens, vocab]``.
    Call :meth:`reset_cache` before each new sequence.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.cos, self.sin = rope_tables(config)
        self.head_matmul = ops.MatMul(transpose_b=True)
        self.head_is_linear = False
        self.head_kernel: ops.Custom | None = None  # the float head on gscore's kernel (group_linears)
        if not config.tie_word_embeddings:
            self.lm_head = LMHead(config)

    def linear_head(self) -> str:
        """Make the output head a linear layer, ``lm_head`` (``nn.Dense`` hidden -> vocab, no
        bias, weight ``[vocab, hidden]``), that a quantizer can replace; returns its name.

        A tied model gets an untied copy of the embedding table (the token lookup keeps reading
        the float table, one row per token); an untied one keeps its ``lm_head.weight`` under
        the same name. Logits are unchanged. Calling it again changes nothing.
        """
        if not self.head_is_linear:
            dense = nn.Dense(self.config.hidden_size, self.config.vocab_size, weight_init=Tensor(self.head_table().asnumpy()), has_bias=False)
            dense.weight.name = "lm_head.weight"
            self.lm_head = dense
            self.head_is_linear = True
        return "lm_head"

    @property
    def prefix_length(self) -> int:
        """Positions taken by the fixed float prefix (0 without one); real tokens start after it."""
        return self.model.layers[0].self_attn.prefix_length if len(self.model.layers) else 0

    def set_prefix(self, token_ids: np.ndarray) -> None:
        """Make ``token_ids`` (int ``[P]``) a fixed prefix of every sequence: run them once through
        this network as it is now (the float model) and keep every layer's keys/values.

        Perplexity and generation are unchanged in meaning: logits are for the caller's tokens,
        which now see the prefix as context. Setting a prefix again replaces the old one.
        """
        ids = np.asarray(token_ids, np.int32).reshape(1, -1)
        if ids.shape[1] == 0:
            raise ValueError("a prefix needs at least one token")
        for layer in self.model.layers:
            layer.self_attn.prefix_length = 0
        self.reset_cache()
        self(Tensor(ids), 0)
        for i, layer in enumerate(self.model.layers):
            cache = layer.self_attn.kv_cache
            keys = ops.cat([cache.decode(s, 0) for s in cache.keys], axis=2).asnumpy()
            values = ops.cat([cache.decode(s, 1) for s in cache.values], axis=2).asnumpy()
            layer.self_attn.set_prefix(keys, values, f"model.layers.{i}.self_attn.")
        self.reset_cache()

    def prefix_placeholders(self, length: int) -> None:
        """NaN prefix entries of ``length`` positions in every layer, for a checkpoint to fill
        (NaN, so a network whose prefix was never loaded cannot produce plausible output)."""
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            empty = np.full((1, attn.num_kv_heads, length, attn.head_dim), np.nan, np.float32)
            attn.set_prefix(empty, empty, f"model.layers.{i}.self_attn.")

    def group_linears(self, fuse_blocks: bool = True) -> int:
        """Run each decoder block whose layers allow it as linear-group operators, and with
        ``fuse_blocks`` as one operator while its KV cache is preallocated
        (:meth:`DecoderLayer.group_linears`): same results, fewer operators per token. Returns
        how many blocks were grouped.

        A float output head (not :meth:`linear_head`) of a network with grouped blocks then runs
        on gscore's float kernel too: MindSpore runs such a network's graph of a few dozen
        operators on the calling thread, and its MatMul there split a 512-token prefill's head
        between that thread and both pool threads, three threads on two cores
        (bench/results/ptq_prefill_amd_vnni.md)."""
        grouped = sum(layer.group_linears(fuse_blocks) for layer in self.model.layers)
        if grouped and not self.head_is_linear:
            self.head_kernel = primitive("f32_linear")
        return grouped

    def reset_cache(self) -> None:
        """Empty every layer's KV cache."""
        for layer in self.model.layers:
            layer.self_attn.kv_cache.reset()

    def cache_bytes(self) -> int:
        """Bytes held by all KV caches now."""
        return sum(layer.self_attn.kv_cache.stored_bytes() for layer in self.model.layers)

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings as 2-D hidden states ``[batch * tokens, hidden]``."""
        hidden = ops.reshape(self.model.embed_tokens(input_ids), (-1, self.config.hidden_size))
        return hidden if self.model.entry_rotation is None else self.model.entry_rotation(hidden)

    def position_inputs(self, tokens: int, start: int, width: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """cos, sin ``[tokens, head_dim]`` and the additive causal mask ``[tokens, P + width]``.

        ``start`` counts the caller's positions; a fixed prefix of ``P`` positions comes first
        (always visible). ``width`` (the cache's own columns) defaults to ``start + tokens``;
        preallocated KV caches want their capacity.
        """
        prefix = self.prefix_length
        first = prefix + start  # position of the first new token
        if first + tokens > self.config.max_positions:
            raise ValueError(f"sequence of {first + tokens} positions exceeds max_positions={self.config.max_positions}")
        cos, sin = Tensor(self.cos[first : first + tokens]), Tensor(self.sin[first : first + tokens])
        keys = np.arange(prefix + max(width, start + tokens))[None, :]
        queries = np.arange(first, first + tokens)[:, None]
        mask = Tensor(np.where(keys > queries, np.float32(-1e9), np.float32(0.0)))
        return cos, sin, mask

    def head_table(self) -> Parameter:
        """The float output projection ``[vocab, hidden]`` of a head that is not a linear layer:
        the embedding table (tied) or ``lm_head.weight``."""
        return self.model.embed_tokens.embedding_table if self.config.tie_word_embeddings else self.lm_head.weight

    def head(self, hidden: Tensor, batch: int) -> Tensor:
        """Final norm and output projection: logits ``[batch, tokens, vocab]``."""
        if self.model.exit_rotation is not None:
            hidden = self.model.exit_rotation(hidden)
        if self.head_is_linear:
            logits = self.lm_head(self.model.norm(hidden))
        elif self.head_kernel is not None:
            logits = self.head_kernel(self.model.norm(hidden), self.head_table())
        else:
            logits = self.head_matmul(self.model.norm(hidden), self.head_table())
        return ops.reshape(logits, (batch, -1, self.config.vocab_size))

    def construct(self, input_ids: Tensor, start: int = 0, last: bool = False) -> Tensor:
        return self.forward(input_ids, *self.position_inputs(input_ids.shape[1], start), last=last)

    def forward(self, input_ids: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, last: bool = False) -> Tensor:
        """Logits ``[batch, tokens, vocab]`` from token ids and their position inputs: tensors
        only, so it compiles as a graph (:class:`gscore.nn.decoding.CompiledDecoder` runs it that
        way). ``last``: each sequence's last token only, ``[batch, 1, vocab]``, which is all a
        generation step reads: the final norm and the output head then run once per sequence
        instead of once per token (SmolLM2's head is 49152 x 576 multiply-adds a token, about a
        fifth of a float prefill's)."""
        batch = input_ids.shape[0]
        hidden = self.embed(input_ids)
        for layer in self.model.layers:
            hidden = layer(hidden, batch, cos, sin, mask)
        if last:
            hidden = ops.reshape(hidden, (batch, -1, self.config.hidden_size))[:, -1]
        return self.head(hidden, batch)


_HF_NAMES = {"model.embed_tokens.embedding_table": "model.embed_tokens.weight"}  # MindSpore name -> HF name where they differ


def build_llama(config: LlamaConfig, weights: Mapping[str, np.ndarray] | None = None) -> LlamaForCausalLM:
    """A :class:`LlamaForCausalLM`, loaded from HF-named float32 ``weights`` when given.

    Only the tensors the network has are read, one at a time, so ``weights`` may be a lazy
    mapping that reads each on access (layers past ``config.num_layers`` are never asked
    for: a shallower model for fast tests; a tied model ignores ``lm_head.weight``). A
    missing or mis-shaped tensor is a :class:`CheckpointMismatchError` naming it.
    """
    net = LlamaForCausalLM(config)
    if weights is not None:
        params = {_HF_NAMES.get(name, name): param for name, param in net.parameters_and_names()}
        missing = sorted(name for name in params if name not in weights)
        if missing:
            raise CheckpointMismatchError(f"weights lack {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for name, param in params.items():
            value = weights[name]
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointMismatchError(f"{name}: weights have shape {value.shape}, the network expects {tuple(param.shape)}")
            param.set_data(Tensor(value, ms.float32))
    net.set_train(False)
    return net

