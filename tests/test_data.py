"""Tests for the data sources, the image loaders and the prefetcher (sgm_jax.data)."""

import math
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgm_jax import data
from sgm_jax.data import DataSource, Prefetcher, Split

KEY_BATCH, KEY_AUG = jax.random.PRNGKey(1), jax.random.PRNGKey(2)


def _images(n, size=4, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return Split(x, (np.arange(n) % 7).astype(np.int32))


def _indexed_points(n):
    """Point i is (i, -i) and has label i, so batches show which examples they hold."""
    i = np.arange(n)
    return Split(np.stack([i, -i], 1).astype(np.float32), i.astype(np.int32))


def _source(train, test=None, **kwargs):
    splits = {"train": train, "test": train if test is None else test}
    kwargs.setdefault("batch_key", KEY_BATCH)
    return DataSource(lambda split: splits[split], event_shape=train.x.shape[1:],
                      images=train.x.dtype == np.uint8, **kwargs)


AUGMENTED = dict(aug_key=KEY_AUG, random_flip=True, uniform_dequantization=True, centered=True)


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


# The batching rule -------------------------------------------------------------------------------

def test_a_batch_is_a_pure_function_of_the_keys_and_the_step():
    train = _images(40)
    first, second = _source(train, batch_size=8, **AUGMENTED), _source(train, batch_size=8,
                                                                          **AUGMENTED)
    steps = [7, 0, 12, 3, 7, 5]  # 5 steps per epoch: crosses epochs and goes back
    seen = {s: first.train_batch(s) for s in steps}
    for s in sorted(steps, reverse=True):
        _assert_batches_equal(second.train_batch(s), seen[s])
    assert not np.array_equal(seen[0]["x"], seen[5]["x"])
    other = _source(train, batch_size=8, **{**AUGMENTED, "aug_key": jax.random.PRNGKey(3)})
    np.testing.assert_array_equal(other.train_batch(7)["label"], seen[7]["label"])
    assert not np.array_equal(other.train_batch(7)["x"], seen[7]["x"])


def test_epochs_are_permutations_and_drop_the_remainder():
    n, b = 50, 16  # 3 batches per epoch, 2 examples dropped
    source = _source(_indexed_points(n), batch_size=b)
    assert source.steps_per_epoch == 3 and source.event_shape == (2,)
    epochs = []
    for e in range(3):
        batches = [source.train_batch(3 * e + i) for i in range(3)]
        for batch in batches:
            assert batch["x"].shape == (b, 2) and batch["x"].dtype == np.float32
            assert batch["label"].shape == (b,) and batch["label"].dtype == np.int32
            np.testing.assert_array_equal(batch["x"][:, 0], batch["label"])  # pairs kept
            np.testing.assert_array_equal(batch["x"][:, 1], -batch["label"])
        ids = np.concatenate([batch["label"] for batch in batches])
        assert len(np.unique(ids)) == 3 * b  # each example at most once per epoch
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    reshuffled = _source(_indexed_points(n), batch_size=b, batch_key=jax.random.PRNGKey(9))
    assert not np.array_equal(reshuffled.train_batch(0)["label"], epochs[0][:b])


def test_each_epoch_covers_every_example_when_the_batch_divides_n():
    n, b = 60, 12
    source = _source(_indexed_points(n), batch_size=b)
    for e in range(2):
        ids = np.concatenate([source.train_batch(5 * e + i)["label"] for i in range(5)])
        np.testing.assert_array_equal(np.sort(ids), np.arange(n))


def test_the_epoch_permutation_is_the_documented_one():
    n, b = 50, 16
    source = _source(_indexed_points(n), batch_size=b, batch_key=jax.random.PRNGKey(4))
    for step in (0, 2, 3, 7):
        epoch, block = divmod(step, 3)
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(4), epoch), n))
        np.testing.assert_array_equal(source.train_batch(step)["label"],
                                      perm[block * b:(block + 1) * b])


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_share_the_global_batch_augmentation_included(process_count):
    train = _images(40)
    whole = _source(train, batch_size=8, **AUGMENTED)
    parts = [_source(train, batch_size=8, process_index=p, process_count=process_count,
                     **AUGMENTED) for p in range(process_count)]
    assert all(part.local_batch_size == 8 // process_count for part in parts)
    for step in (0, 4, 5, 11):
        local = [part.train_batch(step) for part in parts]
        assembled = {k: np.concatenate([batch[k] for batch in local]) for k in local[0]}
        _assert_batches_equal(assembled, whole.train_batch(step))


def test_toy_source_reproduces_the_training_rule_bit_for_bit():
    # The rule of sgm_jax.train (seed -> 4 keys; data key, batch key; epoch permutations of
    # fold_in(batch_key, e); batch k = block k mod (N // B)), restated independently.
    seed, name, n, b = 3, "checkerboard", 1000, 96  # 10 batches per epoch, 40 points dropped
    data_key, batch_key = jax.random.split(jax.random.PRNGKey(seed), 4)[:2]
    points = np.asarray(data.make_toy_dataset(name, data_key, n))
    source = data.toy_source(name, num_points=n, data_key=data_key, batch_key=batch_key,
                             batch_size=b)
    np.testing.assert_array_equal(source.points, points)
    assert source.points.dtype == np.float32 and source.num_classes == 0
    np.testing.assert_array_equal(source.labels, np.zeros(n, np.int32))
    for k in (0, 9, 10, 23, 9):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(batch_key, k // 10), n))
        expected = points[perm[(k % 10) * b:(k % 10 + 1) * b]]
        batch = source.train_batch(k)
        assert batch["x"].dtype == np.float32
        np.testing.assert_array_equal(batch["x"], expected)


def test_toy_source_labels_and_test_split():
    source = data.toy_source("moons", num_points=200, data_key=jax.random.PRNGKey(0),
                             batch_key=KEY_BATCH, batch_size=50)
    x, y = data.make_toy_dataset("moons", jax.random.PRNGKey(0), 200, return_labels=True)
    np.testing.assert_array_equal(source.labels, y)
    assert source.num_classes == 2 and source.scaler is source.inverse_scaler
    batch = source.train_batch(2)
    rows = [int(np.flatnonzero((source.points == p).all(1))[0]) for p in batch["x"]]
    np.testing.assert_array_equal(batch["label"], source.labels[rows])
    assert source.num_eval_examples("test") == 200
    evaluated = np.concatenate([e["x"] for e in source.eval_batches(64)])[:200]
    np.testing.assert_array_equal(evaluated, np.asarray(x))  # "test" is the training set


# Augmentation and scaling -------------------------------------------------------------------------

def test_augmentation_of_a_row_follows_the_documented_keys():
    train = _images(16, size=3, channels=2)
    source = _source(train, batch_size=8, aug_key=KEY_AUG, random_flip=True,
                     uniform_dequantization=True)
    step = 6
    batch = source.train_batch(step)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(KEY_BATCH, step // 2), 16))
    images = train.x[perm[(step % 2) * 8:(step % 2 + 1) * 8]]
    for row in range(8):
        key = jax.random.fold_in(jax.random.fold_in(KEY_AUG, step), row)
        flip_key, noise_key = jax.random.split(key)
        image = images[row][:, ::-1] if jax.random.bernoulli(flip_key) else images[row]
        u = np.asarray(jax.random.bits(noise_key, image.shape, jnp.uint16)) / 2.0**16
        np.testing.assert_array_equal(batch["x"][row], ((image + u) / 256).astype(np.float32))


def test_flip_rate_is_one_half():
    # Columns differ, so a flipped row is told apart; 80 steps x 25 rows = 2000 flips.
    n, size = 25, 4
    x = np.broadcast_to((np.arange(size) * 60)[None, None, :, None], (n, size, size, 1))
    train = Split(np.ascontiguousarray(x, np.uint8), np.zeros(n, np.int32))
    source = _source(train, batch_size=n, aug_key=KEY_AUG, random_flip=True)
    unit = data.to_unit_interval(train.x[0])
    flips = 0
    for step in range(80):
        for image in source.train_batch(step)["x"]:
            is_flipped = np.array_equal(image, unit[:, ::-1])
            assert is_flipped or np.array_equal(image, unit)
            flips += is_flipped
    trials = 80 * n
    assert abs(flips - trials / 2) < 4 * math.sqrt(trials / 4)  # 4 binomial standard deviations


def test_dequantised_values_lie_in_their_level():
    train = _images(64, size=4, channels=3, seed=1)
    source = _source(train, batch_size=64, aug_key=KEY_AUG, uniform_dequantization=True)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(KEY_BATCH, 0), 64))
    x = source.train_batch(0)["x"]
    levels = train.x[perm].astype(np.float32)
    u = x * 256 - levels  # exact: x * 256 only shifts the exponent
    assert u.min() >= 0 and u.max() < 1
    np.testing.assert_array_equal(np.floor(x * 256), levels)
    # u ~ U[0, 1): mean 1/2 and variance 1/12 within 5 standard errors of their estimates.
    m = u.size
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / m)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / m)  # Var((u - 1/2)^2) = 1/180


