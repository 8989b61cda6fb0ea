"""The network helper for :class:`~gscore.models.llama.LlamaForCausalLM`.

It tells algorithms what they cannot know from the cells alone: model facts (``get_spec``),
how to run the model on CPU (a greedy ``generate`` over the model's own KV cache), how to
split it into blocks for layer-by-layer calibration, and which linear layers share an input
(for SmoothQuant: q/k/v after ``input_layernorm`` and gate/up after
``post_attention_layernorm`` can absorb the smoothing into the norm; ``o_proj`` and
``down_proj`` cannot, so they keep an explicit input scale), where its residual stream is
read and written (for rotation), and how to give it a fixed float prefix.

Calibration data (``datasets``) is an int array of token windows ``[n, tokens]``. By default a
block runs all of them in one forward pass; ``windows_per_forward=k`` runs them ``k`` at a time.
That bounds a forward's temporary memory, and it makes calibration independent of how the
windows are split between data-parallel workers: MindSpore's CPU matmuls round a row's result
differently depending on how many rows share the call, so only forwards over the same windows
give the same bits (:mod:`gscore.calib.data_parallel`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from mindspore import Tensor, nn, ops

from gscore.calib.network_helper import NetworkHelper
from gscore.errors import ConfigError
from gscore.eval.perplexity import log_softmax
from gscore.io.loaded import check_loaded
from gscore.models.llama import LlamaForCausalLM
from gscore.nn.rotation import FixedRotation, OnlineHadamard, ResidualStream

SMOOTH_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    (None, ("self_attn.o_proj",)),
    (None, ("mlp.down_proj",)),
)


@dataclass(frozen=True)
class BlockState:
    """Hidden states ``[batch * tokens, hidden]`` plus the per-call inputs every block needs."""

    hidden: Tensor
    batch: int
    cos: Tensor
    sin: Tensor
    mask: Tensor


def _next_tokens(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of ``logits`` ``[batch, vocab]``: the argmax at temperature 0, else a
    draw from ``softmax(logits / temperature)``. int32 ``[batch]``."""
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int32)
    probs = np.exp(log_softmax(logits.astype(np.float64) / temperature))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs], np.int32)


