"""Classification metrics: cross-entropy of known logits, paired accuracy differences."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gscore.eval.classification import example_cross_entropy, mean_cross_entropy, paired_accuracy_difference, paired_difference


def test_cross_entropy_of_known_logits():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    assert mean_cross_entropy(logits, np.array([0, 0])) == pytest.approx((np.log(2.0) + np.log(4.0 / 3.0)) / 2)


def test_example_cross_entropy_is_each_rows_negative_log_likelihood():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0], [0.0, np.log(3.0)]])
    np.testing.assert_allclose(example_cross_entropy(logits, np.array([0, 0, 0])), [np.log(2.0), np.log(4.0 / 3.0), np.log(4.0)])


@given(st.lists(st.tuples(st.floats(0, 20), st.floats(0, 20)), min_size=2, max_size=100))
def test_paired_difference_of_losses_is_the_mean_difference_with_its_standard_error(pairs):
    a, b = (np.array(column) for column in zip(*pairs))
    difference, stderr = paired_difference(a, b)
    d = a - b
    assert difference == pytest.approx(d.mean(), abs=1e-9)
    assert stderr == pytest.approx(np.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1) / len(d)), abs=1e-9)


def test_cross_entropy_is_stable_for_huge_logits():
    assert mean_cross_entropy(np.array([[1e4, 0.0]]), np.array([1])) == pytest.approx(1e4)


def test_cross_entropy_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"labels in \[0, classes\)"):
        mean_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=200))
def test_paired_difference_is_the_accuracy_difference_with_the_standard_error_of_the_disagreements(pairs):
    a, b = (np.array(column) for column in zip(*pairs))
    difference, stderr = paired_accuracy_difference(a, b)
    assert difference == pytest.approx(100 * (a.mean() - b.mean()), abs=1e-9)
    d = a.astype(float) - b.astype(float)
    assert stderr == pytest.approx(100 * np.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1) / len(d)), abs=1e-9)
    if np.array_equal(a, b):
        assert (difference, stderr) == (0.0, 0.0)


def test_paired_difference_needs_matching_vectors():
    with pytest.raises(ValueError, match="equal-length"):
        paired_accuracy_difference(np.array([True]), np.array([True]))
    with pytest.raises(ValueError, match="equal-length"):
        paired_accuracy_difference(np.array([True, False, True]), np.array([True, False]))