def test_scaler_and_inverse_scaler():
    x = np.array([0.0, 0.25, 1.0], np.float32)
    centre, uncentre = data.get_data_scaler(True), data.get_data_inverse_scaler(True)
    np.testing.assert_array_equal(centre(x), [-1.0, -0.5, 1.0])
    np.testing.assert_array_equal(uncentre(centre(x)), x)
    y = np.random.default_rng(0).uniform(size=1000).astype(np.float32)
    np.testing.assert_allclose(uncentre(centre(y)), y, rtol=0, atol=2.0**-23)  # ulp of 1
    assert centre(y).dtype == np.float32
    assert data.get_data_scaler(False)(y) is y and data.get_data_inverse_scaler(False)(y) is y


def test_centred_batches_without_augmentation_are_the_scaled_levels():
    train = _images(10)
    source = _source(train, batch_size=10, centered=True)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(KEY_BATCH, 0), 10))
    expected = train.x[perm].astype(np.float32) / np.float32(255) * 2 - 1
    np.testing.assert_array_equal(source.train_batch(0)["x"], expected)
    x = source.train_batch(0)["x"]
    assert x.min() >= -1 and x.max() <= 1


# Evaluation batches -------------------------------------------------------------------------------

@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_eval_batches_cover_every_example_once(process_count):
    train, test = _images(40), _images(23, seed=5)
    parts = [_source(train, test, batch_size=8, process_index=p, process_count=process_count,
                     **AUGMENTED) for p in range(process_count)]
    assert parts[0].num_eval_examples() == 23 and parts[0].num_eval_examples("train") == 40
    per_process = [list(part.eval_batches(8)) for part in parts]
    assert all(len(batches) == 3 for batches in per_process)  # ⌈23 / 8⌉ on every process
    # Global batch i is the processes' i-th batches in process order.
    x, labels, mask = (np.concatenate([per_process[p][i][k] for i in range(3)
                                       for p in range(process_count)])
                       for k in ("x", "label", "mask"))
    assert mask.dtype == bool and mask.sum() == 23 and mask[:23].all()
    expected = test.x.astype(np.float32) / np.float32(255) * 2 - 1  # no augmentation
    np.testing.assert_array_equal(x[:23], expected)
    np.testing.assert_array_equal(labels[:23], test.labels)
    np.testing.assert_array_equal(x[23:], -1.0)  # padding: zeros, scaled
    np.testing.assert_array_equal(labels[23:], 0)
    assert all(b["x"].shape == (8 // process_count, 4, 4, 3) for b in per_process[0])


def test_each_split_is_loaded_on_first_use_only():
    calls = []

    def load(split):
        calls.append(split)
        return _images(12)

    source = DataSource(load, event_shape=(4, 4, 3), images=True, batch_size=4,
                        batch_key=KEY_BATCH)
    assert calls == [] and source.event_shape == (4, 4, 3)
    source.train_batch(5)
    source.load()
    assert calls == ["train"]
    list(source.eval_batches(5))
    source.num_eval_examples("test")
    assert calls == ["train", "test"]


def test_a_split_of_another_shape_or_type_is_refused_when_loaded():
    source = _source(_images(12), batch_size=4)
    mismatched = DataSource(lambda split: _images(12, size=8), event_shape=(4, 4, 3),
                            images=True, batch_size=4, batch_key=KEY_BATCH)
    with pytest.raises(ValueError, match=r"uint8 examples of shape \(8, 8, 3\); this source "
                                         r"serves uint8 images of shape \(4, 4, 3\)"):
        mismatched.load()
    points = DataSource(lambda split: _images(12), event_shape=(4, 4, 3), images=False,
                        batch_size=4, batch_key=KEY_BATCH)
    with pytest.raises(ValueError, match="serves float32 points"):
        points.train_batch(0)
    source.load()  # the matching source loads


# Argument checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1; got 0"),
    (dict(batch_size=2.0), "batch_size must be an integer >= 1"),
    (dict(batch_size=False), "batch_size must be an integer >= 1"),
    (dict(batch_size=41), r"at most the number of training examples \(40\); got 41"),
    (dict(batch_size=6, process_count=4, process_index=0), "batch_size=6 is not divisible by "
     r"the number of processes \(4\); allowed: a multiple of 4"),
    (dict(batch_size=8, process_count=2, process_index=2), r"process_index .* \[0, 2\); got 2"),
    (dict(batch_size=8, process_count=0, process_index=0), "process_count must be"),
    (dict(batch_size=8, random_flip=True), "aug_key must be a PRNG key"),
    (dict(batch_size=8, random_flip=1, aug_key=KEY_AUG), "random_flip must be True or False"),
    (dict(batch_size=8, num_classes=-1), "num_classes must be an integer >= 0; got -1"),
])
def test_bad_source_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _source(_images(40), **kwargs).load()


