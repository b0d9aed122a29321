"""``toy_source(..., classes=...)``: the rows of some classes of a labelled toy training set."""

import jax
import numpy as np
import pytest

from sgm_jax import data

KEY_DATA, KEY_BATCH = jax.random.split(jax.random.PRNGKey(5))


def _moons(n=300, b=40, **kwargs):
    return data.toy_source("moons", num_points=n, data_key=KEY_DATA, batch_key=KEY_BATCH,
                           batch_size=b, **kwargs)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_keeps_its_rows_in_order_and_batches_over_them(label):
    n, b = 301, 40  # 150 upper (label 0) and 151 lower (label 1) points
    x, y = (np.asarray(a) for a in data.make_toy_dataset("moons", KEY_DATA, n,
                                                          return_labels=True))
    rows = np.flatnonzero(y == label)
    source = _moons(n, b, classes=(label,))
    np.testing.assert_array_equal(source.points, x[rows])
    np.testing.assert_array_equal(source.labels, np.full(len(rows), label, np.int32))
    assert len(rows) == (150 if label == 0 else 151)
    assert source.num_classes == 2 and source.steps_per_epoch == len(rows) // b
    per_epoch = len(rows) // b
    for k in (0, 2, per_epoch, 2 * per_epoch + 1):  # the documented batch rule over the kept rows
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(KEY_BATCH, k // per_epoch),
                                                 len(rows)))
        block = perm[(k % per_epoch) * b:(k % per_epoch + 1) * b]
        batch = source.train_batch(k)
        np.testing.assert_array_equal(batch["x"], x[rows][block])
        np.testing.assert_array_equal(batch["label"], np.full(b, label, np.int32))


def test_every_class_is_the_unfiltered_source():
    whole, both = _moons(), _moons(classes=(1, 0))
    np.testing.assert_array_equal(both.points, whole.points)
    np.testing.assert_array_equal(both.labels, whole.labels)
    np.testing.assert_array_equal(both.train_batch(3)["x"], whole.train_batch(3)["x"])


@pytest.mark.parametrize("classes", [(), (2,), (-1,), (0, 2), (True,), (0.0,), 0, "0"])
def test_bad_classes_name_the_allowed_labels(classes):
    with pytest.raises(ValueError, match=r"classes must be a non-empty tuple of labels of "
                                         r"'moons', allowed: \[0, 1\]; got"):
        _moons(classes=classes)


def test_classes_need_a_labelled_data_set_and_enough_rows():
    with pytest.raises(ValueError, match=r"allowed: none \(unlabelled data set\); got \(0,\)"):
        data.toy_source("checkerboard", num_points=100, data_key=KEY_DATA, batch_key=KEY_BATCH,
                        batch_size=10, classes=(0,))
    with pytest.raises(ValueError, match=r"at most the number of training examples \(150\); "
                                         r"got 151"):
        _moons(300, 151, classes=(0,)).load()
