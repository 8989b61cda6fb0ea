"""GPTQ on a real layer: SmolLM2-135M's first attention projections, calibrated on the inputs
they see for Wikipedia calibration text (normalised token embeddings of layer 0), and
checked on the inputs of the evaluation text it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from gscore.data.wikipedia import load_articles, split_articles, token_windows
from gscore.models.smollm2 import load_smollm2
from gscore.quant import HessianAccumulator, QuantScheme, fake_quantize, gptq_quantize, quant_params, round_scale

pytestmark = pytest.mark.slow  # parsing the Wikipedia dump alone takes ~10 s


@pytest.fixture(scope="module")
def layer0() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """SmolLM2's weights and the Hessians ``2XᵀX/rows`` of layer 0's q/k/v input (RMSNorm of
    the token embeddings) over 8 windows of 256 calibration / evaluation tokens."""
    weights, config, tokenizer = load_smollm2()
    articles = load_articles()

    def hessian(split: str) -> np.ndarray:
        ids = token_windows(tokenizer, split_articles(articles, split), 256, 8)
        x = weights["model.embed_tokens.weight"][ids]
        normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + config["rms_norm_eps"])
        acc = HessianAccumulator(x.shape[-1])
        acc.add(normed * weights["model.layers.0.input_layernorm.weight"])
        return acc.hessian()

    return weights, hessian("calibration"), hessian("evaluation")


def output_error(weight: np.ndarray, approx: np.ndarray, hessian: np.ndarray) -> float:
    diff = weight.astype(np.float64) - approx
    return float(np.trace(diff @ hessian @ diff.T))


@pytest.mark.parametrize(
    ("scheme", "act_order"),
    [
        (QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=128), True),
        (QuantScheme(bits=4, symmetric=False, granularity="per_group", group_size=128), False),
        (QuantScheme(bits=8), False),
    ],
)
def test_gptq_beats_rtn_on_smollm2_layer0_projections(layer0: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray], scheme: QuantScheme, act_order: bool) -> None:
    """q, k and v share one Hessian (their common input). With float16 scales as deployed and
    576 = 4.5 groups of 128 (a ragged last group), each keeps at most 40 % of RTN's output
    error on its calibration inputs (measured 17-27 %) and 50 % on the evaluation text's
    inputs (measured 23-34 %): the gain is not overfitting to the calibration rows."""
    weights, calibration, evaluation = layer0
    for name in ("q_proj", "k_proj", "v_proj"):
        weight = weights[f"model.layers.0.self_attn.{name}.weight"]
        result = gptq_quantize(weight, calibration, scheme, act_order=act_order, static_groups=act_order, scale_dtype=np.float16)
        assert result.diagnostics.damp_retries == 0 and result.diagnostics.dead_inputs == 0
        padded = np.pad(weight, ((0, 0), (0, -weight.shape[1] % scheme.group_size))) if scheme.group_size else weight
        rtn = fake_quantize(padded, round_scale(quant_params(padded, scheme), np.float16))[:, : weight.shape[1]]
        assert output_error(weight, result.weight, calibration) <= 0.4 * output_error(weight, rtn, calibration), name
        assert output_error(weight, result.weight, evaluation) <= 0.5 * output_error(weight, rtn, evaluation), name