def test_augmentation_is_for_images_only():
    with pytest.raises(ValueError, match="uint8 images only"):
        _source(_indexed_points(10), batch_size=2, centered=True)


def test_bad_split_step_and_eval_batch():
    source = _source(_images(40), batch_size=8, process_index=0, process_count=2)
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\); got 'val'"):
        source.eval_batches(8, "val")
    with pytest.raises(ValueError, match="batch_size=7 is not divisible"):
        source.eval_batches(7)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="step must be an integer >= 0"):
            source.train_batch(bad)


def test_bad_split_contents():
    with pytest.raises(ValueError, match="uint8 .* or float32"):
        Split(np.zeros((3, 2)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        Split(np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"int32 NumPy array of shape \[N\] = \(3,\)"):
        Split(np.zeros((3, 2), np.float32), np.zeros(4, np.int32))


# Image loaders: tfds -----------------------------------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name, image_size, shape", [
    ("cifar10", 32, (32, 32, 3)), ("svhn_cropped", 32, (32, 32, 3)),
    ("celeb_a", 64, (64, 64, 3)), ("cifar10", 16, (16, 16, 3))])
def test_tfds_loaders_under_mock_data(name, image_size, shape):
    with tfds.testing.mock_data(num_examples=6):
        source = data.image_source(
            name, image_size=image_size, batch_size=4, batch_key=KEY_BATCH, aug_key=KEY_AUG,
            random_flip=True, uniform_dequantization=False, centered=True, num_channels=3)
        assert source.points.shape == (6, *shape) and source.points.dtype == np.uint8
        assert source.labels.dtype == np.int32 and source.event_shape == shape
        assert source.num_eval_examples() == 6
    batch = source.train_batch(0)
    assert batch["x"].shape == (4, *shape) and batch["x"].dtype == np.float32
    assert batch["x"].min() >= -1 and batch["x"].max() <= 1
    assert source.num_classes == (0 if name == "celeb_a" else 10)


