"""A small image classifier whose penultimate activations are a feature space for FID / KID /
PRDC where the FID Inception network does not apply (the 16×16 grey digits of the offline
demonstration: Inception needs its weight file and 299×299 RGB inputs).

Distances in this space are not comparable with Inception FIDs: the numbers it gives measure
sample quality relative to other models evaluated with the same classifier (same weights, same
data), nothing more. The classifier is trained by cross-entropy on the training split
(``train_feature_classifier``) with a fixed key, so the feature space is a deterministic function
of the data set and the key.

The network: two stages of [3×3 conv, GroupNorm, swish] ×2 followed by 2×2 average pooling, a
global average, a ``feature_dim`` dense layer with swish (the features), and a dense layer to
the class logits. GroupNorm is per example, so the features of an image do not depend on the
rest of its batch.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgm_jax._validation import check_positive_int

Array = jax.Array


class FeatureClassifier(nn.Module):
    """Images [B, H, W, C] in [0, 1] -> (features [B, feature_dim], logits [B, num_classes])."""

    num_classes: int
    width: int = 32
    feature_dim: int = 64

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        h = 2.0 * x - 1.0
        for stage, channels in enumerate((self.width, 2 * self.width)):
            for layer in range(2):
                h = nn.Conv(channels, (3, 3), name=f"conv_{stage}_{layer}")(h)
                h = nn.swish(nn.GroupNorm(num_groups=8, name=f"norm_{stage}_{layer}")(h))
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        features = nn.swish(nn.Dense(self.feature_dim, name="features")(jnp.mean(h, axis=(1, 2))))
        return features, nn.Dense(self.num_classes, name="logits")(features)


def _check_images(name: str, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 images [N, H, W, C]; got dtype {images.dtype} and "
                         f"shape {images.shape}.")
    return images


def train_feature_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, key: Array,
                             *, steps: int = 600, batch_size: int = 128, lr: float = 2e-3,
                             width: int = 32, feature_dim: int = 64
                             ) -> tuple[FeatureClassifier, dict]:
    """Trains a :class:`FeatureClassifier` on uint8 ``images`` [N, H, W, C] and int ``labels``
    [N] by cross-entropy (Adam, cosine decay of ``lr``, random minibatches drawn with ``key``);
    returns the module and its parameters."""
    images = _check_images("images", images)
    labels = np.asarray(labels)
    if labels.shape != images.shape[:1] or not 0 <= labels.min() <= labels.max() < num_classes:
        raise ValueError(f"labels must be [N] = [{images.shape[0]}] integers in [0, {num_classes});"
                         f" got shape {labels.shape}, range [{labels.min()}, {labels.max()}].")
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    module = FeatureClassifier(num_classes, width, feature_dim)
    k_init, k_batches = jax.random.split(key)
    x_all = jnp.asarray(images, jnp.float32) / 255.0
    y_all = jnp.asarray(labels, jnp.int32)
    params = module.init(k_init, x_all[:1])
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss(params, x, y):
        logits = module.apply(params, x)[1]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @jax.jit
    def step(carry, key):
        params, opt_state = carry
        rows = jax.random.randint(key, (batch_size,), 0, x_all.shape[0])
        grads = jax.grad(loss)(params, x_all[rows], y_all[rows])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    carry = (params, optimizer.init(params))
    carry, _ = jax.lax.scan(step, carry, jax.random.split(k_batches, steps))
    return module, carry[0]


def classifier_features(module: FeatureClassifier, params: dict, batch_size: int = 512
                        ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``fn(images uint8 [N, H, W, C]) -> (features [N, feature_dim], logits [N, classes])`` as
    float64 NumPy arrays, in batches of ``batch_size``."""
    check_positive_int("batch_size", batch_size)
    apply = jax.jit(lambda x: module.apply(params, x))

    def fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = _check_images("images", images)
        parts = [apply(jnp.asarray(images[i:i + batch_size], jnp.float32) / 255.0)
                 for i in range(0, images.shape[0], batch_size)]
        return tuple(np.concatenate([np.asarray(p[j], np.float64) for p in parts])
                     for j in range(2))

    return fn
