"""RTN A16W8 end to end on CPU: simulate, convert to int8, save, deploy, load."""

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindformers.modules import Linear
from mindspore import Tensor, nn

import gscore
from gscore import CheckpointMismatchError, ConfigError, NoQuantizableLayerError, PTQConfig, PTQMode
from gscore import kernels
from gscore.io import DESCRIPTION_KEY, load_checkpoint, read_description, save_checkpoint
from gscore.nn.quant_linear import QuantLinear, SimQuantLinear
from gscore.testing.conformance import AlgorithmConformance


class ScaledDense(nn.Dense):
    """A user subclass of nn.Dense: quantized like its base."""


class Block(nn.Cell):
    def __init__(self):
        super().__init__()
        self.up = Linear(in_channels=16, out_channels=32, transpose_b=True, bias_init="normal", weight_init="normal")
        self.down = Linear(in_channels=32, out_channels=16, transpose_b=False, has_bias=False, weight_init="normal")

    def construct(self, x):
        return self.down(self.up(x))


class MixedNet(nn.Cell):
    """mindformers Linear (fp16 compute, both weight layouts) and nn.Dense (fp32), nested."""

    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.SequentialCell([ScaledDense(16, 12, activation="relu"), nn.Dense(12, 4)])
        self.lm_head = nn.Dense(4, 3)

    def construct(self, x):
        return self.lm_head(self.head(self.block(x)))


def make_net(seed: int = 0) -> MixedNet:
    ms.set_seed(seed)
    np.random.seed(seed)
    return MixedNet()


def make_input() -> Tensor:
    return Tensor(np.random.default_rng(1).standard_normal((2, 3, 16)).astype(np.float32))


RTN = gscore.get("rtn")


class TestConformance(AlgorithmConformance):
    algorithm_name = "rtn"
    make_network = staticmethod(make_net)
    make_input = staticmethod(make_input)


def quantized(net, **cfg):
    algo = RTN(PTQConfig(mode=PTQMode.QUANTIZE, **cfg))
    algo.apply(net)
    simulated = net(make_input()).asnumpy()
    algo.convert(net)
    return algo, simulated


def test_apply_simulates_and_convert_stores_real_int8():
    net = make_net()
    float_weights = {p.name: p.asnumpy().copy() for p in net.get_parameters() if p.name.endswith("weight")}
    algo = RTN(PTQConfig())
    algo.apply(net)
    assert isinstance(net.block.up, SimQuantLinear) and isinstance(net.head[0], SimQuantLinear)
    algo.convert(net)
    layers = ["block.up", "block.down", "head.0", "head.1", "lm_head"]
    params = {p.name: p for p in net.get_parameters()}
    for layer in layers:
        weight = params[f"{layer}.weight"]
        scale = params[f"{layer}._weight_quantizer.scale"].asnumpy().astype(np.float32)
        assert weight.dtype == ms.int8
        assert not params[f"{layer}._weight_quantizer.zp_neg"].asnumpy().any()
        w = float_weights[f"{layer}.weight"]
        out_axis = 1 if layer == "block.down" else 0
        shape = (-1, 1) if out_axis == 0 else (1, -1)
        q = weight.asnumpy().astype(np.float32)
        # symmetric per output channel: the largest |w| of each channel maps to +-127
        np.testing.assert_array_equal(np.abs(q).max(axis=1 - out_axis), 127)
        assert np.all(np.abs(q * scale.reshape(shape) - w) <= scale.reshape(shape) / 2 * (1 + 1e-3))
    assert params["block.up._weight_quantizer.scale"].dtype == ms.float16
    assert params["head.1._weight_quantizer.scale"].dtype == ms.float32
    assert [r.phase for r in algo.phase_records] == ["calibrate", "quantize"]


def test_deployed_int8_network_equals_the_simulated_one_bit_for_bit():
    """Tolerance: exact on the portable path: both forms compute (q + zp_neg) * scale in the
    compute dtype. The native kernels sum in another order: equal to float rounding."""
    with kernels.forced("portable"):
        net = make_net()
        _, simulated = quantized(net)
    np.testing.assert_array_equal(net(make_input()).asnumpy(), simulated)
    native = make_net()
    _, simulated = quantized(native)
    assert native.block.up.kernel == "w8_linear" or not kernels.enabled()
    np.testing.assert_allclose(native(make_input()).asnumpy(), simulated, rtol=1e-3, atol=1e-5)


def test_quantized_output_stays_close_to_float():
    reference = make_net()(make_input()).asnumpy()
    net = make_net()
    quantized(net)
    out = net(make_input()).asnumpy()
    assert np.linalg.norm(out - reference) / np.linalg.norm(reference) < 0.02