def test_celeb_a_is_score_sde_crop_and_resize():
    import tensorflow as tf

    with tfds.testing.mock_data(num_examples=5):
        ours = data.load_split("celeb_a", "test", image_size=64)
        chunks = tfds.builder("celeb_a").as_dataset(split="validation", batch_size=5)
        raw = next(iter(tfds.as_numpy(chunks)))["image"]  # (batch_size=-1 aborts under mock)
    assert raw.shape == (5, 218, 178, 3)
    crop = raw[:, 39:179, 19:159].astype(np.float32)  # offset ((218-140)//2, (178-140)//2)
    expected = tf.image.resize(crop, [64, 64], antialias=True).numpy()
    assert ours.x.shape == (5, 64, 64, 3) and ours.x.dtype == np.uint8
    # Both are float32 sums of a few products; they differ by < 1e-3, so after rounding by at
    # most one level, and only at values within 1e-3 of a half-integer.
    diff = ours.x.astype(int) - np.round(expected).astype(int)
    assert np.abs(diff).max() <= 1
    assert np.all(np.abs(np.abs(expected - np.floor(expected)) - 0.5)[diff != 0] < 1e-3)


def test_resize_images_matches_tf_resize_with_antialias():
    import tensorflow as tf

    images = _images(3, size=32, seed=2).x
    ours = data.resize_images(images, 12)
    expected = tf.image.resize(images.astype(np.float32), [12, 12], antialias=True).numpy()
    assert ours.shape == (3, 12, 12, 3) and ours.dtype == np.uint8
    np.testing.assert_allclose(ours, expected, atol=0.5 + 1e-3, rtol=0)


