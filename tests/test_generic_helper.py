"""PTQ and RTN on a network nobody wrote an adapter for: a BERT-like encoder with a three-input forward.

The encoder is a real MindSpore network (embeddings for words, positions and token types,
``nn.LayerNorm`` with random gamma *and* beta, multi-head attention with an additive mask,
GELU MLP). No helper is written for it: the generic :class:`gscore.calib.NetworkHelper` finds
its blocks (the ``CellList`` of layers), captures their inputs (hidden states and the mask),
and traces which Dense layers read which LayerNorm. A pre-LN block's norms feed only linears,
so SmoothQuant folds into them (gamma and beta divided by ``s``, checked against numpy); a
post-LN block's norm output also feeds the residual addition, so it must not be folded.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

import gscore
from gscore import PTQConfig
from gscore.calib import NetworkHelper
from gscore.calib.discovery import find_blocks
from gscore.errors import CalibrationDataError, MissingHelperMethodError
from gscore.io import load_checkpoint, save_checkpoint
from gscore.nn.quant_linear import QuantLinear, SimQuantLinear
from gscore.testing.conformance import ModelAdapterConformance

HIDDEN, HEADS, FFN, VOCAB, TOKENS = 32, 4, 64, 50, 12
QUIET = {"progress": False}


class EncoderLayer(nn.Cell):
    """One transformer encoder layer: ``construct(hidden [b, t, h], mask_bias [b, 1, 1, t])``."""

    def __init__(self, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attention_norm = nn.LayerNorm((HIDDEN,), epsilon=1e-5)
        self.query = nn.Dense(HIDDEN, HIDDEN)
        self.key = nn.Dense(HIDDEN, HIDDEN)
        self.value = nn.Dense(HIDDEN, HIDDEN)
        self.attention_output = nn.Dense(HIDDEN, HIDDEN)
        self.mlp_norm = nn.LayerNorm((HIDDEN,), epsilon=1e-5)
        self.intermediate = nn.Dense(HIDDEN, FFN)
        self.output = nn.Dense(FFN, HIDDEN)
        self.gelu = nn.GELU(approximate=False)

    def _heads(self, x):
        b, t, _ = x.shape
        return ops.transpose(ops.reshape(x, (b, t, HEADS, HIDDEN // HEADS)), (0, 2, 1, 3))

    def _attention(self, x, mask_bias):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / float(np.sqrt(HIDDEN // HEADS)) + mask_bias
        context = ops.matmul(ops.softmax(scores, -1), v)
        b, _, t, _ = context.shape
        return self.attention_output(ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (b, t, HIDDEN)))

    def construct(self, hidden, mask_bias):
        if self.pre_norm:
            hidden = hidden + self._attention(self.attention_norm(hidden), mask_bias)
            return hidden + self.output(self.gelu(self.intermediate(self.mlp_norm(hidden))))
        hidden = self.attention_norm(hidden + self._attention(hidden, mask_bias))
        return self.mlp_norm(hidden + self.output(self.gelu(self.intermediate(hidden))))


class Encoder(nn.Cell):
    """``construct(input_ids [b, t] int32, attention_mask [b, t] float32 (1 = token, 0 = padding),
    token_type_ids [b, t] int32)`` -> pooled ``[b, HIDDEN]`` (tanh Dense over the first token)."""

    def __init__(self, layers: int = 2, pre_norm: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, HIDDEN)
        self.positions = nn.Embedding(TOKENS, HIDDEN)
        self.token_types = nn.Embedding(2, HIDDEN)
        self.embedding_norm = nn.LayerNorm((HIDDEN,), epsilon=1e-5)
        self.layers = nn.CellList([EncoderLayer(pre_norm) for _ in range(layers)])
        self.pooler = nn.Dense(HIDDEN, HIDDEN, activation="tanh")
        rng = np.random.default_rng(seed)
        for p in self.get_parameters():
            shape = p.shape
            if p.name.endswith(("gamma",)):
                value = 1.0 + 0.3 * rng.standard_normal(shape)
            elif p.name.endswith(("beta", "bias")):
                value = 0.2 * rng.standard_normal(shape)
            else:
                value = rng.standard_normal(shape) / np.sqrt(shape[-1])
            p.set_data(Tensor(value.astype(np.float32)))
        table = self.words.embedding_table.asnumpy()
        table[:, [3, 17]] *= 12.0  # outlier channels, as trained transformers have
        self.words.embedding_table.set_data(Tensor(table))

    def construct(self, input_ids, attention_mask, token_type_ids):
        positions = ops.arange(input_ids.shape[1]).astype(ms.int32)
        hidden = self.words(input_ids) + self.positions(positions) + self.token_types(token_type_ids)
        hidden = self.embedding_norm(hidden)
        mask_bias = (1.0 - attention_mask[:, None, None, :]) * -10000.0
        for layer in self.layers:
            hidden = layer(hidden, mask_bias)
        return self.pooler(hidden[:, 0])


def batches(count: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` batches of 2 sequences: ids, mask (second sequence padded), token types."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(1, VOCAB, (2, TOKENS)).astype(np.int32)
        mask = np.ones((2, TOKENS), np.float32)
        mask[1, TOKENS - 4 :] = 0.0
        types = np.zeros((2, TOKENS), np.int32)
        types[:, TOKENS // 2 :] = 1
        out.append((ids, mask, types))
    return out


def run(net, items):
    return np.concatenate([net(*(Tensor(a) for a in item)).asnumpy() for item in items])


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(autouse=True)
def _fast():
    ms.runtime.launch_blocking()


def test_blocks_and_smoothing_groups_are_discovered():
    helper = NetworkHelper()
    pre = Encoder(pre_norm=True)
    blocks = helper.blocks(pre)
    assert [name for name, _ in blocks] == ["layers.0", "layers.1"]
    helper.block_inputs(pre, batches(1))
    groups = {members: norm for norm, members in helper.smooth_groups(blocks[0][1])}
    assert groups == {
        ("query", "key", "value"): "attention_norm",
        ("intermediate",): "mlp_norm",
        ("attention_output",): None,
        ("output",): None,
    }
    post = Encoder(pre_norm=False)
    post_helper = NetworkHelper()
    post_helper.block_inputs(post, batches(1))
    post_groups = {members: norm for norm, members in post_helper.smooth_groups(post_helper.blocks(post)[1][1])}
    # attention_norm's output feeds intermediate *and* the residual addition: never folded
    assert post_groups == {("query", "key", "value"): None, ("intermediate",): None, ("attention_output",): None, ("output",): None}


def test_a_network_without_repeated_blocks_is_one_block():
    net = nn.SequentialCell([nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2)])
    assert find_blocks(net) == [("", net)]


def test_rtn_and_ptq_a16w8_match_the_float_encoder(kernel_path):
    items = batches(3)
    reference = run(Encoder(), items)
    for algorithm, kwargs in (("rtn", {}), ("ptq", {"algo_args": QUIET})):
        net = Encoder()
        algo = gscore.get(algorithm)(PTQConfig(**kwargs))
        algo.apply(net)
        simulated = run(net, items)
        algo.convert(net)
        deployed = run(net, items)
        assert rel_err(deployed, reference) < 0.02, algorithm
        if kernel_path == "portable":
            np.testing.assert_array_equal(deployed, simulated)  # the same ops in the same order
        else:
            np.testing.assert_allclose(deployed, simulated, rtol=1e-5, atol=1e-5)  # native kernels sum in another order
        assert sum(isinstance(c, QuantLinear) for _, c in net.cells_and_names()) == 2 * 6 + 1


def _ln_output_absmax(net, items):
    """Per-channel max |x| of layers.0.attention_norm's output over ``items`` (float network)."""
    seen = []
    handle = net.layers[0].attention_norm.register_forward_hook(lambda cell, inputs, output: seen.append(np.abs(output.asnumpy()).reshape(-1, HIDDEN).max(0)))
    run(net, items)
    handle.remove()
    return np.max(seen, axis=0)


