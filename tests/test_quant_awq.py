"""Properties of AWQ's math: the activation-aware scales and the weight clipping search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gscore.errors import ConfigError
from gscore.quant import (
    QuantScheme,
    awq_scales,
    awq_weight_mean,
    fake_quantize,
    quant_params,
    round_scale,
    scaled_fake_quantize,
    search_weight_clip,
)

PROPERTY = settings(max_examples=40, deadline=None)


@st.composite
def weight_schemes(draw: st.DrawFn) -> QuantScheme:
    bits = draw(st.sampled_from([3, 4, 8]))
    symmetric = draw(st.booleans())
    group = draw(st.sampled_from([0, 4, 8]))
    if group:
        return QuantScheme(bits=bits, symmetric=symmetric, granularity="per_group", group_size=group)
    return QuantScheme(bits=bits, symmetric=symmetric)


def heavy_tailed(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t weights (3 degrees of freedom): a few outliers per row, like LLM weights."""
    return rng.standard_t(3, shape).astype(np.float32)


# --- scales ------------------------------------------------------------------------------------


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 50), alpha=st.floats(0, 1), duo=st.booleans(), dead=st.floats(0, 0.5))
def test_scales_are_positive_finite_normalised_and_one_on_dead_channels(seed: int, n: int, alpha: float, duo: bool, dead: float) -> None:
    rng = np.random.default_rng(seed)
    act = rng.lognormal(0, 2, n) * (rng.random(n) >= dead)
    weight = rng.uniform(0, 1, n) * (rng.random(n) >= dead / 2)
    s = awq_scales(act, weight, alpha, duo_scaling=duo)
    assert s.dtype == np.float32 and s.shape == (n,)
    assert np.isfinite(s).all() and (s > 0).all()
    live = (act > 0) & (weight > 0)
    np.testing.assert_array_equal(s[~live], 1.0)
    if live.any():  # centred on 1 in log scale: max · min = 1 over the live channels
        assert float(s[live].max()) * float(s[live].min()) == pytest.approx(1.0, rel=1e-5)


def test_scales_by_hand() -> None:
    """alpha 1 without duo scaling: s ∝ mean|x|; alpha 0 without duo: all equal, hence 1."""
    act, weight = np.array([1.0, 4.0, 16.0, 0.0]), np.array([0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(awq_scales(act, weight, 1.0, duo_scaling=False), [0.25, 1.0, 4.0, 1.0])
    np.testing.assert_array_equal(awq_scales(act, weight, 0.0, duo_scaling=False), 1.0)
    duo = awq_scales(act, weight, 0.5)
    expected = np.sqrt(act[:3]) / (np.sqrt(0.5) + 1e-4)
    np.testing.assert_allclose(duo[:3], expected / np.sqrt(expected.max() * expected.min()), rtol=1e-6)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20), layers=st.integers(1, 3), group=st.sampled_from([0, 3, 4]))
