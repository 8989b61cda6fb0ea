"""QuaRot-style rotation of a pre-norm transformer's residual stream, fused into its weights.

For an orthogonal ``Q`` (``QQᵀ = I``), a network whose residual stream carries ``h Q`` instead
of ``h`` computes the same function if every weight that writes into the stream is multiplied
by ``Q`` on its output side and every weight that reads it by ``Q`` on its input side: an RMS
norm commutes with ``Q`` once its scale ``γ`` is folded into the weights it feeds
(``RMS(hQ) = RMS(h)``). An outlier channel of ``h`` is then spread over all channels, so
per-tensor and per-token activation ranges stop being set by a handful of huge values.

A model describes its stream with a :class:`ResidualStream` (its network helper knows the
names); :func:`rotate_residual_stream` does the arithmetic in float64 and writes float32.
Inputs that are not part of the stream (``down_proj``'s, after the elementwise SwiGLU) can be
rotated too, but only *online*: :class:`OnlineHadamard` multiplies the activation by a
Hadamard matrix at run time, in its cheap factored form, and the weight takes the inverse.
A model whose output head shares the embedding table can keep it shared by rotating the stream
online where it enters and leaves the decoder (:class:`FixedRotation`, two ``[hidden,
hidden]`` products per token: about 0.6 % of SmolLM2's compute) instead of rotating, and so
untying, the two tables.

The value heads can be rotated too, offline and exactly (QuaRot's fused value/output rotation):
attention mixes each head's value rows with weights that do not depend on them, so a Hadamard
``H`` applied to every value head (``v_proj``'s rows, per head) comes out of attention
unchanged and ``o_proj`` undoes it on its input columns, head by head. Both weights' low-bit
groups then see spread-out values instead of a few large ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from gscore import kernels
from gscore.errors import ConfigError
from gscore.kernels.ops import primitive
from gscore.quant.rotation import factored_hadamard, hadamard


@dataclass(frozen=True)
class ResidualStream:
    """Where a pre-norm transformer reads and writes its residual stream (parameter names).

    Attributes:
        size: width of the stream (the hidden size).
        embeddings: ``[vocab, size]`` tables whose rows enter the stream.
        readers: ``(norm_weight, weights)``: an RMS norm's scale ``[size]`` and the ``[out,
            size]`` weights that read its output (the output head included, as a reader of the
            final norm). The norm must be scale-only (RMSNorm, no bias, no mean subtraction).
        writers: ``[size, in]`` weights whose outputs are added into the stream, with their
            biases ``[size]`` where they have one (``None`` otherwise).
        online: ``[out, n]`` weights whose input is rotated online by :class:`OnlineHadamard`
            of size ``n`` (the model installs that cell; see the helper's ``prepare_rotation``).
        value_heads: per attention layer, ``(v_proj weight, its bias or None, o_proj weight)``:
            ``[kv_heads * head_dim, size]``, ``[kv_heads * head_dim]`` and ``[size, heads *
            head_dim]``, whose value heads are rotated offline by ``hadamard(head_dim)``.
        head_dim: width of one attention head (needed when ``value_heads`` is not empty).
    """

    size: int
    embeddings: tuple[str, ...]
    readers: tuple[tuple[str, tuple[str, ...]], ...]
    writers: tuple[tuple[str, str | None], ...]
    online: tuple[str, ...] = ()
    value_heads: tuple[tuple[str, str | None, str], ...] = ()
    head_dim: int = 0


def _params(network: nn.Cell) -> dict[str, ms.Parameter]:
    return dict(network.parameters_and_names())


def _update(param: ms.Parameter, value: np.ndarray) -> None:
    param.set_data(Tensor(np.ascontiguousarray(value, dtype=np.float32)))


def rotate_residual_stream(network: nn.Cell, stream: ResidualStream, rotation: np.ndarray) -> None:
    """Rotate ``network``'s residual stream by the orthogonal ``rotation [size, size]`` in place,
    folding every reader norm's scale into its weights (the norm's scale becomes 1), and apply
    the online Hadamard's inverse to every ``stream.online`` weight.

    Raises ConfigError when a named parameter is missing or ``rotation`` is not orthogonal of the
    stream's size.
    """
    q = np.asarray(rotation, np.float64)
    if q.shape != (stream.size, stream.size) or not np.allclose(q @ q.T, np.eye(stream.size), atol=1e-8):
        raise ConfigError(f"the residual rotation must be an orthogonal [{stream.size}, {stream.size}] matrix, got shape {q.shape}")
    params = _params(network)
    names = [*stream.embeddings, *(norm for norm, _ in stream.readers), *(w for _, ws in stream.readers for w in ws)]
    names += [w for w, _ in stream.writers] + [b for _, b in stream.writers if b] + list(stream.online)
    names += [name for names_of_layer in stream.value_heads for name in names_of_layer if name]
    missing = sorted(set(names) - set(params))
    if missing:
        raise ConfigError(f"{type(network).__name__} has no parameter(s) {missing[:5]} named by its residual-stream description")
    for name in stream.embeddings:
        _update(params[name], params[name].asnumpy().astype(np.float64) @ q)
    for norm, weights in stream.readers:
        gamma = params[norm].asnumpy().astype(np.float64)
        for name in weights:
            _update(params[name], (params[name].asnumpy().astype(np.float64) * gamma[None, :]) @ q)
        _update(params[norm], np.ones_like(gamma))
    for weight, bias in stream.writers:
        _update(params[weight], q.T @ params[weight].asnumpy().astype(np.float64))
        if bias:
            _update(params[bias], params[bias].asnumpy().astype(np.float64) @ q)
    for name in stream.online:
        w = params[name].asnumpy().astype(np.float64)
        _update(params[name], w @ hadamard(w.shape[1]))
    if stream.value_heads:
        _rotate_value_heads(params, stream.value_heads, stream.head_dim)


def _rotate_value_heads(params: dict[str, ms.Parameter], value_heads: tuple[tuple[str, str | None, str], ...], head_dim: int) -> None:
    """Every value head ``v_h`` becomes ``v_h H`` (``v_proj`` rows ``Hᵀ W_h``, bias ``b_h H``) and
    ``o_proj``'s columns of every query head ``W_h H``: ``(p v H)(W H)ᵀ = p v Wᵀ``."""
    h = hadamard(head_dim)
    for v_weight, v_bias, o_weight in value_heads:
        v = params[v_weight].asnumpy().astype(np.float64)
        o = params[o_weight].asnumpy().astype(np.float64)
        if v.shape[0] % head_dim or o.shape[1] % head_dim:
            raise ConfigError(f"{v_weight} {v.shape} and {o_weight} {o.shape} are not whole heads of {head_dim}")
        _update(params[v_weight], np.einsum("ji,kjc->kic", h, v.reshape(-1, head_dim, v.shape[1])).reshape(v.shape))
        _update(params[o_weight], (o.reshape(o.shape[0], -1, head_dim) @ h).reshape(o.shape))
        if v_bias:
            b = params[v_bias].asnumpy().astype(np.float64)
            _update(params[v_bias], (b.reshape(-1, head_dim) @ h).reshape(b.shape))


