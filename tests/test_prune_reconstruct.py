"""Least-squares refit after pruning: the patch matrix is the convolution, the solve is exact
where the data determine it, and a refitted pruned network is closer to the unpruned one."""

import copy

import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mindspore import Tensor, nn

from gscore.data.mnist import load_mnist_5k
from gscore.lstsq import BlockElimination, NormalEquations, elimination_scores
from gscore.models.convnets import LeNet5
from gscore.nn.bn_recalib import recalibrate_outputs
from gscore.nn.reconstruct import following_norms, input_patches, reconstruct_layers, reconstruction_scores, refittable
from gscore.nn.shrink import plan_from_groups, shrink
from gscore.nn.trace import channel_groups, trace_calls
from gscore.train.classifier import train_classifier

ms.runtime.launch_blocking()  # synchronous dispatch: much faster for small networks on 2 cores


@pytest.mark.parametrize(
    "kernel, stride, dilation, pad_mode, padding",
    [(3, 1, 1, "same", 0), (3, 2, 1, "same", 0), (4, 2, 1, "same", 0), (3, 1, 2, "same", 0), (5, 1, 1, "valid", 0), (3, 2, 1, "pad", 2), (1, 2, 1, "same", 0)],
)
def test_the_patch_matrix_times_the_weight_is_the_convolution(kernel, stride, dilation, pad_mode, padding):
    """Odd 9x10 inputs make "same" padding uneven, so the rule for the odd zero is exercised."""
    ms.set_seed(0)
    conv = nn.Conv2d(3, 5, kernel, stride=stride, dilation=dilation, pad_mode=pad_mode, padding=padding, has_bias=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 10)).astype(np.float32)
    want = conv(Tensor(x)).asnumpy()
    got = input_patches(conv, x) @ conv.weight.asnumpy().reshape(5, -1).T
    np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1).reshape(-1, 5), rtol=1e-4, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.booleans(), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_normal_equations_recover_the_weights_that_made_the_data(features, outputs, intercept, batches, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((outputs, features))
    bias = rng.standard_normal(outputs) if intercept else np.zeros(outputs)
    equations = NormalEquations(features, outputs, intercept)
    for _ in range(batches):
        x = rng.standard_normal((3 * features + 2, features))
        equations.add(x, x @ weight.T + bias)
    got_weight, got_bias = equations.solve(ridge=1e-12)
    np.testing.assert_allclose(got_weight, weight, rtol=1e-6, atol=1e-8)
    if intercept:
        np.testing.assert_allclose(got_bias, bias, rtol=1e-6, atol=1e-8)
    else:
        assert got_bias is None


def _explained(equations: NormalEquations, ridge: float, columns: np.ndarray) -> float:
    """Output energy the ridge fit on ``columns`` (plus the intercept) explains, solved afresh."""
    cols = np.r_[columns, len(equations.gram) - 1].astype(np.int64) if equations.intercept else np.asarray(columns, np.int64)
    gram = equations.regularised(ridge)[np.ix_(cols, cols)]
    return float(np.sum(equations.cross[cols] * np.linalg.solve(gram, equations.cross[cols])))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.integers(1, 3), st.booleans(), st.integers(0, 2**31 - 1))
def test_block_elimination_costs_are_what_a_fresh_refit_without_the_block_loses(blocks, width, outputs, intercept, seed):
    """Block OBS against brute force: every cost, before and after a removal, equals the drop in
    explained energy of solving the remaining columns from scratch."""
    rng = np.random.default_rng(seed)
    features = blocks * width
    x = rng.standard_normal((4 * features + 3, features)) * rng.uniform(0.1, 3.0, features)
    equations = NormalEquations(features, outputs, intercept)
    equations.add(x, x @ rng.standard_normal((features, outputs)) + rng.standard_normal((len(x), outputs)))
    columns = [np.arange(b * width, (b + 1) * width) for b in range(blocks)]
    fit = BlockElimination(equations, columns, ridge=1e-3)
    full = _explained(equations, 1e-3, np.arange(features))
    rest = np.arange(features)
    for removed in rng.permutation(blocks)[:-1]:
        left = [b for b in range(blocks) if set(columns[b]) <= set(rest)]
        base = _explained(equations, 1e-3, rest)
        want = [(base - _explained(equations, 1e-3, np.setdiff1d(rest, columns[b]))) / full for b in left]
        np.testing.assert_allclose(fit.costs(left), want, rtol=1e-7, atol=1e-10)
        fit.remove(int(removed))
        rest = np.setdiff1d(rest, columns[removed])


