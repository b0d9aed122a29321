"""Toy 2-D data: the generators of the official codes and the toy data source.

The toy generators follow the official QCSGM 2-D code (chen-hao-chao/qcsbm, ``2d_examples/
toy_datasets/``) and the DLSM toy code (chen-hao-chao/dlsm-toy, inter-twinning moons); see
``shared/reference/official_code_facts.md`` §1b and §2a. They are pure JAX functions
``fn(key, n) -> x`` with ``x`` of shape ``[n, 2]`` and dtype float32 (``moons`` also returns
labels), deterministic given the key and jitted with ``n`` static (one compilation per ``n``).
The official code draws from an unseeded ``np.random``; here every draw comes from the key.
:func:`toy_source` serves a fixed training set of them through
:class:`~sgm_jax.data.source.DataSource`.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.data.source import DataSource, Split
from sgm_jax.losses import parzen_score

Array = jax.Array

#: Size of the fixed training set materialised by the official QCSGM toy code.
NUM_TOY_POINTS = 50000

_S = 1.0 / math.sqrt(2.0)
#: Means of the 8-Gaussians modes: 8/√2 · {(±1, 0), (0, ±1), (±1/√2, ±1/√2)} (official order).
EIGHT_GAUSSIANS_MEANS = tuple(
    (8.0 * _S * a, 8.0 * _S * b)
    for a, b in [(1, 0), (-1, 0), (0, 1), (0, -1), (_S, _S), (-_S, _S), (_S, -_S), (-_S, -_S)]
)
#: Per-coordinate standard deviation of each 8-Gaussians mode, 1/√2.
EIGHT_GAUSSIANS_STD = _S


@functools.partial(jax.jit, static_argnums=1)
def eight_gaussians(key: Array, n: int) -> Array:
    """Mixture of 8 Gaussians (official ``gaussian_8``).

    Centres c ∈ 8·{(±1, 0), (0, ±1), (±1/√2, ±1/√2)}, chosen uniformly; x = (z + c)/√2 with
    z ~ N(0, I). The modes therefore sit on a circle of radius 8/√2 ≈ 5.66 with per-coordinate
    std 1/√2 ≈ 0.707.
    """
    check_positive_int("n", n)
    key_centre, key_noise = jax.random.split(key)
    means = jnp.asarray(EIGHT_GAUSSIANS_MEANS)
    z = jax.random.normal(key_noise, (n, 2), jnp.float32)
    return means[jax.random.randint(key_centre, (n,), 0, 8)] + EIGHT_GAUSSIANS_STD * z


def eight_gaussians_score(x: Array, sigma: Array | float) -> Array:
    """Exact score of the 8-Gaussians law convolved with N(0, σ²I), i.e. of x + σz.

    Each mode becomes N(μ_k, v I) with v = ½ + σ²; an equal-weight mixture of such modes is the
    Parzen density of the 8 means at bandwidth √v, so this is ``losses.parzen_score`` there.
    ``x`` is ``[B, 2]``, ``sigma`` a scalar or ``[B]``.
    """
    means = jnp.asarray(EIGHT_GAUSSIANS_MEANS, x.dtype)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
    return parzen_score(x, means, jnp.sqrt(EIGHT_GAUSSIANS_STD**2 + sigma**2))


def spiral_arms(key: Array, n: int) -> Array:
    """The two spiral arms of ``spirals`` in generation order: the first ⌈n/2⌉ rows are the arm
    d, the rest −d (for odd ``n`` the last −d point is dropped)."""
    check_positive_int("n", n)
    m = (n + 1) // 2
    key_angle, key_jitter = jax.random.split(key)
    a = jnp.sqrt(jax.random.uniform(key_angle, (m,), jnp.float32)) * (3.0 * jnp.pi)
    jitter = 0.5 * jax.random.uniform(key_jitter, (m, 2), jnp.float32)
    d = jnp.stack([-jnp.cos(a) * a, jnp.sin(a) * a], axis=1) + jitter
    return (jnp.concatenate([d, -d], axis=0) * (2.3 / 3.0))[:n]


@functools.partial(jax.jit, static_argnums=1)
def spirals(key: Array, n: int) -> Array:
    """Two interleaved spirals (official ``spiral_2``), rows in random order.

    With independent U, U′, U″ ~ U(0, 1): angle a = √U·3π (540°),
    d = (−a·cos a + 0.5·U′, a·sin a + 0.5·U″); the points are [d; −d]·2.3/3 (``spiral_arms``),
    shuffled, so that any prefix of the set is a sample of both arms — as the official tfds
    builder's set, which tfds shuffles when it writes the records.
    """
    key_arms, key_order = jax.random.split(key)
    return jax.random.permutation(key_order, spiral_arms(key_arms, n))


@functools.partial(jax.jit, static_argnums=1)
def checkerboard(key: Array, n: int) -> Array:
    """Checkerboard on [−6, 6]² (official ``checkerboard``).

    x1 ~ U(−2, 2); x2 = U(0, 1) − 2·Bernoulli(½) + (⌊x1⌋ mod 2); the points are (x1, x2)·3.
    Mass 1/8 lies uniformly on each of the 8 cells of side 3 whose indices (⌊x1/3⌋, ⌊x2/3⌋)
    have an even sum.
    """
    check_positive_int("n", n)
    key_x1, key_x2, key_bit = jax.random.split(key, 3)
    x1 = jax.random.uniform(key_x1, (n,), jnp.float32, -2.0, 2.0)
    bit = jax.random.bernoulli(key_bit, 0.5, (n,)).astype(jnp.float32)
    x2 = jax.random.uniform(key_x2, (n,), jnp.float32) - 2.0 * bit + jnp.mod(jnp.floor(x1), 2.0)
    return jnp.stack([x1, x2], axis=1) * 3.0


@functools.partial(jax.jit, static_argnums=1)
def moons(key: Array, n: int) -> tuple[Array, Array]:
    """Inter-twinning moons without noise (DLSM toy), returns ``(x, labels)``.

    The construction of sklearn's ``make_moons(n, noise=0)``: ⌊n/2⌋ points (cos t, sin t) on the
    upper moon (label 0) and n − ⌊n/2⌋ points (1 − cos t, ½ − sin t) on the lower moon (label 1),
    t evenly spaced on [0, π] per moon; then centred by the sample mean, scaled by 20, and shuffled
    by a permutation drawn from ``key`` (the points are fixed; only their order is random). The
    DLSM toy uses n = 10000. Labels are int32.
    """
    check_positive_int("n", n)
    n_upper = n // 2
    t_upper = jnp.linspace(0.0, jnp.pi, n_upper, dtype=jnp.float32)
    t_lower = jnp.linspace(0.0, jnp.pi, n - n_upper, dtype=jnp.float32)
    upper = jnp.stack([jnp.cos(t_upper), jnp.sin(t_upper)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t_lower), 0.5 - jnp.sin(t_lower)], axis=1)
    x = jnp.concatenate([upper, lower], axis=0)
    x = 20.0 * (x - x.mean(axis=0))
    labels = (jnp.arange(n) >= n_upper).astype(jnp.int32)
    perm = jax.random.permutation(key, n)
    return x[perm], labels[perm]


TOY_DATASETS: dict[str, Callable[[Array, int], Array | tuple[Array, Array]]] = {
    "8gaussians": eight_gaussians,
    "spirals": spirals,
    "checkerboard": checkerboard,
    "moons": moons,
}

#: Number of classes of each toy data set (0: unlabelled, its labels are all 0).
TOY_NUM_CLASSES: dict[str, int] = {"8gaussians": 0, "spirals": 0, "checkerboard": 0, "moons": 2}


def get_toy_dataset(name: str) -> Callable[[Array, int], Array | tuple[Array, Array]]:
    """Returns the generator registered under ``name`` in ``TOY_DATASETS``."""
    check_choice("toy data set", name, sorted(TOY_DATASETS))
    return TOY_DATASETS[name]


def make_toy_dataset(
    name: str, key: Array, num_points: int = NUM_TOY_POINTS, *, return_labels: bool = False
) -> Array | tuple[Array, Array]:
    """The fixed toy training set: ``num_points`` points of ``name``, shape ``[num_points, 2]``.

    The official QCSGM code materialises 50,000 points once and trains on them for all
    iterations. With ``return_labels=True`` returns ``(x, labels)``: the class labels for
    "moons", zeros (int32) for the unlabelled sets (as in the official tfds builders).
    """
    generate = get_toy_dataset(name)
    check_positive_int("num_points", num_points)
    out = generate(key, num_points)
    x, labels = out if isinstance(out, tuple) else (out, jnp.zeros(num_points, jnp.int32))
    return (x, labels) if return_labels else x


def toy_source(
    name: str,
    *,
    num_points: int,
    data_key: Array,
    batch_key: Array,
    batch_size: int,
    classes: tuple[int, ...] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> DataSource:
    """The toy data source: the fixed training set ``make_toy_dataset(name, data_key, num_points)``
    (with its labels) served in batches drawn with ``batch_key`` (see :class:`DataSource`).

    The points are float32 and already in model space (no scaler, no augmentation). Its "test"
    split is the training set itself: the toy evaluation protocol takes its points from it.
    ``num_classes`` is 2 for "moons" and 0 for the unlabelled sets.

    ``classes`` (labelled sets only) keeps the rows of the training set whose label is one of
    them, in their order, with their labels: the training set of a score model of those classes
    only (the DLSM poster's posterior-SM baseline, Fig. 1 (c), one score model per class). The
    batch rule then runs over those rows; ``batch_size`` must be at most their number.
    """
    get_toy_dataset(name)
    check_positive_int("num_points", num_points)
    num_classes = TOY_NUM_CLASSES[name]
    if classes is not None:
        allowed = list(range(num_classes))
        if (not num_classes or not isinstance(classes, (tuple, list)) or not classes
                or any(isinstance(c, bool) or not isinstance(c, (int, np.integer))
                       or c not in allowed for c in classes)):
            raise ValueError(f"classes must be a non-empty tuple of labels of {name!r}, allowed: "
                             f"{allowed if num_classes else 'none (unlabelled data set)'}; got "
                             f"{classes!r}.")

    @functools.cache
    def points() -> Split:
        x, labels = make_toy_dataset(name, data_key, num_points, return_labels=True)
        x, labels = np.asarray(x), np.asarray(labels)
        if classes is not None:
            keep = np.isin(labels, np.asarray(classes, labels.dtype))
            x, labels = x[keep], labels[keep]
        return Split(x, labels)

    return DataSource(
        lambda split: points(), event_shape=(2,), images=False, batch_size=batch_size,
        batch_key=batch_key, num_classes=num_classes, process_index=process_index,
        process_count=process_count)