def test_weight_mean_matches_its_definition(seed: int, n: int, layers: int, group: int) -> None:
    """Rows (or groups of a row) divided by their max |w| + 1e-6, averaged over all stacked rows;
    a ragged last group is its own group."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((int(rng.integers(1, 6)), n)).astype(np.float32) for _ in range(layers)]
    stacked = np.abs(np.concatenate(weights).astype(np.float64))
    width = group or n
    expected = np.empty_like(stacked)
    for lo in range(0, n, width):
        part = stacked[:, lo : lo + width]
        expected[:, lo : lo + width] = part / (part.max(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(awq_weight_mean(weights, group), expected.mean(axis=0), rtol=1e-12)


def test_scaled_fake_quantize_with_unit_scales_is_fake_quantize() -> None:
    rng = np.random.default_rng(0)
    w = heavy_tailed(rng, (6, 16))
    scheme = QuantScheme(bits=4, granularity="per_group", group_size=8)
    expected = fake_quantize(w, round_scale(quant_params(w, scheme), np.float16))
    np.testing.assert_array_equal(scaled_fake_quantize(w, np.ones(16, np.float32), scheme, np.float16), expected)
    scaled = scaled_fake_quantize(w, rng.uniform(0.5, 2.0, 16).astype(np.float32), scheme)
    assert scaled.shape == w.shape and scaled.dtype == np.float32


def test_scale_errors() -> None:
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        awq_scales(np.ones(3), np.ones(3), 1.5)
    with pytest.raises(ValueError, match="both be"):
        awq_scales(np.ones(3), np.ones(4), 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        awq_scales(-np.ones(3), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="same in size"):
        awq_weight_mean([np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match="> 0"):
        scaled_fake_quantize(np.ones((2, 3), np.float32), np.zeros(3), QuantScheme())


# --- clipping search ---------------------------------------------------------------------------


def partial_errors(clipped: np.ndarray, weight: np.ndarray, x: np.ndarray, scheme: QuantScheme) -> np.ndarray:
    """Mean over sample rows of the squared error per (row, group) between the partial
    products of ``clipped`` quantized with its own params and those of the float ``weight``;
    computed here with a plain loop over groups."""
    width = scheme.group_size or weight.shape[1]
    quantized = fake_quantize(np.pad(clipped, ((0, 0), (0, -weight.shape[1] % width))), scheme)[:, : weight.shape[1]]
    errors = []
    for lo in range(0, weight.shape[1], width):
        diff = (quantized[:, lo : lo + width] - weight[:, lo : lo + width]).astype(np.float64)
        errors.append(np.mean((x[:, lo : lo + width].astype(np.float64) @ diff.T) ** 2, axis=0))
    return np.stack(errors, axis=1)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), out=st.integers(1, 10), n=st.integers(1, 20), scheme=weight_schemes(), rows=st.integers(1, 30))
def test_ratio_one_alone_is_the_identity(seed: int, out: int, n: int, scheme: QuantScheme, rows: int) -> None:
    rng = np.random.default_rng(seed)
    w, x = heavy_tailed(rng, (out, n)), rng.standard_normal((rows, n)).astype(np.float32)
    result = search_weight_clip(w, x, scheme, [1.0])
    np.testing.assert_array_equal(result.weight, w)
    np.testing.assert_array_equal(result.ratios, 1.0)
    assert result.error == result.error_unclipped


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), out=st.integers(1, 10), n=st.integers(1, 20), scheme=weight_schemes(), rows=st.integers(1, 30), batch=st.integers(1, 4))
def test_chosen_clipping_never_raises_any_group_error(seed: int, out: int, n: int, scheme: QuantScheme, rows: int, batch: int) -> None:
    """Per (row, group), recomputed independently: the clipped weight's error is at most the
    unclipped one, and the result does not depend on the row batching."""
    rng = np.random.default_rng(seed)
    w, x = heavy_tailed(rng, (out, n)), rng.standard_normal((rows, n)).astype(np.float32)
    result = search_weight_clip(w, x, scheme, batch_rows=batch)
    chosen, unclipped = partial_errors(result.weight, w, x, scheme), partial_errors(w, w, x, scheme)
    assert (chosen <= unclipped * (1 + 1e-5) + 1e-12).all()
    assert result.error <= result.error_unclipped
    assert result.ratios.shape == unclipped.shape
    assert set(np.unique(result.ratios)) <= {np.float32(r) for r in (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55)}
    assert (np.abs(result.weight) <= np.abs(w)).all()  # clipping only shrinks
    again = search_weight_clip(w, x, scheme, batch_rows=256)
    np.testing.assert_array_equal(again.weight, result.weight)
    np.testing.assert_array_equal(again.ratios, result.ratios)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), out=st.integers(1, 10), n=st.integers(1, 20), scheme=weight_schemes(), rows=st.integers(1, 30))
def test_hessian_scores_like_every_row(seed: int, out: int, n: int, scheme: QuantScheme, rows: int) -> None:
    """Scored on ``H = 2XᵀX/rows`` the search computes the same errors as on the rows of ``X``
    (some of them zero: inputs that never fire give a singular block) and, where no two ratios
    tie within rounding, picks the same ratios."""
    rng = np.random.default_rng(seed)
    w, x = heavy_tailed(rng, (out, n)), rng.standard_normal((rows, n)).astype(np.float32)
    x[:, rng.random(n) < 0.2] = 0.0
    hessian = 2.0 * x.astype(np.float64).T @ x.astype(np.float64) / rows
    by_rows = search_weight_clip(w, x, scheme)
    by_hessian = search_weight_clip(w, None, scheme, hessian=hessian)
    assert by_hessian.error_unclipped == pytest.approx(by_rows.error_unclipped, rel=1e-4, abs=1e-6)
    assert by_hessian.error == pytest.approx(by_rows.error, rel=1e-4, abs=1e-6)
    chosen = partial_errors(by_hessian.weight, w, x, scheme)
    assert (chosen <= partial_errors(w, w, x, scheme) * (1 + 1e-4) + 1e-9).all()


@pytest.mark.parametrize(
    ("scheme", "margin", "clipped_share"),
    [
        (QuantScheme(bits=4), 0.9, 0.8),  # measured 0.79-0.85, 90-100 % of rows clip (3 seeds)
        (QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=32), 0.97, 0.3),  # 0.95, 45-48 %
    ],
)
def test_clipping_helps_heavy_tailed_int4_weights(scheme: QuantScheme, margin: float, clipped_share: float) -> None:
    """Not the identity in disguise: on heavy-tailed int4 weights many (row, group)s clip and
    the total partial-product error drops, by more for a whole row's range than for a group's."""
    rng = np.random.default_rng(0)
    w, x = heavy_tailed(rng, (64, 128)), rng.standard_normal((256, 128)).astype(np.float32)
    result = search_weight_clip(w, x, scheme)
    assert result.error < margin * result.error_unclipped
    assert (result.ratios < 1).mean() > clipped_share
    assert float(partial_errors(result.weight, w, x, scheme).sum()) == pytest.approx(result.error, rel=1e-4)


def test_clip_errors() -> None:
    w, x = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        search_weight_clip(w, x, QuantScheme(), [1.2])
    with pytest.raises(ConfigError, match="per output channel"):
        search_weight_clip(w, x, QuantScheme(granularity="per_tensor"))
    with pytest.raises(ConfigError, match="batch_rows"):
        search_weight_clip(w, x, QuantScheme(), batch_rows=0)
    with pytest.raises(ValueError, match=r"\[rows, 4\]"):
        search_weight_clip(w, np.ones((3, 5), np.float32), QuantScheme())
    with pytest.raises(ValueError, match="non-finite"):
        search_weight_clip(w, np.full((3, 4), np.nan, np.float32), QuantScheme())
    with pytest.raises(ValueError, match="either sample inputs x or a hessian"):
        search_weight_clip(w, x, QuantScheme(), hessian=np.eye(4))
    with pytest.raises(ValueError, match=r"hessian \[4, 4\]"):
        search_weight_clip(w, None, QuantScheme(), hessian=np.eye(5))
