"""sgm_jax.metrics.cas on two well-separated Gaussian blobs: right, swapped and uninformative
labels, determinism, event shapes and input checks."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from sgm_jax.metrics import cas
from sgm_jax.models.classifiers import TorchBatchNorm

NUM_TEST = 1000
SETTINGS = dict(steps=200, batch_size=64, lr=1e-2)  # shared shapes: one compilation


class TinyClassifier(nn.Module):
    """A one-hidden-layer MLP with the library's classifier call ``(x, cond) -> logits``."""

    num_classes: int = 2
    hidden: int = 16

    @nn.compact
    def __call__(self, x, cond):
        del cond  # unconditional
        h = nn.swish(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(h)


class BatchNormClassifier(nn.Module):
    """TinyClassifier with a BatchNorm after its hidden layer: a network with a model state."""

    num_classes: int = 2
    hidden: int = 16

    @nn.compact
    def __call__(self, x, cond, train: bool = False):
        del cond  # unconditional
        h = TorchBatchNorm()(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)), train)
        return nn.Dense(self.num_classes)(nn.swish(h))


def blobs(labels, seed):
    """Points of class 0 around (−3, 0) and of class 1 around (3, 0), unit variance: the Bayes
    classifier errs with probability Φ(−3) = 0.13 %."""
    rng = np.random.default_rng(seed)
    centres = np.where(labels[:, None] == 0, -3.0, 3.0) * np.array([1.0, 0.0])
    return (rng.normal(size=(labels.size, 2)) + centres).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train_y = (np.arange(512) % 2).astype(np.int32)
    test_y = rng.integers(0, 2, NUM_TEST).astype(np.int32)  # i.i.d. fair classes
    return blobs(train_y, 1), train_y, blobs(test_y, 2), test_y


def test_right_labels_score_high_and_swapped_labels_score_low(data):
    train_x, train_y, test_x, test_y = data
    right = cas(TinyClassifier(), train_x, train_y, test_x, test_y, key=jax.random.key(0),
                **SETTINGS)
    assert right["cas"] >= 0.95 and right["train_accuracy"] >= 0.95
    assert right["steps"] == SETTINGS["steps"]
    # The same samples generated "for" the other class: it learns the mirror image.
    swapped = cas(TinyClassifier(), train_x, 1 - train_y, test_x, test_y, key=jax.random.key(0),
                  **SETTINGS)
    assert swapped["cas"] <= 0.05 and swapped["train_accuracy"] >= 0.95


def test_labels_independent_of_the_samples_score_chance(data):
    """Labels drawn independently of the samples, 3/4 of them class 0 (a generator that ignores
    the class it is asked for): the classifier learns p(0 | x) ≈ 3/4 everywhere and predicts
    class 0, so its accuracy is the fraction of class 0 in the test set, Binomial(T, 1/2) / T
    for i.i.d. fair test classes: mean 1/2, std 1/(2√T) = 0.016 for T = 1000. (With fair random
    labels the classifier predicts noise whose argmax may follow the blobs, so a single score
    ranges widely around its expectation 1/2.)"""
    train_x, _, test_x, test_y = data
    labels = (np.random.default_rng(3).random(train_x.shape[0]) < 0.25).astype(np.int32)
    got = cas(TinyClassifier(), train_x, labels, test_x, test_y, key=jax.random.key(0),
              **SETTINGS)
    assert abs(got["cas"] - 0.5) <= 4 * 0.5 / np.sqrt(NUM_TEST)
    assert abs(got["cas"] - np.mean(test_y == 0)) <= 0.02  # class 0 predicted almost everywhere


def test_deterministic_given_the_key(data):
    train_x, _, test_x, test_y = data
    labels = np.random.default_rng(4).integers(0, 2, train_x.shape[0]).astype(np.int32)
    run = lambda seed: cas(TinyClassifier(), train_x, labels, test_x, test_y,
                           key=jax.random.key(seed), **SETTINGS)
    first = run(0)
    assert run(0) == first
    assert run(1) != first  # the key matters (initialisation and minibatches)


def test_any_event_shape(data):
    """Points reshaped to [N, 1, 2, 1] images give bit-identical results (the MLP flattens)."""
    train_x, train_y, test_x, test_y = data
    settings = dict(key=jax.random.key(5), eval_batch_size=300, **SETTINGS)
    flat = cas(TinyClassifier(), train_x, train_y, test_x, test_y, **settings)
    images = cas(TinyClassifier(), train_x.reshape(-1, 1, 2, 1), train_y,
                 test_x.reshape(-1, 1, 2, 1), test_y, **settings)
    assert images == flat


def test_a_batch_norm_network_trains_on_batch_statistics_and_tests_on_running_ones(data):
    """Inputs far from the BatchNorm's initial running statistics (×50, +200): trained in
    training mode with its running statistics kept, the network scores as the plain one, and
    its accuracies do not depend on how the test set is batched or padded (evaluation mode).
    Catches running statistics that are not carried between steps (testing with the initial
    ones fails) and testing with batch statistics (the batching changes the result)."""
    train_x, train_y, test_x, test_y = data
    shift = lambda x: 50.0 * x + 200.0  # noqa: E731
    run = lambda eval_batch_size: cas(  # noqa: E731
        BatchNormClassifier(), shift(train_x), train_y, shift(test_x), test_y,
        key=jax.random.key(0), eval_batch_size=eval_batch_size, **SETTINGS)
    got = run(7)
    assert got["cas"] >= 0.95 and got["train_accuracy"] >= 0.95
    assert run(NUM_TEST) == got


@pytest.mark.parametrize("change,match", [
    (dict(train_images=np.zeros((8, 2), np.uint8)), "train_images must be model-space floating"),
    (dict(test_images=np.zeros((8, 3), np.float32)), "same event shape"),
    (dict(test_images=np.full((8, 2), np.nan, np.float32)), "test_images must hold only finite"),
    (dict(train_images=np.zeros((8,), np.float32)), r"train_images must have shape \[N, \*event\]"),
    (dict(train_labels=np.full(8, 2, np.int32)),
     r"train_labels must lie in \[0, 2\) \(the network's 2 logits\); got values in \[2, 2\]"),
    (dict(test_labels=np.zeros(8, np.float32)), "test_labels must hold integer class labels"),
    (dict(test_labels=np.zeros(7, np.int32)),
     r"test_labels must hold integer class labels of shape \[8\]"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(batch_size=True), "batch_size must be an integer >= 1"),
    (dict(eval_batch_size=2.0), "eval_batch_size must be an integer >= 1"),
    (dict(lr=0.0), "lr must be finite and > 0"),
    (dict(lr="fast"), "lr must be a number > 0"),
])
def test_bad_inputs(change, match):
    args = dict(train_images=np.zeros((8, 2), np.float32), train_labels=np.zeros(8, np.int32),
                test_images=np.zeros((8, 2), np.float32), test_labels=np.zeros(8, np.int32),
                key=jax.random.key(0), steps=1, batch_size=4)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        cas(TinyClassifier(), **args)


def test_network_must_return_logits():
    class Flat(nn.Module):
        @nn.compact
        def __call__(self, x, cond):
            return nn.Dense(1)(x)[:, 0]

    x = np.zeros((8, 2), np.float32)
    with pytest.raises(ValueError, match=r"must return logits of shape \[B, num_classes\]"):
        cas(Flat(), x, np.zeros(8, np.int32), x, np.zeros(8, np.int32), key=jax.random.key(0),
            steps=1, batch_size=4)
