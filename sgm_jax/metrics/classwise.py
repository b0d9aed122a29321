"""Class-wise precision, recall, density and coverage (the "(CW) P / R / D / C" rows of DLSM
poster Table 1).

For a class-conditional generator, the unconditioned :func:`~sgm_jax.metrics.prdc` of all real
against all generated features cannot see whether a sample lies in the region of the class it
was generated *for*: a generator that draws perfect images of the wrong class scores perfectly.
The class-wise metrics compare, for every class c, the real examples of class c with the samples
generated for class c, and average each metric over the classes (each class weighs 1/C,
whatever its size):

    CW-metric = 1/C Σ_c metric(real features of class c, fake features generated for class c).

This is the official DLSM evaluation in ``--mode=class`` (``run_lib_evaluation.py``,
``evaluate_prdc``): per class, Naeem et al.'s ``compute_prdc`` with k = 3 on Inception pool_3
features of the training images of the class, against the samples generated for that class
truncated to the number of those real images (CIFAR-10: 5100 samples per class, 5000 real),
the same truncation its ``--mode=full`` applies to the whole sample set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import check_class_labels, check_positive_int
from sgm_jax.metrics.prdc import prdc

Array = jax.Array

__all__ = ["classwise_prdc"]

_METRICS = ("precision", "recall", "density", "coverage")


def _check_features(name: str, features) -> Array:
    features = jnp.asarray(features)
    if features.ndim < 2:
        raise ValueError(f"{name} must have shape [num_points, *feature_shape] (at least 2 "
                         f"dimensions); got shape {features.shape}.")
    return features


def classwise_prdc(real_features, real_labels, fake_features, fake_labels, *, num_classes: int,
                   nearest_k: int = 3, chunk_size: int | None = None) -> dict:
    """Precision, recall, density and coverage per class, and their means over the classes.

    For every class c: the real feature vectors labelled c, against the fake feature vectors
    generated for class c, the latter truncated to the first n_c (in the order of
    ``fake_features``) when there are more fakes than the n_c reals — as the official DLSM code
    does per class in its class-wise mode (module docstring); each pair goes to
    :func:`~sgm_jax.metrics.prdc` (open balls, as Naeem et al.'s package).

    Args:
      real_features: [N, *feature_shape] real feature vectors (e.g. Inception pool_3 [N, 2048]).
      real_labels: [N] integer classes of the real vectors, in [0, num_classes).
      fake_features: [M, *feature_shape] generated feature vectors, the same feature shape.
      fake_labels: [M] integer classes the fakes were generated for, in [0, num_classes).
      num_classes: the number of classes C; every class must have at least nearest_k + 1 real
        and nearest_k + 1 fake examples.
      nearest_k: k of the k-NN radii (3 in the DLSM evaluation).
      chunk_size: tile size passed to :func:`~sgm_jax.metrics.prdc`.
    Returns:
      ``{"precision", "recall", "density", "coverage"}``: the means over the C classes as
      floats, and ``"per_class"``: ``{name: [C floats]}`` with the value of every class.
    Raises:
      ValueError: on feature arrays that are not batched or differ in feature shape, labels of
        the wrong shape, dtype or range, a bad ``num_classes`` / ``nearest_k``, or a class with
        fewer than nearest_k + 1 real or fake examples (naming the class and its counts).
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("nearest_k", nearest_k)
    real = _check_features("real_features", real_features)
    fake = _check_features("fake_features", fake_features)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError("real_features and fake_features must have the same feature shape; got "
                         f"{real.shape[1:]} and {fake.shape[1:]}.")
    bound = f"num_classes = {num_classes}"
    real_labels = check_class_labels("real_labels", real_labels, real.shape[0], num_classes, bound)
    fake_labels = check_class_labels("fake_labels", fake_labels, fake.shape[0], num_classes, bound)
    real_counts = np.bincount(real_labels, minlength=num_classes)
    fake_counts = np.bincount(fake_labels, minlength=num_classes)
    for c in range(num_classes):
        if min(real_counts[c], fake_counts[c]) < nearest_k + 1:
            raise ValueError(
                f"class {c} has {real_counts[c]} real and {fake_counts[c]} fake examples; "
                f"class-wise PRDC with nearest_k={nearest_k} needs at least nearest_k + 1 = "
                f"{nearest_k + 1} of each in every class.")

    per_class = {name: [] for name in _METRICS}
    for c in range(num_classes):
        real_c = real[np.flatnonzero(real_labels == c)]
        fake_c = fake[np.flatnonzero(fake_labels == c)[:real_counts[c]]]
        values = prdc(real_c, fake_c, nearest_k, chunk_size=chunk_size)
        for name in _METRICS:
            per_class[name].append(float(values[name]))
    means = {name: float(np.mean(per_class[name])) for name in _METRICS}
    return {**means, "per_class": per_class}