def test_blacklist_keeps_matching_layers_float():
    net = make_net()
    quantized(net, opname_blacklist=["lm_head", "block.down"])
    assert isinstance(net.lm_head, nn.Dense) and net.lm_head.weight.dtype == ms.float32
    assert not isinstance(net.block.down, QuantLinear)
    assert isinstance(net.block.up, QuantLinear)


def test_blacklisting_everything_is_an_error_not_a_silent_no_op():
    with pytest.raises(NoQuantizableLayerError, match="5 linear or Conv2d layer.*excluded 5"):
        RTN(PTQConfig(opname_blacklist=["block", "head"])).apply(make_net())


def test_convert_without_apply_says_what_to_do():
    with pytest.raises(NoQuantizableLayerError, match="run apply"):
        RTN(PTQConfig()).convert(make_net())


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"act_quant_dtype": "int8"}, r"does not implement act_quant_dtype='int8'; it implements act_quant_dtype in \(None\)"),
        ({"kvcache_quant_dtype": "int8"}, "static per-channel KV scales need calibration"),
        ({"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 64}, r"weight_quant_dtype='int4'; it implements weight_quant_dtype in \('int8', None\)"),
    ],
)
def test_rtn_rejects_what_it_cannot_do(cfg, message):
    with pytest.raises(ConfigError, match=message):
        RTN(PTQConfig(**cfg))


def test_checkpoint_has_golden_stick_names_and_a_description(tmp_path: Path):
    net = make_net()
    algo, _ = quantized(net)
    path = save_checkpoint(net, tmp_path / "rtn.ckpt", description=algo.describe(net))
    contents = ms.load_checkpoint(str(path))
    assert contents["block.up.weight"].dtype == ms.int8
    assert contents["block.up._weight_quantizer.scale"].shape == (32,)
    assert contents["block.up._weight_quantizer.zp_neg"].dtype == ms.float16
    description = read_description(path)
    assert description["format"] == "gscore-quant" and description["config"]["weight_quant_dtype"] == "int8"
    assert description["layers"]["block.down"] == {
        "kind": "weight", "dtype": "int8", "bits": 8, "granularity": "per_channel", "axis": 1,
        "symmetric": True, "scale_dtype": "Float16",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["rtn.ckpt"]


def test_seed_style_plain_mindspore_save_and_load_round_trip(tmp_path: Path):
    net = make_net()
    quantized(net)
    expected = net(make_input()).asnumpy()
    ms.save_checkpoint(net.parameters_dict(), str(tmp_path / "plain.ckpt"))
    deploy = make_net(seed=7)
    algo = RTN(PTQConfig(mode="deploy"))
    algo.convert(algo.apply(deploy))
    ms.load_checkpoint(str(tmp_path / "plain.ckpt"), deploy)
    np.testing.assert_array_equal(deploy(make_input()).asnumpy(), expected)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    net = make_net()
    quantized(net)
    return save_checkpoint(net, tmp_path / "q.ckpt")


def deploy_net() -> MixedNet:
    net = make_net()
    algo = RTN(PTQConfig(mode="deploy"))
    return algo.convert(algo.apply(net))


def _rewrite(path: Path, change) -> Path:
    """A plain MindSpore file (no gscore record, so no checksums) with ``change`` applied."""
    contents = ms.load_checkpoint(str(path))
    contents.pop(DESCRIPTION_KEY)
    change(contents)
    out = path.with_name("changed.ckpt")
    ms.save_checkpoint([{"name": k, "data": v} for k, v in contents.items()], str(out))
    return out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("head.0._weight_quantizer.scale"), "missing head.0._weight_quantizer.scale"),
        (lambda c: c.__setitem__("lm_head.weight", Tensor(np.zeros((3, 5), np.int8))), r"lm_head.weight: shape \(3, 5\) in file, \(3, 4\)"),
        (lambda c: c.__setitem__("block.up.weight", Tensor(np.zeros((32, 16), np.float32))), "block.up.weight: dtype Float32 in file, Int8"),
        (lambda c: c.__setitem__("extra.weight", Tensor(np.zeros(2, np.float32))), "unexpected extra.weight"),
    ],
)
def test_a_checkpoint_that_does_not_fit_names_the_parameter(saved, change, message):
    with pytest.raises(CheckpointMismatchError, match=message):
        load_checkpoint(_rewrite(saved, change), deploy_net())


def test_a_failed_save_leaves_the_previous_file_intact(saved, monkeypatch):
    before = saved.read_bytes()

    def crash(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ms, "save_checkpoint", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(make_net(), saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == ["q.ckpt"]


def test_convert_with_ckpt_path_loads_strictly(saved):
    net = make_net()
    algo = RTN(PTQConfig(mode="deploy"))
    algo.apply(net)
    algo.convert(net, ckpt_path=str(saved))
    assert net.block.up.weight.asnumpy().any()
