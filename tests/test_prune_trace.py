"""Core structure tracing, channel shrinking and cost counting on the real digit networks."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from gscore.models.convnets import DigitsResNet, LeNet5
from gscore.nn.cost import network_cost
from gscore.nn.shrink import ShrinkError, ShrinkPlan, plan_from_groups, shrink
from gscore.nn.trace import Consumer, channel_groups
from gscore.nn.walk import get_cell

ms.runtime.launch_blocking()  # synchronous dispatch: much faster for small networks on 2 cores

SAMPLE = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)


@pytest.fixture(scope="module")
def resnet_groups():
    net = DigitsResNet()
    return net, channel_groups(net, SAMPLE)


def test_resnet_inner_block_channels_are_prunable_and_follow_to_conv2(resnet_groups):
    _, found = resnet_groups
    group = found.groups["layers.1.conv1"]
    assert group.producers == ("layers.1.conv1",) and group.channels == 32 and group.norms == ("layers.1.bn1",)
    assert group.consumers == (Consumer("layers.1.conv2", "conv"),)


def test_resnet_channels_tied_by_residual_additions_form_one_group_each(resnet_groups):
    _, found = resnet_groups
    assert not found.unsupported
    assert list(found.groups) == ["conv1", "layers.0.conv1", "layers.1.conv1", "layers.1.conv2", "layers.2.conv1", "layers.2.conv2"]
    # the stem reaches block 0's conv1 (a cell) AND its identity shortcut (an add outside any
    # cell), which block 0's conv2 also feeds: only the data-flow probes can see the tie
    stem = found.groups["conv1"]
    assert stem.producers == ("conv1", "layers.0.conv2") and stem.norms == ("bn1", "layers.0.bn2")
    assert stem.consumers == (Consumer("layers.0.conv1", "conv"), Consumer("layers.1.conv1", "conv"), Consumer("layers.1.downsample.0", "conv"))
    middle = found.groups["layers.1.conv2"]
    assert middle.producers == ("layers.1.conv2", "layers.1.downsample.0") and middle.norms == ("layers.1.bn2", "layers.1.downsample.1")
    # the last block's sum reaches fc through a functional ReduceMean: one feature per channel
    last = found.groups["layers.2.conv2"]
    assert last.consumers == (Consumer("fc", "dense", 1),) and last.channels == 64
    assert found.group_of("layers.2.downsample.0") is last


def test_lenet_conv_feeds_conv_and_flattened_dense():
    found = channel_groups(LeNet5(), SAMPLE)
    assert found.groups["conv1"].consumers == (Consumer("conv2", "conv"),)
    assert found.groups["conv2"].consumers == (Consumer("fc1", "dense", 16),)
    assert found.groups["conv2"].norms == () and not found.unsupported


class PReLUNet(nn.Cell):
    """conv -> PReLU (per-channel parameters the tracer does not know how to cut) -> conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.act = nn.PReLU(4)
        self.conv2 = nn.Conv2d(4, 2, 3)

    def construct(self, x):
        return ops.mean(self.conv2(self.act(self.conv1(x))), (2, 3))


def test_an_unknown_layer_between_convolutions_is_refused_by_name():
    found = channel_groups(PReLUNet(), SAMPLE)
    assert not found.groups
    assert found.unsupported["conv1"] == "it feeds act (PReLU), which cannot be shrunk along channels"