def test_unprepared_data_set_names_the_directory_and_how_to_build_it(tmp_path):
    source = data.image_source("cifar10", image_size=32, batch_size=4, batch_key=KEY_BATCH,
                               aug_key=KEY_AUG, random_flip=False, uniform_dequantization=False,
                               centered=False, data_dir=str(tmp_path))
    assert source.event_shape == (32, 32, 3)  # known without the data
    with pytest.raises(FileNotFoundError) as info:
        source.load()
    message = str(info.value)
    assert "'cifar10'" in message and str(tmp_path) in message
    assert "tfds build cifar10 --data_dir=" in message and "TFDS_DATA_DIR" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="mnist"), r"image data set must be one of \('celeb_a', 'cifar10', 'cifar100', "
     r"'digits', 'imagenet32', 'svhn_cropped'\); got 'mnist'"),
    (dict(image_size=33), "image_size=33 is larger than cifar10 can give; allowed: 1 to 32"),
    (dict(image_size=0), "image_size must be an integer >= 1; got 0"),
    (dict(num_channels=1), "num_channels=1 does not match cifar10, which has 3; allowed: 3"),
    (dict(name="digits", image_size=16, num_channels=3), "num_channels=3 does not match digits"),
])
def test_bad_image_requests(kwargs, message):
    args = dict(name="cifar10", image_size=32, batch_size=4, batch_key=KEY_BATCH,
                aug_key=KEY_AUG, random_flip=False, uniform_dequantization=False, centered=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        data.image_source(args.pop("name"), **args)


# Image loaders: digits ---------------------------------------------------------------------------

def _bilinear_upsample_2x(a):
    """Half-pixel-centre bilinear 2x upsampling along axis 1 and 2, edges clamped: output 2i is
    ¾·a[i] + ¼·a[i-1], output 2i+1 is ¾·a[i] + ¼·a[i+1]."""
    for axis in (1, 2):
        prev = np.concatenate([np.take(a, [0], axis), np.take(a, range(a.shape[axis] - 1), axis)],
                              axis)
        nxt = np.concatenate([np.take(a, range(1, a.shape[axis]), axis),
                              np.take(a, [-1], axis)], axis)
        a = np.stack([0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt], axis + 1)
        a = a.reshape(a.shape[:axis] + (-1,) + a.shape[axis + 2:])
    return a


def test_digits_split_shapes_values_and_determinism():
    from sklearn.datasets import load_digits

    train, test = (data.load_split("digits", s, image_size=16) for s in ("train", "test"))
    assert train.x.shape == (1438, 16, 16, 1) and test.x.shape == (359, 16, 16, 1)
    assert train.x.dtype == test.x.dtype == np.uint8
    assert train.x.min() == 0 and train.x.max() == 255
    for split in (train, test):
        np.testing.assert_array_equal(np.unique(split.labels), np.arange(10))
    digits = load_digits()
    is_test = np.arange(1797) % 5 == 4
    np.testing.assert_array_equal(test.labels, digits.target[is_test])
    np.testing.assert_array_equal(train.labels, digits.target[~is_test])
    expected = _bilinear_upsample_2x(digits.images[is_test, :, :, None] * 255.0 / 16.0)
    assert np.abs(test.x - expected).max() <= 0.5 + 1e-3  # rounded to the nearest level
    again = data.load_split("digits", "test", image_size=16)
    np.testing.assert_array_equal(again.x, test.x)
    native = data.load_split("digits", "test", image_size=8)
    np.testing.assert_array_equal(native.x[..., 0],
                                  np.round(digits.images[is_test] * 255.0 / 16.0))


def test_digits_source():
    source = data.image_source("digits", image_size=16, batch_size=128, batch_key=KEY_BATCH,
                               aug_key=KEY_AUG, random_flip=False, uniform_dequantization=True,
                               centered=False, num_channels=1)
    assert source.event_shape == (16, 16, 1) and source.num_classes == 10
    assert source.steps_per_epoch == 1438 // 128 and source.num_eval_examples() == 359
    x = source.train_batch(0)["x"]
    assert x.shape == (128, 16, 16, 1) and x.min() >= 0 and x.max() < 1


# Prefetcher -------------------------------------------------------------------------------------

def _put(batch):
    return jax.tree.map(jnp.asarray, batch)


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_prefetcher_yields_the_direct_batches_in_order(steps_per_call):
    source = _source(_images(40), batch_size=8, **AUGMENTED)
    with Prefetcher(source, 4, steps_per_call, _put, depth=2) as batches:
        got = [next(batches) for _ in range(4)]
    assert [k for k, _ in got] == [4 + steps_per_call * i for i in range(4)]
    for k, batch in got:
        assert isinstance(batch["x"], jax.Array)
        direct = [source.train_batch(k + i) for i in range(steps_per_call)]
        for name in ("x", "label"):
            expected = (direct[0][name] if steps_per_call == 1
                        else np.stack([d[name] for d in direct]))
            np.testing.assert_array_equal(np.asarray(batch[name]), expected)


class _FailingSource:
    def __init__(self, fail_at):
        self.fail_at = fail_at

    def train_batch(self, step):
        if step >= self.fail_at:
            raise RuntimeError(f"no batch {step}")
        return {"x": np.full((2,), step, np.float32)}


def test_prefetcher_reraises_the_source_error_in_order():
    with Prefetcher(_FailingSource(3), 0, 1, _put) as batches:
        assert [int(next(batches)[0]) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(RuntimeError, match="no batch 3"):
            next(batches)
        with pytest.raises(StopIteration):
            next(batches)


def test_prefetcher_reraises_an_error_of_put():
    def put(batch):
        raise ValueError("cannot put")

    with Prefetcher(_FailingSource(100), 0, 2, put) as batches:
        with pytest.raises(ValueError, match="cannot put"):
            next(batches)


def test_prefetcher_closes_early_without_hanging():
    produced = []

    def slow_put(batch):
        produced.append(batch)
        time.sleep(0.01)
        return batch

    before = threading.active_count()
    start = time.monotonic()
    with Prefetcher(_FailingSource(10**9), 0, 1, slow_put, depth=1) as batches:
        assert next(batches)[0] == 0
        time.sleep(0.1)  # the producer is now blocked on a full queue
    assert time.monotonic() - start < 5
    assert len(produced) <= 4  # one consumed, one queued, one waiting to be queued
    assert threading.active_count() == before
    with pytest.raises(StopIteration):
        next(batches)


@pytest.mark.parametrize("kwargs, message", [
    (dict(first_step=-1), "first_step must be an integer >= 0; got -1"),
    (dict(steps_per_call=0), "steps_per_call must be an integer >= 1; got 0"),
    (dict(depth=0), "depth must be an integer >= 1; got 0"),
])
def test_prefetcher_bad_arguments(kwargs, message):
    args = {**dict(first_step=0, steps_per_call=1, depth=2), **kwargs}
    with pytest.raises(ValueError, match=message):
        Prefetcher(_FailingSource(1), put=_put, **args)
