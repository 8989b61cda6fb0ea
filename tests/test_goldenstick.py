"""Golden Stick's RTN A16W8 layout both ways, and DEPLOY placeholders that a plain MindSpore load cannot hide.

The fixture was written by mindspore-gs 1.4.1 (see ``shared/reference/fixtures/README.md``):
one mindformers ``Linear(5 -> 6, bias)`` named ``linear``. Its float weights are not kept, so
outputs are checked against numpy ``x @ (q * scale).T + b`` computed from the file itself.
"""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindformers.modules import Linear
from mindspore import Parameter, Tensor, nn

import gscore
from gscore import PTQConfig, PTQMode
from gscore.errors import CheckpointMismatchError, ConfigError, UnloadedParametersError
from gscore.io import check_loaded, load_checkpoint, load_goldenstick, save_checkpoint, save_goldenstick, unloaded_parameters

RELATIVE = Path("shared/reference/fixtures/goldenstick_rtn_linear5x6.ckpt")
# shared/ sits beside the checkout (CI's clone) or higher up (a worktree): the nearest ancestor's
FIXTURE = next((d / RELATIVE for d in Path(__file__).resolve().parents if (d / RELATIVE).is_file()), RELATIVE)
RTN = gscore.get("rtn")


class SimpleNet(nn.Cell):
    """The tutorial's network: one mindformers Linear (float16 compute), or an nn.Dense (float32)."""

    def __init__(self, dense: bool = False, name_bias: bool = True) -> None:
        super().__init__()
        if dense:
            self.linear = nn.Dense(5, 6, has_bias=name_bias)
        else:
            self.linear = Linear(in_channels=5, out_channels=6, transpose_b=True, has_bias=name_bias, bias_init="normal", weight_init="normal")

    def construct(self, x):
        return self.linear(x)


class TwoLayouts(nn.Cell):
    """mindformers Linear with an [out, in] weight and a bias, then an [in, out] weight without one."""

    def __init__(self) -> None:
        super().__init__()
        self.up = Linear(in_channels=16, out_channels=32, transpose_b=True, bias_init="normal", weight_init="normal")
        self.down = Linear(in_channels=32, out_channels=8, transpose_b=False, has_bias=False, weight_init="normal")

    def construct(self, x):
        return self.down(self.up(x))


def deployed(net: nn.Cell) -> nn.Cell:
    algo = RTN(PTQConfig(mode=PTQMode.DEPLOY))
    return algo.convert(algo.apply(net))


def quantized(net: nn.Cell) -> nn.Cell:
    algo = RTN(PTQConfig(mode=PTQMode.QUANTIZE))
    return algo.convert(algo.apply(net))


def fixture_reference(x: np.ndarray) -> np.ndarray:
    contents = ms.load_checkpoint(str(FIXTURE))
    q = contents["linear._handler.weight"].asnumpy().astype(np.float32)
    scale = contents["linear._weight_quantizer.scale"].asnumpy().astype(np.float32)
    return x @ (q * scale[:, None]).T + contents["linear._handler.bias"].asnumpy()


X = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)


def test_the_fixture_is_there():
    assert FIXTURE.is_file(), f"{RELATIVE} not found beside or above {Path(__file__).parent}"


def test_the_golden_stick_fixture_loads_into_a_mindformers_deploy_network():
    net = deployed(SimpleNet())
    load_goldenstick(FIXTURE, net)
    expected = fixture_reference(X)
    # mindformers Linear computes in float16: within one float16 step (2^-10) of the largest output
    np.testing.assert_allclose(net(Tensor(X)).asnumpy(), expected, rtol=0, atol=2**-10 * np.abs(expected).max())
    assert net.linear._weight_quantizer.scale.dtype == ms.float16


def test_the_golden_stick_fixture_loads_into_a_float32_dense_deploy_network():
    net = deployed(SimpleNet(dense=True))
    load_goldenstick(FIXTURE, net)
    assert net.linear._weight_quantizer.scale.dtype == ms.float32  # float16 scales widened exactly
    np.testing.assert_allclose(net(Tensor(X)).asnumpy(), fixture_reference(X), rtol=1e-5, atol=1e-7)


def test_export_writes_the_fixture_layout_and_values(tmp_path):
    net = deployed(SimpleNet())
    load_goldenstick(FIXTURE, net)
    with pytest.raises(ConfigError, match="must end in .ckpt"):
        save_goldenstick(net, tmp_path / "gs.bin")
    exported, original = ms.load_checkpoint(str(save_goldenstick(net, tmp_path / "gs.ckpt"))), ms.load_checkpoint(str(FIXTURE))
    assert set(exported) == set(original)
    for name, value in original.items():
        assert exported[name].dtype == value.dtype and exported[name].shape == value.shape
        np.testing.assert_array_equal(exported[name].asnumpy(), value.asnumpy())


def test_gscore_to_golden_stick_to_gscore_gives_identical_outputs(tmp_path):
    ms.set_seed(3)
    net = quantized(TwoLayouts())
    x = Tensor(np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32))
    expected = net(x).asnumpy()
    path = save_goldenstick(net, tmp_path / "gs.ckpt")
    names = set(ms.load_checkpoint(str(path)))
    assert {"up._handler.weight", "up._handler.bias", "down._handler.weight", "up._weight_quantizer.scale"} <= names
    assert not {"up.weight", "up.bias", "down.weight"} & names
    fresh = deployed(TwoLayouts())
    load_goldenstick(path, fresh)
    np.testing.assert_array_equal(fresh(x).asnumpy(), expected)
    back = save_checkpoint(fresh, tmp_path / "gscore.ckpt")
    again = deployed(TwoLayouts())
    load_checkpoint(back, again)
    np.testing.assert_array_equal(again(x).asnumpy(), expected)


