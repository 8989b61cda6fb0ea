"""Properties of the orthogonal transforms for rotation: exact Hadamard matrices (Sylvester,
Paley I/II, Kronecker products), their factored online form, and random rotations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gscore.errors import ConfigError
from gscore.quant import (
    factored_hadamard,
    hadamard,
    is_hadamard_size,
    random_orthogonal,
    random_signs,
    randomized_hadamard,
)

PROPERTY = settings(max_examples=30, deadline=None)
BUILDABLE = [n for n in range(1, 400) if is_hadamard_size(n)]


def assert_orthonormal_hadamard(h: np.ndarray, n: int) -> None:
    assert h.shape == (n, n) and h.dtype == np.float64
    np.testing.assert_array_equal(np.abs(h), 1 / np.sqrt(n))  # every entry is ±1/sqrt(n) exactly
    np.testing.assert_allclose(h @ h.T, np.eye(n), rtol=0, atol=8 * n * np.finfo(np.float64).eps)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 12, 20, 24, 28, 36, 44, 60, 144, 576, 1536])
def test_named_sizes_are_orthonormal_hadamard_matrices(n: int) -> None:
    """12 = Paley I (q = 11), 20 = Paley I (19), 28 = Paley II (13), 36 = Paley II (17), 44 =
    Paley I (43), 60 = Paley II (29); SmolLM2's 576 = 36·16 and 1536 = 12·128."""
    assert_orthonormal_hadamard(hadamard(n), n)


@PROPERTY
@given(st.sampled_from(BUILDABLE))
def test_every_buildable_size_is_orthonormal(n: int) -> None:
    assert_orthonormal_hadamard(hadamard(n), n)


def test_buildable_sizes_include_every_multiple_of_four_the_constructions_give() -> None:
    """Up to 100 every order divisible by 4 is built except 52 = 2(25 + 1) and 100 = 2(49 + 1)
    (Paley II over the prime powers 25 and 49 needs GF(p²) arithmetic) and 92 (Williamson's
    construction); none of them is needed by a model gscore supports."""
    assert [n for n in range(4, 101, 4) if not is_hadamard_size(n)] == [52, 92, 100]
    assert not any(is_hadamard_size(n) for n in (3, 5, 6, 7, 9, 10, 14, 18, 30))


def test_unbuildable_size_names_the_nearest_sizes() -> None:
    with pytest.raises(ConfigError, match="size 92.*nearest buildable sizes: 88, 96"):
        hadamard(92)
    with pytest.raises(ConfigError, match="size 6.*nearest buildable sizes: 4, 8"):
        factored_hadamard(6)
    with pytest.raises(ConfigError, match="positive int"):
        hadamard(0)


@PROPERTY
@given(n=st.sampled_from(BUILDABLE), lead=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 2**32 - 1))
def test_factored_form_equals_the_dense_matrix(n: int, lead: list[int], seed: int) -> None:
    """``apply(x) == x @ hadamard(n)`` for any leading shape, to float64 rounding (float32 in,
    float32 rounding); and the factors rebuild the matrix exactly."""
    f = factored_hadamard(n)
    a, b = f.dense.shape[0], f.sylvester.shape[0]
    assert a * b == n and b & (b - 1) == 0
    np.testing.assert_array_equal(np.kron(f.dense.astype(np.float64), f.sylvester.astype(np.float64)) / np.sqrt(n), hadamard(n))
    x = np.random.default_rng(seed).standard_normal((*lead, n))
    expected = x @ hadamard(n)
    np.testing.assert_allclose(f.apply(x), expected, rtol=0, atol=1e-12 * max(1.0, np.abs(x).max()) * np.sqrt(n))
    y = f.apply(x.astype(np.float32))
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(x).max() * np.sqrt(n))


@pytest.mark.parametrize(("n", "a", "b"), [(576, 36, 16), (1536, 12, 128)])
def test_smollm2_sizes_factor_into_a_small_dense_and_a_power_of_two(n: int, a: int, b: int) -> None:
    f = factored_hadamard(n)
    assert f.dense.shape == (a, a) and f.sylvester.shape == (b, b)
    x = np.random.default_rng(n).standard_normal((4, n))
    np.testing.assert_allclose(f.apply(x), x @ hadamard(n), rtol=0, atol=1e-12 * np.abs(x).max() * np.sqrt(n))
    with pytest.raises(ValueError, match="of size 576"):
        factored_hadamard(576).apply(np.ones((2, 575)))


def test_hadamard_spreads_a_single_outlier_evenly() -> None:
    """Why it is used: one channel of magnitude m becomes n channels of magnitude m/sqrt(n)."""
    x = np.zeros(1536)
    x[7] = 3000.0
    np.testing.assert_allclose(np.abs(factored_hadamard(1536).apply(x)), 3000.0 / np.sqrt(1536))


@PROPERTY
@given(n=st.sampled_from([1, 12, 20, 64, 96]), seed=st.integers(0, 2**32 - 1))
def test_random_rotations_are_orthogonal_and_reproducible(n: int, seed: int) -> None:
    for make in (random_orthogonal, randomized_hadamard):
        q = make(n, seed)
        np.testing.assert_allclose(q @ q.T, np.eye(n), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(make(n, seed), q)
    x = np.random.default_rng(seed).standard_normal((3, n))
    s = random_signs(n, seed)
    assert set(np.unique(s)) <= {-1.0, 1.0}
    np.testing.assert_allclose(x @ randomized_hadamard(n, seed), factored_hadamard(n).apply(x * s), rtol=0, atol=1e-11)


def test_different_seeds_give_different_rotations() -> None:
    assert not np.allclose(random_orthogonal(16, 0), random_orthogonal(16, 1))
    assert not np.array_equal(randomized_hadamard(64, 0), randomized_hadamard(64, 1))