def test_a8w8_smoothquant_folds_into_gamma_and_beta_as_numpy_says():
    items = batches(4)
    float_net = Encoder()
    reference = run(float_net, items)
    ln = float_net.layers[0].attention_norm
    gamma, beta = ln.gamma.asnumpy(), ln.beta.asnumpy()
    weights = {n: getattr(float_net.layers[0], n).weight.asnumpy() for n in ("query", "key", "value")}
    alpha = 0.5
    act = _ln_output_absmax(float_net, items)
    w_max = np.max([np.abs(w).max(axis=0) for w in weights.values()], axis=0)
    s = (act.astype(np.float64) ** alpha / w_max.astype(np.float64) ** (1 - alpha)).astype(np.float32)

    net = Encoder()
    algo = gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"alpha": alpha, **QUIET}))
    algo.apply(net, datasets=items)  # no helper: the generic one
    layer = net.layers[0]
    np.testing.assert_allclose(layer.attention_norm.gamma.asnumpy(), gamma / s, rtol=1e-5)
    np.testing.assert_allclose(layer.attention_norm.beta.asnumpy(), beta / s, rtol=1e-5)
    for name, w in weights.items():
        cell = getattr(layer, name)
        assert isinstance(cell, SimQuantLinear) and not cell.has_smooth
        np.testing.assert_allclose(cell.weight.asnumpy(), w * s[None, :], rtol=1e-5)
    assert layer.attention_output.has_smooth  # no norm before it: an explicit input scale
    simulated = run(net, items)
    algo.convert(net)
    deployed = run(net, items)
    assert rel_err(simulated, reference) < 0.05
    assert rel_err(deployed, reference) < 0.05
    assert rel_err(deployed, simulated) < 0.01