class GlobalPoolNet(nn.Cell):
    """conv -> BN -> ReLU -> global average pool -> Flatten -> Dense (one feature per channel)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(6, 10)

    def construct(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))


def test_dense_after_global_pooling_consumes_one_feature_per_channel():
    found = channel_groups(GlobalPoolNet(), SAMPLE)
    assert found.groups["conv"].norms == ("bn",)
    assert found.groups["conv"].consumers == (Consumer("fc", "dense", 1),)


def _masked_reference(net, plan_kept, found, x):
    """Outputs of ``net`` with the pruned channels zeroed right before each consumer."""
    handles = []
    for producer, kept in plan_kept.items():
        for consumer in found.groups[producer].consumers:
            mask = np.zeros(found.groups[producer].channels, np.float32)
            mask[kept] = 1
            if consumer.kind == "dense":
                mask = np.repeat(mask, consumer.features_per_channel)[None, :]
            else:
                mask = mask[None, :, None, None]
            m = Tensor(mask)
            handles.append(get_cell(net, consumer.name).register_forward_pre_hook(lambda cell, inputs, m=m: (inputs[0] * m,)))
    try:
        return net(Tensor(x)).asnumpy()
    finally:
        for h in handles:
            h.remove()


def _randomise_norms(net):
    """Distinct BatchNorm statistics and affine parameters per channel, so a mis-sliced one shows."""
    rng = np.random.default_rng(2)
    for param in net.get_parameters():
        if param.name.endswith(("moving_mean", "gamma", "beta")):
            param.set_data(Tensor(rng.normal(0.5, 0.5, param.shape).astype(np.float32)))
        elif param.name.endswith("moving_variance"):
            param.set_data(Tensor(rng.uniform(0.5, 2.0, param.shape).astype(np.float32)))


@pytest.mark.parametrize("make", [DigitsResNet, LeNet5, GlobalPoolNet], ids=["resnet", "lenet", "global-pool"])
def test_shrunk_network_computes_what_the_masked_original_computes(make):
    """One keep-plan per group, residual groups included: the smaller network equals the full
    one with the removed channels zeroed at every consumer's input."""
    net = make()
    _randomise_norms(net)
    net.set_train(False)
    found = channel_groups(net, SAMPLE)
    rng = np.random.default_rng(1)
    kept = {name: np.sort(rng.choice(g.channels, g.channels // 2 + 1, replace=False)) for name, g in found.groups.items()}
    small = shrink(net, plan_from_groups(found.groups, kept))
    small.set_train(False)
    for name, idx in kept.items():
        for producer in found.groups[name].producers:
            assert get_cell(small, producer).out_channels == len(idx)
        for norm in found.groups[name].norms:
            assert get_cell(small, norm).num_features == len(idx)
        for consumer in found.groups[name].consumers:
            assert get_cell(small, consumer.name).in_channels == len(idx) * consumer.features_per_channel
    expected = _masked_reference(net, kept, found, SAMPLE)
    np.testing.assert_allclose(small(Tensor(SAMPLE)).asnumpy(), expected, rtol=1e-4, atol=1e-5)
    assert get_cell(net, next(iter(kept))).out_channels == found.groups[next(iter(kept))].channels  # original untouched


def test_a_resnet_shrinks_its_outer_width_too():
    net = DigitsResNet((8, 16, 32))
    found = channel_groups(net, SAMPLE)
    kept = {name: np.arange(g.channels // 2) for name, g in found.groups.items()}
    small = shrink(net, plan_from_groups(found.groups, kept))
    assert (small.conv1.out_channels, small.layers[0].conv2.out_channels, small.layers[1].downsample[0].out_channels) == (4, 4, 8)
    assert small.layers[2].conv2.out_channels == small.fc.in_channels == 16
    assert small(Tensor(SAMPLE)).shape == (2, 10)


class ConcatNet(nn.Cell):
    """Two convolutions concatenated before a third: channels land at shifted positions."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3)
        self.b = nn.Conv2d(1, 3, 3)
        self.c = nn.Conv2d(6, 2, 3)

    def construct(self, x):
        return ops.mean(self.c(ops.concat((self.a(x), self.b(x)), 1)), (2, 3))


def test_channels_moved_by_a_concat_are_refused_with_the_reason():
    found = channel_groups(ConcatNet(), SAMPLE)
    assert set(found.unsupported) == {"a", "b", "c"}
    assert "reach input 0 of c (Conv2d) at other positions" in found.unsupported["a"]
    assert "network output" in found.unsupported["c"]


def test_plan_round_trips_and_bad_plans_say_what_is_wrong():
    found = channel_groups(LeNet5(), SAMPLE)
    plan = plan_from_groups(found.groups, {"conv2": np.array([0, 3, 5])})
    assert plan.to_dict()["cells"]["fc1"] == {"in": [*range(0, 16), *range(48, 64), *range(80, 96)]}
    assert ShrinkPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ShrinkError, match="'fc9', which LeNet5 does not have"):
        shrink(LeNet5(), ShrinkPlan.from_dict({"cells": {"fc9": {"in": [0]}}}))
    with pytest.raises(ShrinkError, match=r"conv1: output indices must be a non-empty increasing subset of range\(6\)"):
        shrink(LeNet5(), ShrinkPlan.from_dict({"cells": {"conv1": {"out": [2, 6]}}}))
    with pytest.raises(ShrinkError, match="not a prunable channel group"):
        plan_from_groups(found.groups, {"fc1": np.array([0])})


def test_cost_counts_parameters_and_macs_from_the_traced_shapes():
    cost = network_cost(LeNet5(), SAMPLE)
    # conv1 24*24*6*1*25 + conv2 8*8*16*6*25 + fc 256*120 + 120*84 + 84*10
    assert cost.macs == 86400 + 153600 + 30720 + 10080 + 840
    assert cost.parameters == 156 + 2416 + 30840 + 10164 + 850 and cost.flops == 2 * cost.macs
