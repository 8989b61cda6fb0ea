"""Orthogonal transforms for QuaRot/SpinQuant-style rotation of a transformer.

Multiplying activations by an orthogonal ``Q`` (and the following weight by ``Qᵀ``) leaves a
network's function unchanged but spreads an outlier channel over all channels, so per-tensor
or per-token ranges stop being set by a handful of huge values. A Hadamard matrix does this
best for a single outlier (every output gets ``±|x|/sqrt(n)``) and has a fast factored form
for the *online* rotation that must run at inference (``down_proj``'s input); any random
orthogonal matrix works for the *offline* rotation fused into the weights.

Exact Hadamard matrices are built for ``n = m · 2^k``, ``m`` a product of Paley orders:

* Sylvester: ``H_2n = [[H, H], [H, -H]]`` for powers of two;
* Paley I: ``q + 1`` for a prime ``q ≡ 3 (mod 4)`` (4, 8, 12, 20, 24, 32, 44, 48, ...);
* Paley II: ``2(q + 1)`` for a prime ``q ≡ 1 (mod 4)`` (12, 28, 36, 60, 76, 84, ...);
* Kronecker products of those (``H_a ⊗ H_b`` is a Hadamard matrix of order ``ab``).

Only prime ``q`` (not prime powers) are used, which needs no finite-field arithmetic. SmolLM2
needs 576 = 36 · 16 and 1536 = 12 · 128.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from gscore.errors import ConfigError


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    return all(q % d for d in range(2, int(q**0.5) + 1))


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _sylvester(n: int) -> np.ndarray:
    """±1 Hadamard matrix of a power-of-two order ``n``, int8."""
    h = np.ones((1, 1), np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _jacobsthal(q: int) -> np.ndarray:
    """``Q[i, j] = χ(j - i)`` with ``χ`` the quadratic character mod the prime ``q`` (``χ(0) = 0``)."""
    residues = np.zeros(q, np.int8)
    residues[[(k * k) % q for k in range(1, q)]] = 1
    character = np.where(residues == 1, 1, -1).astype(np.int8)
    character[0] = 0
    index = np.arange(q)
    return character[(index[None, :] - index[:, None]) % q]


def _paley_one(q: int) -> np.ndarray:
    """Order ``q + 1`` for a prime ``q ≡ 3 mod 4``: ``I + S`` with the skew conference matrix
    ``S = [[0, 1ᵀ], [-1, Q]]`` (``SSᵀ = qI``, so ``(I + S)(I + S)ᵀ = (q + 1)I``)."""
    s = np.zeros((q + 1, q + 1), np.int8)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, _jacobsthal(q)
    return s + np.eye(q + 1, dtype=np.int8)


def _paley_two(q: int) -> np.ndarray:
    """Order ``2(q + 1)`` for a prime ``q ≡ 1 mod 4``, from the symmetric conference matrix
    ``C = [[0, 1ᵀ], [1, Q]]``: ``C ⊗ [[1, 1], [1, -1]] + I ⊗ [[1, -1], [-1, -1]]``."""
    c = np.zeros((q + 1, q + 1), np.int8)
    c[0, 1:], c[1:, 0], c[1:, 1:] = 1, 1, _jacobsthal(q)
    one = np.array([[1, 1], [1, -1]], np.int8)
    zero = np.array([[1, -1], [-1, -1]], np.int8)
    return np.kron(c, one) + np.kron(np.eye(q + 1, dtype=np.int8), zero)


@lru_cache(maxsize=None)
def _base(m: int) -> np.ndarray | None:
    """A ±1 Hadamard matrix of order ``m`` from the constructions above, or None (read-only)."""
    built = None
    if _is_power_of_two(m):
        built = _sylvester(m)
    elif _is_prime(m - 1) and (m - 1) % 4 == 3:
        built = _paley_one(m - 1)
    elif m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        built = _paley_two(m // 2 - 1)
    else:
        for d in range(2, int(m**0.5) + 1):
            if m % d == 0 and _base(d) is not None and _base(m // d) is not None:
                built = np.kron(_base(d), _base(m // d))
                break
    if built is not None:
        built.setflags(write=False)
    return built


def _split(n: int) -> tuple[int, int] | None:
    """``(a, b)`` with ``n = a · b``, ``b`` a power of two as large as possible and ``a``
    buildable; None when no such split exists."""
    b = n & -n  # largest power of two dividing n
    while b >= 1:
        if _base(n // b) is not None:
            return n // b, b
        b //= 2
    return None


def is_hadamard_size(n: int) -> bool:
    """Whether :func:`hadamard` can build an exact Hadamard matrix of order ``n``."""
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and _split(n) is not None


def _nearest_sizes(n: int) -> str:
    below = next((m for m in range(n - 1, 0, -1) if _split(m) is not None), None)
    above = next(m for m in range(n + 1, 4 * n + 8) if _split(m) is not None)
    return ", ".join(str(m) for m in (below, above) if m is not None)


def _check_size(n: int) -> tuple[int, int]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"a Hadamard size must be a positive int, got {n!r}")
    split = _split(n)
    if split is None:
        raise ConfigError(
            f"cannot build an exact Hadamard matrix of size {n}: buildable sizes are m·2^k with m a product of "
            "Paley orders (q+1 for a prime q ≡ 3 mod 4, 2(q+1) for a prime q ≡ 1 mod 4: 1, 2, 4, 12, 20, 28, 36, "
            f"44, 60, ...); nearest buildable sizes: {_nearest_sizes(n)}"
        )
    return split


@dataclass(frozen=True, eq=False)
class FactoredHadamard:
    """``hadamard(n)`` as ``(A ⊗ B) / sqrt(n)``: a small dense ±1 matrix ``A [a, a]`` and a
    Sylvester ±1 matrix ``B [b, b]`` (``b`` a power of two, ``n = a · b``).

    The online rotation ``x @ hadamard(n)`` then costs ``n · (a + b)`` multiply-adds per row
    instead of ``n²``: view the last axis as ``[a, b]`` (index ``p · b + q``), multiply by
    ``B`` along ``b`` and by ``A`` along ``a`` (``y[i, j] = Σ_pq A[p, i] x[p, q] B[q, j]``), and
    scale by ``1/sqrt(n)``. ``B`` is applied as a dense matmul: in numpy that is faster than a
    fast Walsh-Hadamard transform's log2(b) passes (see ``bench/gptq.py``).

    Attributes:
        size: ``n``.
        dense: ``A``, float32 ±1, read-only.
        sylvester: ``B``, float32 ±1, read-only.
    """

    size: int
    dense: np.ndarray
    sylvester: np.ndarray

    def apply(self, x: npt.ArrayLike) -> np.ndarray:
        """``x @ hadamard(n)`` for ``x [..., n]``, in ``x``'s dtype (float32 unless float64)."""
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.size:
            raise ValueError(f"the rotated axis must be the last one, of size {self.size}; got shape {x.shape}")
        dtype = np.float64 if x.dtype == np.float64 else np.float32
        a, b = self.dense.shape[0], self.sylvester.shape[0]
        rows = x.reshape(-1, b).astype(dtype, copy=False)
        inner = (rows @ self.sylvester.astype(dtype, copy=False)).reshape(-1, a, b)
        outer = np.tensordot(inner, self.dense.astype(dtype, copy=False), axes=(1, 0))  # [N, b, a]
        out = outer.transpose(0, 2, 1).reshape(x.shape)
        out *= dtype(1.0 / np.sqrt(self.size))
        return out


