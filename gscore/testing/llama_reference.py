"""An independent float32 numpy forward of a Llama, to check MindSpore ports against.

Written from the architecture (RMSNorm, rotate-half RoPE, grouped-query causal attention,
SwiGLU, tied or untied output head) and the HF parameter names, sharing no code with
:mod:`gscore.models.llama`. ``weights`` are float32 ``[out, in]`` arrays by HF name; a
projection adds its bias when ``weights`` holds one (``...q_proj.bias``, as Qwen2's q/k/v).
``config`` uses gscore's key names (``num_heads``, ``num_kv_heads``, ...); ``head_dim`` and
``tie_word_embeddings`` are optional (``hidden_size // num_heads`` and tied by default).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, theta: float) -> np.ndarray:
    """x: ``[heads, T, head_dim]``; rotate-half RoPE at positions 0..T-1."""
    t, d = x.shape[1], x.shape[2]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * freqs[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def _project(h: np.ndarray, weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``h @ W.T (+ b)`` for the projection ``name`` (e.g. ``model.layers.0.self_attn.q_proj``)."""
    y = h @ weights[name + ".weight"].T
    bias = weights.get(name + ".bias")
    return y if bias is None else y + bias


def reference_logits(weights: dict[str, np.ndarray], config: dict[str, Any], ids: np.ndarray, num_layers: int | None = None) -> np.ndarray:
    """Logits ``[T, vocab]`` (float32) of token ids ``[T]``, using the first ``num_layers`` layers."""
    h_dim, n_h, n_kv = config["hidden_size"], config["num_heads"], config["num_kv_heads"]
    hd, eps, theta = config.get("head_dim") or h_dim // n_h, config["rms_norm_eps"], config["rope_theta"]
    emb = weights["model.embed_tokens.weight"]
    x = emb[ids].astype(np.float32)
    t = len(ids)
    causal = np.triu(np.full((t, t), -np.inf, np.float32), k=1)
    for i in range(config["num_layers"] if num_layers is None else num_layers):
        p = f"model.layers.{i}."
        h = _rms_norm(x, weights[p + "input_layernorm.weight"], eps)
        q = _project(h, weights, p + "self_attn.q_proj").reshape(t, n_h, hd).transpose(1, 0, 2)
        k = _project(h, weights, p + "self_attn.k_proj").reshape(t, n_kv, hd).transpose(1, 0, 2)
        v = _project(h, weights, p + "self_attn.v_proj").reshape(t, n_kv, hd).transpose(1, 0, 2)
        q, k = _rope(q, theta), _rope(k, theta)
        k, v = np.repeat(k, n_h // n_kv, axis=0), np.repeat(v, n_h // n_kv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        a = (s / s.sum(axis=-1, keepdims=True)) @ v
        x = x + _project(a.transpose(1, 0, 2).reshape(t, n_h * hd), weights, p + "self_attn.o_proj")
        h = _rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps)
        gate = h @ weights[p + "mlp.gate_proj.weight"].T
        up = h @ weights[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ weights[p + "mlp.down_proj.weight"].T
    head = emb if config.get("tie_word_embeddings", True) else weights["lm_head.weight"]
    return _rms_norm(x, weights["model.norm.weight"], eps) @ head.T