def test_export_refuses_float32_scales_it_would_round(tmp_path):
    net = quantized(SimpleNet(dense=True))
    with pytest.raises(CheckpointMismatchError, match=r"linear._weight_quantizer.scale .*float32 values are not exactly representable in float16"):
        save_goldenstick(net, tmp_path / "gs.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_deploy_network_never_loaded(tmp_path):
    with pytest.raises(UnloadedParametersError, match="linear.weight"):
        save_goldenstick(deployed(SimpleNet()), tmp_path / "gs.ckpt")


def _rewritten(tmp_path: Path, change) -> Path:
    contents = ms.load_checkpoint(str(FIXTURE))
    change(contents)
    path = tmp_path / "changed.ckpt"
    ms.save_checkpoint([{"name": k, "data": v} for k, v in contents.items()], str(path))
    return path


class OtherName(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.other = Linear(in_channels=5, out_channels=6, transpose_b=True, bias_init="normal", weight_init="normal")

    def construct(self, x):
        return self.other(x)


def test_import_names_what_does_not_fit(tmp_path):
    with pytest.raises(CheckpointMismatchError, match=r"missing other._handler.weight.*unexpected linear._handler.weight: linear is not a deployed int8 layer"):
        load_goldenstick(FIXTURE, deployed(OtherName()))
    shifted = _rewritten(tmp_path, lambda c: c.__setitem__("linear._weight_quantizer.zp_neg", Parameter(Tensor(np.full(6, 2.0, np.float16)), name="z")))
    with pytest.raises(CheckpointMismatchError, match=r"linear._weight_quantizer.zp_neg is not zero, but linear is symmetric"):
        load_goldenstick(shifted, deployed(SimpleNet()))
    extra = _rewritten(tmp_path, lambda c: c.__setitem__("linear._input_quantizer.scale", Parameter(Tensor(np.ones(1, np.float32)), name="s")))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected linear._input_quantizer.scale"):
        load_goldenstick(extra, deployed(SimpleNet()))
    own = save_checkpoint(quantized(SimpleNet()), tmp_path / "own.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"missing linear._handler.weight \(the file holds gscore's own names: load it with gscore.io.load_checkpoint\)"):
        load_goldenstick(own, deployed(SimpleNet()))
    with pytest.raises(FileNotFoundError):
        load_goldenstick(tmp_path / "absent.ckpt", deployed(SimpleNet()))


def test_import_refuses_a_network_whose_layers_golden_stick_rtn_cannot_hold():
    ptq = gscore.get("ptq")(PTQConfig(mode=PTQMode.DEPLOY, act_quant_dtype=ms.int8))
    net = ptq.convert(ptq.apply(SimpleNet()))
    with pytest.raises(CheckpointMismatchError, match=r"layer linear is not weight-only int8 per output channel .*an input quantizer"):
        load_goldenstick(FIXTURE, net)
    with pytest.raises(CheckpointMismatchError, match=r"has no deployed int8 linear layer: build it with RTN in DEPLOY mode"):
        load_goldenstick(FIXTURE, SimpleNet())


def test_a_deploy_network_is_all_placeholders_until_loaded():
    net = deployed(SimpleNet())
    assert sorted(unloaded_parameters(net)) == ["linear._weight_quantizer.scale", "linear.bias", "linear.weight"]
    assert np.isnan(net(Tensor(X)).asnumpy()).all()


def test_plain_mindspore_load_of_a_golden_stick_file_cannot_go_unnoticed():
    """mindspore.load_checkpoint matches the scales (same names) but not _handler.weight/bias: it only warns."""
    net = deployed(SimpleNet())
    ms.load_checkpoint(str(FIXTURE), net)
    assert np.isnan(net(Tensor(X)).asnumpy()).all()
    with pytest.raises(UnloadedParametersError, match=r"2 placeholder\(s\) that no checkpoint replaced: linear.bias, linear.weight.*gscore.io.load_goldenstick"):
        check_loaded(net)


def test_plain_mindspore_load_misses_the_codes_of_a_bias_free_layer_and_check_loaded_names_them(tmp_path):
    path = save_goldenstick(quantized(SimpleNet(name_bias=False)), tmp_path / "gs.ckpt")
    net = deployed(SimpleNet(name_bias=False))
    ms.load_checkpoint(str(path), net)
    assert not net(Tensor(X)).asnumpy().any()  # zero codes: the layer outputs zeros
    with pytest.raises(UnloadedParametersError, match=r"1 placeholder\(s\) that no checkpoint replaced: linear.weight\."):
        check_loaded(net)


def test_plain_mindspore_load_of_a_gscore_file_fills_every_placeholder(tmp_path):
    source = quantized(SimpleNet())
    path = save_checkpoint(source, tmp_path / "q.ckpt")
    net = deployed(SimpleNet())
    ms.load_checkpoint(str(path), net)
    check_loaded(net)
    np.testing.assert_array_equal(net(Tensor(X)).asnumpy(), source(Tensor(X)).asnumpy())


def test_greedy_generation_of_an_unloaded_deploy_llama_names_the_placeholders():
    from gscore.models.llama import LlamaConfig, build_llama
    from gscore.models.llama_helper import LlamaHelper

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=2, num_kv_heads=1, max_positions=16)
    net = deployed(build_llama(config))
    with pytest.raises(UnloadedParametersError, match=r"model.layers.0.self_attn.q_proj._weight_quantizer.scale"):
        LlamaHelper().generate(net, np.array([[1, 2, 3]]), max_new_tokens=2)