class LlamaHelper(NetworkHelper):
    """Drives a :class:`LlamaForCausalLM`; ``tokenizer`` is a ``tokenizers.Tokenizer`` (optional).

    ``windows_per_forward``: calibration windows per block forward (None: all at once).
    """

    def __init__(self, tokenizer: Any = None, seq_length: int = 512, batch_size: int = 1, windows_per_forward: int | None = None) -> None:
        if windows_per_forward is not None and (isinstance(windows_per_forward, bool) or not isinstance(windows_per_forward, int) or windows_per_forward < 1):
            raise ConfigError(f"windows_per_forward must be a positive int or None (all windows in one forward), got {windows_per_forward!r}")
        self.tokenizer = tokenizer
        self.specs = {"seq_length": seq_length, "batch_size": batch_size}
        self.windows_per_forward = windows_per_forward

    def get_spec(self, name: str) -> Any:
        return self.specs.get(name)

    def generate(self, network: LlamaForCausalLM, input_ids: Any, max_new_tokens: int = 1, temperature: float = 0.0, seed: int = 0,
                 stop_at_eos: bool = True, **kwargs: Any) -> np.ndarray:
        """Decoding with the model's KV cache: prefill once, then one token per step, each
        asking ``network`` (a :class:`LlamaForCausalLM` or a
        :class:`~gscore.nn.decoding.CompiledDecoder` of one) for its last token's logits only.

        ``input_ids``: int array ``[batch, tokens]`` (or a string when a tokenizer is set).
        ``temperature`` 0 (default) is greedy; above 0 each row samples from
        ``softmax(logits / temperature)`` (float64) with a numpy generator seeded by ``seed``, so
        the same call gives the same tokens. Returns the new token ids ``[batch, max_new_tokens]``;
        stops early only when ``stop_at_eos`` and every row produced the end-of-sequence token.
        Raises ConfigError for a negative temperature.
        """
        if not temperature >= 0:
            raise ConfigError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
        rng = np.random.default_rng(seed)
        ids = np.asarray(self.tokenizer.encode(input_ids).ids if isinstance(input_ids, str) else input_ids, dtype=np.int32)
        ids = ids.reshape(1, -1) if ids.ndim == 1 else ids
        network.reset_cache()
        logits = network(Tensor(ids), 0, last=True).asnumpy()
        if np.isnan(logits).any():
            check_loaded(network)  # a DEPLOY network's unloaded placeholders give NaN: name them
        position = ids.shape[1]
        produced = []
        for _ in range(max_new_tokens):
            token = _next_tokens(logits[:, -1], temperature, rng)
            produced.append(token)
            if (stop_at_eos and np.all(token == network.config.eos_token_id)) or len(produced) == max_new_tokens:
                break
            logits = network(Tensor(token[:, None]), position, last=True).asnumpy()
            position += 1
        network.reset_cache()
        return np.stack(produced, axis=1)

    def logits(self, network: LlamaForCausalLM, sample: Any) -> Tensor:
        """Next-token logits ``[tokens, vocab]`` of one token window ``[tokens]``, from an empty
        cache (left empty again); differentiable, so distillation can train through it."""
        network.reset_cache()
        logits = network(Tensor(np.asarray(sample, np.int32).reshape(1, -1)), 0)[0]
        network.reset_cache()
        return logits

    def complete(self, network: LlamaForCausalLM, prompt: str, max_new_tokens: int = 8) -> str:
        """The greedy continuation of ``prompt`` as text."""
        return self.tokenizer.decode(self.generate(network, prompt, max_new_tokens)[0].tolist())

    def blocks(self, network: LlamaForCausalLM) -> list[tuple[str, nn.Cell]]:
        return [(f"model.layers.{i}", layer) for i, layer in enumerate(network.model.layers)]

    def block_inputs(self, network: LlamaForCausalLM, datasets: Any) -> BlockState:
        windows = np.asarray(datasets, dtype=np.int32)
        if windows.ndim != 2:
            raise ValueError(f"Llama calibration data must be token windows [n, tokens], got shape {windows.shape}")
        self.specs["seq_length"] = windows.shape[1]
        cos, sin, mask = network.position_inputs(windows.shape[1], 0)
        return BlockState(network.embed(Tensor(windows)), windows.shape[0], cos, sin, mask)

    def run_block(self, block: nn.Cell, state: BlockState) -> BlockState:
        step = self.windows_per_forward or state.batch
        rows = state.hidden.shape[0] // state.batch
        outputs = []
        for first in range(0, state.batch, step):
            count = min(step, state.batch - first)
            block.self_attn.kv_cache.reset()
            hidden = state.hidden if count == state.batch else state.hidden[first * rows : (first + count) * rows]
            outputs.append(block(hidden, count, state.cos, state.sin, state.mask))
            block.self_attn.kv_cache.reset()
        return replace(state, hidden=outputs[0] if len(outputs) == 1 else ops.cat(outputs, axis=0))

    def calls_block_once(self, state: BlockState) -> bool:
        """Whether :meth:`run_block` runs ``state`` in one call of the block, so that every layer
        sees every calibration row at once (what one-pass calibration needs)."""
        return self.windows_per_forward is None or self.windows_per_forward >= state.batch

    def take(self, state: BlockState, windows: int) -> BlockState:
        """The first ``windows`` sequences of ``state`` (a cheaper state to score searches on)."""
        count = min(windows, state.batch)
        rows = state.hidden.shape[0] // state.batch * count
        return replace(state, hidden=state.hidden[:rows], batch=count)

    def block_output(self, state: BlockState) -> np.ndarray:
        """The hidden states of ``state`` as float32 numpy ``[rows, hidden]``."""
        return state.hidden.asnumpy()

    def set_prefix(self, network: LlamaForCausalLM, token_ids: np.ndarray) -> None:
        """Give ``network`` the fixed float prefix ``token_ids`` (see :meth:`LlamaForCausalLM.set_prefix`)."""
        network.set_prefix(token_ids)

    def bos_token_id(self, network: LlamaForCausalLM) -> int | None:
        """The model's beginning-of-sequence token (a natural fixed prefix)."""
        return network.config.bos_token_id

    def prefix_placeholders(self, network: LlamaForCausalLM, length: int) -> None:
        """Room for a prefix of ``length`` tokens, for a checkpoint to fill (DEPLOY mode)."""
        network.prefix_placeholders(length)

    def linear_head(self, network: LlamaForCausalLM) -> str:
        """Make the output head a linear layer a quantizer can replace; returns its name
        (see :meth:`LlamaForCausalLM.linear_head`)."""
        return network.linear_head()

    def smooth_groups(self, block: nn.Cell) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
        """Linear layers (names relative to a block) that share an input, with the norm that produces it."""
        return SMOOTH_GROUPS

    def tokens_per_sequence(self) -> int:
        return int(self.specs["seq_length"])

    def residual_stream(self, network: LlamaForCausalLM) -> ResidualStream:
        """Where the residual stream is read and written. With a tied head the stream is rotated
        online at the decoder's entry and exit (see :meth:`prepare_rotation`), so the embedding,
        the final norm and the head are not part of it."""
        readers, writers, online, value_heads = [], [], [], []
        for i in range(len(network.model.layers)):
            p = f"model.layers.{i}."
            readers.append((p + "input_layernorm.weight", tuple(p + f"self_attn.{n}_proj.weight" for n in "qkv")))
            readers.append((p + "post_attention_layernorm.weight", (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")))
            o_bias = p + "self_attn.o_proj.bias" if network.config.o_proj_bias else None
            writers += [(p + "self_attn.o_proj.weight", o_bias), (p + "mlp.down_proj.weight", None)]
            online.append(p + "mlp.down_proj.weight")
            v_bias = p + "self_attn.v_proj.bias" if network.config.qkv_bias else None
            value_heads.append((p + "self_attn.v_proj.weight", v_bias, p + "self_attn.o_proj.weight"))
        embeddings: tuple[str, ...] = ()
        if not network.config.tie_word_embeddings:
            embeddings = ("model.embed_tokens.embedding_table",)
            readers.append(("model.norm.weight", ("lm_head.weight",)))
        return ResidualStream(size=network.config.hidden_size, embeddings=embeddings, readers=tuple(readers), writers=tuple(writers), online=tuple(online),
                              value_heads=tuple(value_heads), head_dim=network.config.head_dim)

    def prepare_rotation(self, network: LlamaForCausalLM, rotation: np.ndarray) -> None:
        """The structure a network rotated by ``rotation [hidden, hidden]`` needs: an online
        Hadamard before every ``down_proj`` and, with a tied head, the online rotation of the
        stream at the decoder's entry and its inverse at the exit. The network computes the
        same function again only once :func:`~gscore.nn.rotation.rotate_residual_stream` has
        rotated the weights (or a rotated checkpoint is loaded: DEPLOY mode calls only this)."""
        if network.config.tie_word_embeddings:
            network.model.entry_rotation = FixedRotation(rotation)
            network.model.exit_rotation = FixedRotation(np.asarray(rotation).T)
        for layer in network.model.layers:
            layer.mlp.down_rotation = OnlineHadamard(network.config.intermediate_size)
