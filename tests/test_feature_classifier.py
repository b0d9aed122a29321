"""The digits feature classifier: it learns the digits (so its features separate classes), its
features do not depend on the batch, and bad input is refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sgm_jax.data.images import load_split
from sgm_jax.metrics import fid
from sgm_jax.metrics.feature_classifier import classifier_features, train_feature_classifier


@pytest.fixture(scope="module")
def digits():
    train = load_split("digits", "train", image_size=8)
    test = load_split("digits", "test", image_size=8)
    module, params = train_feature_classifier(train.x, train.labels, 10, jax.random.PRNGKey(0))
    return train, test, classifier_features(module, params, batch_size=100)


def test_classifier_learns_the_digits(digits):
    """Held-out accuracy on the native 8×8 digits: ≥ 97 % (98.3 % with seed 0; chance is 10 %),
    the accuracy the digits measure asks of its judge (experiments/digits_measure.py)."""
    _, test, features = digits
    logits = features(test.x)[1]
    assert np.mean(np.argmax(logits, -1) == test.labels) >= 0.97


def test_features_do_not_depend_on_the_batch(digits):
    _, test, features = digits
    whole = features(test.x[:37])[0]
    alone = features(test.x[5:6])[0]
    np.testing.assert_allclose(alone[0], whole[5], rtol=1e-5, atol=1e-6)


def test_fid_separates_real_from_shuffled_pixels(digits):
    """Train vs test digits are close in this space; pixel-shuffled digits are far."""
    train, test, features = digits
    rng = np.random.default_rng(0)
    shuffled = test.x.reshape(len(test.x), -1)[:, rng.permutation(64)].reshape(test.x.shape)
    real = fid(features(train.x)[0], features(test.x)[0])
    fake = fid(features(train.x)[0], features(shuffled)[0])
    assert fake > 10 * real


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="uint8 images"):
        train_feature_classifier(np.zeros((4, 16, 16, 1), np.float32), np.zeros(4), 10,
                                 jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="labels must be"):
        train_feature_classifier(np.zeros((4, 16, 16, 1), np.uint8), np.full(4, 10), 10,
                                 jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="input_noise must be a number >= 0; got -0.1"):
        train_feature_classifier(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, int), 10,
                                 jax.random.PRNGKey(0), input_noise=-0.1)


@pytest.mark.slow
def test_input_noise_raises_the_held_out_accuracy():
    """The training noise is applied and helps: with seed 2 the same network reaches 98.6 % on
    the held-out 8×8 digits with it and 96.7 % without it (seeds 0–3: 98.3–98.6 % against
    96.7–97.2 %, module docstring of feature_classifier)."""
    train = load_split("digits", "train", image_size=8)
    test = load_split("digits", "test", image_size=8)
    accuracy = {}
    for noise in (0.0, 0.2):
        module, params = train_feature_classifier(train.x, train.labels, 10,
                                                  jax.random.PRNGKey(2), input_noise=noise)
        logits = classifier_features(module, params)(test.x)[1]
        accuracy[noise] = np.mean(np.argmax(logits, -1) == test.labels)
    assert accuracy[0.2] >= 0.97 and accuracy[0.2] - accuracy[0.0] >= 0.01