def factored_hadamard(n: int) -> FactoredHadamard:
    """The factored form of :func:`hadamard` ``(n)``; raises ConfigError like it."""
    a, b = _check_size(n)
    dense = _base(a).astype(np.float32)
    sylvester = _sylvester(b).astype(np.float32)
    dense.setflags(write=False)
    sylvester.setflags(write=False)
    return FactoredHadamard(size=n, dense=dense, sylvester=sylvester)


def hadamard(n: int) -> np.ndarray:
    """Orthonormal Hadamard matrix of order ``n``, float64 ``[n, n]``: entries ``±1/sqrt(n)``,
    ``H Hᵀ = I``. Equal to ``kron(A, B) / sqrt(n)`` of :func:`factored_hadamard`.

    Raises ConfigError for an order it cannot build, naming the nearest ones it can.
    """
    a, b = _check_size(n)
    return np.kron(_base(a).astype(np.float64), _sylvester(b).astype(np.float64)) / np.sqrt(n)


def random_signs(n: int, seed: int) -> np.ndarray:
    """``n`` independent random signs ``±1`` (float64), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def randomized_hadamard(n: int, seed: int) -> np.ndarray:
    """``diag(s) · hadamard(n)`` with random signs ``s = random_signs(n, seed)``, float64 ``[n, n]``.

    Orthogonal, and ``x @ Q == factored_hadamard(n).apply(x * s)``: the sign flip goes on the
    input, so the online factored form still applies. Random signs (QuaRot) make the rotation
    one of 2^n, all equally good at spreading outliers, without changing its structure.
    """
    rotation = hadamard(n)
    return random_signs(n, seed)[:, None] * rotation


def random_orthogonal(n: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix, float64 ``[n, n]``, reproducible from ``seed``: QR of a
    Gaussian matrix with the signs of ``R``'s diagonal moved into ``Q`` (else not uniform)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the size of an orthogonal matrix must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)