class OnlineHadamard(nn.Cell):
    """``x @ hadamard(n)`` at run time for ``x [rows, n]``, in ``n (a + b)`` multiply-adds per row.

    ``n = a · b`` with a small dense Hadamard ``A [a, a]`` and a Sylvester ``B [b, b]`` (see
    :func:`gscore.quant.rotation.factored_hadamard`): the row is viewed as ``[a, b]``,
    multiplied by ``B`` on the right and ``Aᵀ`` on the left; ``1/sqrt(n)`` is folded into ``A``.
    Holds no parameters: the structure is known from the size alone. With native kernels
    (decided when the cell is built, like :mod:`gscore.nn.fused`) float32 rows take one operator
    (``gsk_hadamard``) instead of seven.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        factored = factored_hadamard(size)
        self.size = size
        self.a, self.b = factored.dense.shape[0], factored.sylvester.shape[0]
        self.left = Tensor((factored.dense.T / np.sqrt(size)).astype(np.float32))
        self.right = Tensor(factored.sylvester.astype(np.float32))
        self.native = primitive("hadamard") if kernels.enabled() else None

    def construct(self, x: Tensor) -> Tensor:
        if self.native is not None and x.dtype == ms.float32:
            return self.native(x, self.left, self.right)
        rows = x.shape[0]
        inner = ops.reshape(ops.matmul(ops.reshape(x, (-1, self.b)), ops.cast(self.right, x.dtype)), (rows, self.a, self.b))
        return ops.reshape(ops.matmul(ops.cast(self.left, x.dtype), inner), (rows, self.size))


class FixedRotation(nn.Cell):
    """``x @ matrix`` for ``x [rows, n]`` with a constant ``matrix [n, n]`` (not a parameter: it is
    rebuilt from the rotation's seed, so checkpoints do not carry it)."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        self.matrix = Tensor(np.asarray(matrix, np.float32))

    def construct(self, x: Tensor) -> Tensor:
        return ops.matmul(x, ops.cast(self.matrix, x.dtype))