def test_post_norm_encoder_keeps_its_norms_and_stays_close():
    items = batches(4)
    reference = run(Encoder(pre_norm=False), items)
    net = Encoder(pre_norm=False)
    gammas = [p.asnumpy() for p in net.get_parameters() if p.name.endswith("gamma")]
    algo = gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args=QUIET))
    algo.apply(net, datasets=items)
    for before, p in zip(gammas, [p for p in net.get_parameters() if p.name.endswith("gamma")]):
        np.testing.assert_array_equal(p.asnumpy(), before)
    assert all(net.layers[1].query.has_smooth for _ in [0])
    algo.convert(net)
    assert rel_err(run(net, items), reference) < 0.05


def test_smoothquant_checkpoint_deploys_with_a_sample_and_loads(tmp_path):
    items = batches(3)
    config = {"act_quant_dtype": "int8", "outliers_suppression": "smooth"}
    net = Encoder()
    algo = gscore.get("ptq")(PTQConfig(**config, algo_args=QUIET))
    algo.convert(algo.apply(net, datasets=items))
    deployed = run(net, items)
    path = save_checkpoint(net, tmp_path / "encoder.ckpt", description=algo.describe(net))

    fresh = Encoder(seed=5)  # other float weights: the checkpoint must replace them all
    with pytest.raises(MissingHelperMethodError, match="sample="):
        gscore.get("ptq")(PTQConfig(mode="deploy", **config)).apply(Encoder())
    deploy = gscore.get("ptq")(PTQConfig(mode="deploy", **config))
    deploy.convert(deploy.apply(fresh, NetworkHelper(sample=items[0])))
    load_checkpoint(path, fresh)
    np.testing.assert_array_equal(run(fresh, items), deployed)


def test_dict_items_are_keyword_inputs_and_bad_items_are_named():
    items = [dict(zip(("input_ids", "attention_mask", "token_type_ids"), item)) for item in batches(2)]
    net = Encoder()
    algo = gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", algo_args=QUIET))
    algo.apply(net, datasets=items)
    assert isinstance(net.layers[1].output, SimQuantLinear)
    ids, mask, _ = batches(1)[0]
    with pytest.raises(CalibrationDataError, match=r"calibration input 0 \(shape \(2, 12\), dtype Int32, shape \(2, 12\), dtype Float32\)"):
        gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", algo_args=QUIET)).apply(Encoder(), datasets=[(ids, mask)])


def test_a_helper_missing_calibration_methods_is_named():
    class OnlyGenerate:
        def get_spec(self, name):
            return None

        def generate(self, network, input_ids, max_new_tokens=1):
            return None

    with pytest.raises(MissingHelperMethodError, match=r"lacks \['blocks', 'block_inputs'.*subclass gscore.calib.NetworkHelper"):
        gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", algo_args=QUIET)).apply(Encoder(), OnlyGenerate(), datasets=batches(1))
    with pytest.raises(MissingHelperMethodError, match=r"rotation need.*lacks \['residual_stream', 'prepare_rotation'\]"):
        gscore.get("ptq")(PTQConfig(act_quant_dtype="int8", outliers_suppression="rotation", algo_args=QUIET)).apply(Encoder(), datasets=batches(1))


class TestGenericAdapterConformance(ModelAdapterConformance):
    adapter_name = "generic"
    make_network = staticmethod(Encoder)
    make_datasets = staticmethod(lambda: batches(2))