def test_elimination_removes_a_duplicated_block_before_any_needed_one():
    """Two identical input channels: either one is free to remove (the refit moves its weight to the
    other), though both have the largest inputs; then the weakest needed channel goes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 4)) * [1.0, 0.3, 0.5, 2.0]
    x = np.concatenate([x, x[:, 3:]], axis=1)  # channel 4 repeats channel 3
    equations = NormalEquations(5, 2, intercept=True)
    equations.add(x, x @ rng.standard_normal((5, 2)) + 0.01 * rng.standard_normal((400, 2)))
    scores = elimination_scores([BlockElimination(equations, [np.array([c]) for c in range(5)], ridge=1e-6)], 5, removals=2)
    assert sorted(np.argsort(scores)[:2].tolist()) in ([1, 3], [1, 4])
    assert sorted(scores.tolist()) == [0, 1, 2, 3, 4]


def test_elimination_refuses_impossible_removal_counts():
    equations = NormalEquations(2, 1, intercept=False)
    equations.add(np.eye(2), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"removals must be in \[0, 2\]"):
        elimination_scores([BlockElimination(equations, [np.array([0]), np.array([1])], 1e-4)], 2, removals=3)


def test_solving_without_rows_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        NormalEquations(3, 2, intercept=True).solve(1e-4)


@pytest.fixture(scope="module")
def trained():
    data = load_mnist_5k()
    ms.set_seed(0)
    net = LeNet5()
    train_classifier(net, data.train_x[:1024], data.train_y[:1024], epochs=1, batch_size=32, progress=False)
    return net, data


LAYERS = ["conv1", "conv2", "fc1", "fc2", "fc3"]


def test_refitting_an_unpruned_network_gives_back_what_it_computes(trained):
    """Weights on inputs that never vary (a dead ReLU channel) are not determined by data, so
    the check is on what the network computes, on images the refit never saw, and on the
    weights of the first layer (whose input, the image, determines all of them)."""
    net, data = trained
    copied = copy.deepcopy(net)
    for _, cell in copied.cells_and_names():
        if refittable(cell):
            cell.weight.set_data(Tensor(np.zeros(cell.weight.shape, np.float32)))  # the refit must not start from the answer
    assert reconstruct_layers(net, copied, LAYERS, data.train_x[:512], ridge=1e-9) == LAYERS
    held_out = Tensor(data.test_x[:500])
    np.testing.assert_allclose(copied(held_out).asnumpy(), net(held_out).asnumpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(copied.conv1.weight.asnumpy(), net.conv1.weight.asnumpy(), rtol=1e-3, atol=1e-4)


def test_a_refitted_pruned_network_is_closer_to_the_unpruned_one(trained):
    """Half of every prunable layer's channels removed; refitting the layers that lost inputs
    then re-standardising beats re-standardising alone, on images the refit never saw."""
    net, data = trained
    found = channel_groups(net, data.train_x[:2])
    plan = plan_from_groups(found.groups, {name: np.arange(0, g.channels, 2) for name, g in found.groups.items()})
    kept = {name: cut.out_keep for name, cut in plan.cuts.items()}
    fit, held_out = data.train_x[:512], data.test_x[:500]
    logits = net(Tensor(held_out)).asnumpy()
    errors = {}
    for refit in (False, True):
        pruned = shrink(net, plan)
        if refit:
            lost_inputs = [name for name in LAYERS if name in plan.cuts and plan.cuts[name].in_keep is not None]
            assert reconstruct_layers(net, pruned, lost_inputs, fit, kept) == ["conv2", "fc1"]
        recalibrate_outputs(net, pruned, LAYERS, fit, kept)
        errors[refit] = float(np.mean((pruned(Tensor(held_out)).asnumpy() - logits) ** 2))
    assert errors[True] < 0.5 * errors[False], errors


def test_layers_whose_output_is_not_linear_in_the_weights_are_left_alone():
    dense = nn.Dense(4, 3, activation="relu")
    assert not refittable(dense) and refittable(nn.Dense(4, 3)) and not refittable(nn.Conv2d(4, 4, 3, group=2))


class ConstantChannel(nn.Cell):
    """``stem`` makes a copy of the image and a constant channel (zero weights, bias 1); ``conv``
    has no bias and only ``bn`` reads it. Pruning the constant channel leaves ``conv`` a
    per-channel offset that only an intercept can give back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1, pad_mode="valid", has_bias=True)
        self.stem.weight.set_data(Tensor(np.array([1.0, 0.0], np.float32).reshape(2, 1, 1, 1)))
        self.stem.bias.set_data(Tensor(np.array([0.0, 1.0], np.float32)))
        self.conv = nn.Conv2d(2, 3, 3, pad_mode="valid", has_bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(3 * 6 * 6, 4)

    def construct(self, x):
        return self.fc(self.flatten(self.bn(self.conv(self.stem(x)))))


def test_the_intercept_of_a_convolution_without_bias_goes_into_its_batchnorm():
    ms.set_seed(0)
    net = ConstantChannel()
    net.set_train(False)
    images = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    found = channel_groups(net, images[:2])
    plan = plan_from_groups({"stem": found.groups["stem"]}, {"stem": np.array([0])})
    assert following_norms(trace_calls(shrink(net, plan), images[:2])) == {"conv": "bn"}
    held_out = Tensor(np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype(np.float32))
    want = net(held_out).asnumpy()
    errors = {}
    for norms in (None, {"conv": "bn"}):
        pruned = shrink(net, plan)
        assert reconstruct_layers(net, pruned, ["conv"], images, ridge=1e-9, norms=norms) == ["conv"]
        errors[norms is not None] = float(np.abs(pruned(held_out).asnumpy() - want).max())
    assert errors[True] < 1e-3 < errors[False], errors
