"""sgm_jax.metrics.classwise_prdc against per-class prdc by hand, and exact cases."""

from __future__ import annotations

import numpy as np
import pytest

from sgm_jax.metrics import classwise_prdc, prdc

KEYS = ("precision", "recall", "density", "coverage")


def _shuffled(features, labels, seed):
    order = np.random.default_rng(seed).permutation(len(labels))
    return features[order], labels[order]


def _labelled_set(counts, seed, shift=0.0):
    """Standard normal 2-D features, ``counts[c]`` of class c around (3c + shift, 0), shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    features = rng.normal(size=(labels.size, 2)) + np.stack(
        [3.0 * labels + shift, np.zeros(labels.size)], axis=1)
    return _shuffled(features.astype(np.float32), labels.astype(np.int32), seed + 1)


def test_classwise_prdc_is_the_mean_of_per_class_prdc_with_per_class_truncation():
    real, real_y = _labelled_set([12, 15, 10], seed=0)
    fake, fake_y = _labelled_set([12, 9, 10], seed=10, shift=0.5)
    # Class 2 gets 4 extra fakes far away, after its other fakes in the array: the first 10
    # fakes of class 2 (in array order) are compared with its 10 reals, the far ones dropped.
    far = np.array([[40.0, 0.0], [41.0, 0.0], [42.0, 0.0], [43.0, 0.0]], np.float32)
    idx2 = np.flatnonzero(fake_y == 2)
    fake = np.insert(fake, idx2[-1] + 1, far, axis=0)
    fake_y = np.insert(fake_y, idx2[-1] + 1, [2, 2, 2, 2])

    got = classwise_prdc(real, real_y, fake, fake_y, num_classes=3, nearest_k=3)

    want = {name: [] for name in KEYS}
    for c in range(3):
        real_c = real[real_y == c]
        fake_c = fake[fake_y == c][:len(real_c)]
        values = prdc(real_c, fake_c, 3)
        for name in KEYS:
            want[name].append(float(values[name]))
    for name in KEYS:
        np.testing.assert_allclose(got["per_class"][name], want[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[name], np.mean(want[name]), rtol=1e-6, err_msg=name)
    # Without truncation the 4 far fakes, in no real ball, would dilute precision by 10/14.
    untruncated = prdc(real[real_y == 2], fake[fake_y == 2], 3)
    np.testing.assert_allclose(float(untruncated["precision"]),
                               got["per_class"]["precision"][2] * 10 / 14, rtol=1e-6)
    assert got["per_class"]["precision"][2] > 0.5
    assert 0.0 < got["precision"] < 1.0 and 0.0 < got["coverage"] < 1.0  # a non-trivial case


def test_perfect_copy_with_right_labels_scores_one():
    """Integer coordinates: every squared distance is an integer below 2²⁴, exact in float32 in
    any order of summation, so the radius and the cross distances of a copy tie exactly however
    XLA fuses and rounds the two programs."""
    real, real_y = _labelled_set([11, 8, 13], seed=1)
    real = np.round(64.0 * real)  # |coordinate| < 600: squared distances < 2 · 1200² < 2²⁴
    fake, fake_y = _shuffled(real, real_y, seed=5)  # the same points and labels, another order
    got = classwise_prdc(real, real_y, fake, fake_y, num_classes=3)
    # Open balls, no ties: every metric is exactly 1 (density too; see the prdc docstring).
    for name in KEYS:
        assert got[name] == 1.0, name
        assert got["per_class"][name] == [1.0, 1.0, 1.0], name


def test_swapped_labels_are_caught_by_classwise_but_not_by_plain_prdc():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 20).astype(np.int32)
    real = (rng.normal(size=(40, 2)) + 50.0 * labels[:, None]).astype(np.float32)
    fake, fake_y = real, 1 - labels  # right samples, generated for the wrong class
    got = classwise_prdc(real, labels, fake, fake_y, num_classes=2)
    for name in KEYS:
        assert got[name] == 0.0, name
    plain = prdc(real, fake, 3)
    for name in ("precision", "recall", "coverage"):
        assert float(plain[name]) == 1.0, name


def test_too_few_examples_in_a_class():
    real, real_y = _labelled_set([6, 3, 6], seed=3)
    fake, fake_y = _labelled_set([6, 6, 6], seed=4)
    with pytest.raises(ValueError, match=r"class 1 has 3 real and 6 fake"):
        classwise_prdc(real, real_y, fake, fake_y, num_classes=3, nearest_k=3)
    real, real_y = _labelled_set([6, 6, 6], seed=3)
    fake, fake_y = _labelled_set([6, 6, 2], seed=4)
    with pytest.raises(ValueError, match=r"class 2 has 6 real and 2 fake"):
        classwise_prdc(real, real_y, fake, fake_y, num_classes=3, nearest_k=3)
    # A class with no examples at all (labels only use 0 and 1 of three classes).
    with pytest.raises(ValueError, match=r"class 2 has 0 real and 0 fake"):
        classwise_prdc(real[real_y < 2], real_y[real_y < 2], fake[fake_y < 2], fake_y[fake_y < 2],
                       num_classes=3)


@pytest.mark.parametrize("labels_fn,match", [
    (lambda y: y + 1,
     r"real_labels must lie in \[0, 3\) \(num_classes = 3\); got values in \[1, 3\]"),
    (lambda y: y - 1, r"real_labels must lie in .* got values in \[-1, 1\]"),
    (lambda y: y.astype(np.float32), r"real_labels must hold integer class labels"),
    (lambda y: y[:-1], r"real_labels must hold integer class labels of shape \[18\]"),
])
def test_bad_labels(labels_fn, match):
    real, real_y = _labelled_set([6, 6, 6], seed=3)
    fake, fake_y = _labelled_set([6, 6, 6], seed=4)
    with pytest.raises(ValueError, match=match):
        classwise_prdc(real, labels_fn(real_y), fake, fake_y, num_classes=3)


def test_bad_shapes_and_arguments():
    real, real_y = _labelled_set([6, 6], seed=3)
    fake, fake_y = _labelled_set([6, 6], seed=4)
    with pytest.raises(ValueError, match="same feature shape"):
        classwise_prdc(real, real_y, np.concatenate([fake, fake], axis=1), fake_y, num_classes=2)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        classwise_prdc(real[:, 0], real_y, fake, fake_y, num_classes=2)
    with pytest.raises(ValueError, match="fake_labels must hold integer class labels"):
        classwise_prdc(real, real_y, fake, fake_y[:, None], num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        classwise_prdc(real, real_y, fake, fake_y, num_classes=0)
    with pytest.raises(ValueError, match="nearest_k must be an integer >= 1"):
        classwise_prdc(real, real_y, fake, fake_y, num_classes=2, nearest_k=0)
