"""One-pass, true-sequential calibration (``algo_args true_sequential``) on a real truncated SmolLM2.

The block's one pass must be the calibrated block's own forward (its output feeds the next
block), each layer's statistics must come from the quantized layers before it in the block,
and the two-pass path must remain where one pass cannot do.
"""

import numpy as np
import pytest

import gscore
from gscore import PTQConfig
from gscore.calib.observers import InputObserver
from gscore.models.llama_helper import LlamaHelper
from gscore.nn.kv_cache import DynamicInt8KVCache
from gscore.nn.walk import get_cell, replace_cell
from gscore.quant import compute_params
from gscore.testing.reliability import describe_difference, network_state
from gscore_ptq import block as block_module
from gscore_ptq.block import ACT_SCHEME

PTQ = gscore.get("ptq")
LAYERS = 2
GPTQ = {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "precision_recovery": "gptq",
        "algo_args": {"desc_act": True, "static_groups": True}}
STATIC_A8W8 = {"act_quant_dtype": "int8"}


class RecordingHelper(LlamaHelper):
    """Counts block runs and keeps the state the driver passes on after every block."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runs = 0
        self.after = []

    def run_block(self, block, state):
        self.runs += 1
        return super().run_block(block, state)

    def block_done(self, name, block, state):
        self.after.append(state)


def calibrate(make_llama, calibration, kwargs, **helper_kwargs):
    net = make_llama(LAYERS)
    helper = RecordingHelper(**helper_kwargs)
    args = {**kwargs.get("algo_args", {}), "progress": False}
    PTQ(PTQConfig(**{**kwargs, "algo_args": args})).apply(net, helper, datasets=calibration)
    return net, helper


@pytest.mark.parametrize(
    "kwargs, helper_kwargs, one_pass",
    [
        (GPTQ, {}, True),
        ({**GPTQ, "algo_args": {**GPTQ["algo_args"], "true_sequential": False}}, {}, False),
        (GPTQ, {"windows_per_forward": 1}, False),  # the layers see the windows in two calls
        (GPTQ, {"windows_per_forward": 2}, True),  # every window in one call
        ({**STATIC_A8W8, "outliers_suppression": "smooth", "algo_args": {"alpha": [0.3, 0.5]}}, {}, False),  # a search on block outputs
        ({**STATIC_A8W8, "kvcache_quant_dtype": "int8"}, {}, False),  # a static KV cache
        ({**STATIC_A8W8, "kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"}, {}, True),
    ],
)
def test_one_pass_per_block_where_possible(make_llama, windows, kwargs, helper_kwargs, one_pass):
    net, helper = calibrate(make_llama, windows[0], kwargs, **helper_kwargs)
    if one_pass:
        assert helper.runs == LAYERS
    else:
        assert helper.runs >= 2 * LAYERS
    if kwargs.get("kvcache_quant_granularity") == "per_token":
        assert all(isinstance(layer.self_attn.kv_cache, DynamicInt8KVCache) for layer in net.model.layers)


AWQ = {"weight_quant_dtype": "int4", "weight_quant_granularity": "per_group", "group_size": 128, "outliers_suppression": "awq",
       "algo_args": {"smooth_alpha": [0.0, 0.5]}}


@pytest.mark.parametrize("kwargs", [GPTQ, AWQ, {**STATIC_A8W8, "outliers_suppression": "smooth"}], ids=["gptq", "awq", "smooth-static"])
def test_the_pass_output_is_the_calibrated_blocks_output(make_llama, windows, kwargs):
    """What the pass hands to the next block is what the calibrated block computes: bit for bit
    where no scale was folded into a norm (GPTQ), and where one was (AWQ, static A8W8), equal but
    for the last-bit difference of multiplying the norm's output by ``1/s`` instead, which a
    static int8 input rounding can turn into a whole step on a few values."""
    calibration = windows[0]
    net, helper = calibrate(make_llama, calibration, kwargs)
    inputs = [LlamaHelper().block_inputs(net, calibration), *helper.after[:-1]]
    for block, state, after in zip(net.model.layers, inputs, helper.after):
        expected = LlamaHelper().run_block(block, state).hidden.asnumpy()
        got = after.hidden.asnumpy()
        if kwargs is GPTQ:
            np.testing.assert_array_equal(got, expected)
        else:
            close = np.isclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
            assert close.mean() > 0.999
            np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


def observed_range(block, rel, state):
    """``(min, max)`` of every input row reaching layer ``rel`` of ``block`` run on ``state``."""
    observer = InputObserver(get_cell(block, rel))
    replace_cell(block, rel, observer)
    try:
        LlamaHelper().run_block(block, state)
    finally:
        replace_cell(block, rel, observer.layer)
    return observer.stats.lo.min(), observer.stats.hi.max()


@pytest.mark.parametrize("rel", ["self_attn.o_proj", "mlp.down_proj"])
def test_static_ranges_come_from_the_quantized_layers_before(make_llama, windows, rel):
    """One pass: a static input range is that of the inputs the *calibrated* block feeds the
    layer. Two passes: that of the float block's. The two differ, so the test tells them apart."""
    calibration = windows[0]
    state = LlamaHelper().block_inputs(make_llama(LAYERS), calibration)
    ranges = {}
    for sequential in (True, False):
        net, _ = calibrate(make_llama, calibration, {**STATIC_A8W8, "algo_args": {"true_sequential": sequential}})
        quantizer = get_cell(net.model.layers[0], rel)._input_quantizer
        ranges[sequential] = (float(quantizer.scale.asnumpy()[0]), float(quantizer.zp.asnumpy()[0]))
        seen = observed_range(net.model.layers[0] if sequential else make_llama(LAYERS).model.layers[0], rel, state)
        params = compute_params(np.array([seen[0]]), np.array([seen[1]]), ACT_SCHEME)
        assert ranges[sequential] == (float(params.scale[0]), float(params.zero_point[0]))
    assert ranges[True] != ranges[False]


class InjectedFailure(RuntimeError):
    """Raised by the patched GPTQ inside the one pass."""


def test_a_failure_inside_the_pass_leaves_the_network_as_it_was(make_llama, windows, monkeypatch):
    """GPTQ failing on the gate/up group of the first block, with q/k/v and o already
    quantized inside the running pass: the network comes back whole (structure, names, values,
    no stand-in cell left), and a retry gives what a clean run gives."""
    calibration = windows[0]
    clean, _ = calibrate(make_llama, calibration, GPTQ)
    original = block_module.gptq_quantize
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise InjectedFailure("injected failure in the third GPTQ call")
        return original(*args, **kwargs)

    net = make_llama(LAYERS)
    state = network_state(net)
    algo = PTQ(PTQConfig(**{**GPTQ, "algo_args": {**GPTQ["algo_args"], "progress": False}}))
    monkeypatch.setattr(block_module, "gptq_quantize", failing)
    with pytest.raises(InjectedFailure):
        algo.apply(net, LlamaHelper(), datasets=calibration)
    assert calls["n"] == 3
    assert network_state(net) == state, describe_difference(state, network_state(net))
    monkeypatch.undo()
    algo.apply(net, LlamaHelper(), datasets=calibration)
    assert network_state(net) == network_state(clean)
