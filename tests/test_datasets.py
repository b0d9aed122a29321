"""Tests for the toy data generators (sgm_jax.data.toy)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import cKDTree
from sklearn.datasets import make_moons

from sgm_jax import data

NAMES = ["8gaussians", "spirals", "checkerboard", "moons"]
N = 50000


def _points(name, seed=0, n=N):
    return np.asarray(data.make_toy_dataset(name, jax.random.PRNGKey(seed), n))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 7])
def test_shape_dtype_determinism(name, n):
    key = jax.random.PRNGKey(3)
    x, y = data.make_toy_dataset(name, key, n, return_labels=True)
    assert x.shape == (n, 2) and x.dtype == jnp.float32
    assert y.shape == (n,) and y.dtype == jnp.int32
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, data.make_toy_dataset(name, key, n))
    if n > 1:
        other = data.make_toy_dataset(name, jax.random.PRNGKey(4), n)
        assert not np.array_equal(x, other)


def test_raw_uint32_keys_work():
    x = data.make_toy_dataset("checkerboard", jax.random.PRNGKey(0), 10)
    assert x.shape == (10, 2)


def test_eight_gaussians_clusters():
    x = _points("8gaussians")
    s = 1 / math.sqrt(2)
    unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (-s, s), (s, -s), (-s, -s)])
    centres = 8 * s * unit  # radius 8/sqrt(2)
    k = np.argmin(((x[:, None] - centres) ** 2).sum(-1), axis=1)
    counts = np.bincount(k, minlength=8)
    p = 1 / 8
    assert np.all(np.abs(counts - N * p) < 5 * math.sqrt(N * p * (1 - p)))
    for j in range(8):
        pts = x[k == j]
        m = len(pts)
        mean, std = pts.mean(0), pts.std(0, ddof=1)
        se_mean = std / math.sqrt(m)
        assert np.all(np.abs(mean - centres[j]) < 4 * se_mean)
        radius = unit[j] @ mean  # mean radius along the mode's direction
        se_radius = math.sqrt((unit[j] ** 2) @ se_mean**2)
        assert abs(radius - 8 * s) < 4 * se_radius
        # Nearest-centre assignment truncates the tails (< 0.3 se bias at this size).
        se_std = std / math.sqrt(2 * (m - 1))
        assert np.all(np.abs(std - s) < 4 * se_std)


def test_checkerboard_black_squares_equal_mass():
    x = _points("checkerboard")
    assert np.all((x >= -6) & (x <= 6))
    cells = np.floor(x / 3).astype(int)
    assert np.all((cells.sum(1) % 2) == 0), "points off the black squares"
    idx = (cells[:, 0] + 2) * 4 + (cells[:, 1] + 2)
    counts = np.bincount(idx, minlength=16)
    occupied = [
        (i + 2) * 4 + (j + 2) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0
    ]
    assert len(occupied) == 8 and counts[occupied].sum() == N
    expected = N / 8
    assert np.all(np.abs(counts[occupied] - expected) < 5 * math.sqrt(N / 8 * 7 / 8))
    chi2 = ((counts[occupied] - expected) ** 2 / expected).sum()
    assert chi2 < 29.9  # 99.99 % quantile of chi-square with 7 degrees of freedom


def test_spirals_are_the_two_arms_in_random_order():
    key = jax.random.PRNGKey(0)
    x = _points("spirals")
    arms = np.asarray(data.spiral_arms(jax.random.split(key)[0], N))
    distance, index = cKDTree(arms).query(x)
    assert distance.max() < 1e-5 and len(np.unique(index)) == N  # a permutation of the arms
    assert not np.array_equal(x, arms)


@pytest.mark.parametrize("name", NAMES)
def test_every_prefix_is_a_sample_of_the_whole_set(name):
    # Evaluation uses the first points of the training set: they must follow the same law as the
    # rest. The means of the first 5000 and of the other points agree within 5 standard errors.
    x = _points(name)
    head, tail = x[:5000], x[5000:]
    se = np.sqrt(head.var(0, ddof=1) / len(head) + tail.var(0, ddof=1) / len(tail))
    assert np.all(np.abs(head.mean(0) - tail.mean(0)) < 5 * se)


def test_spirals_geometry():
    x = np.asarray(data.spiral_arms(jax.random.PRNGKey(0), N))
    half = N // 2
    np.testing.assert_array_equal(x[half:], -x[:half])
    jitter = 0.5 * math.sqrt(2)
    r = np.linalg.norm(x, axis=1)
    lo, hi = 2.3 / 3 * (3 * math.pi - jitter), 2.3 / 3 * (3 * math.pi + jitter)
    assert r.max() <= hi and r.max() >= lo
    # Unscaled first-half points lie within the jitter of the curve a·(-cos a, sin a).
    d = x[:half] * 3 / 2.3
    a = np.linspace(0, 3 * math.pi, 200001)
    curve = np.stack([-np.cos(a) * a, np.sin(a) * a], 1)
    assert cKDTree(curve).query(d)[0].max() <= jitter + 1e-3
    # Moments against quadrature over a = sqrt(U)·3π and jitter 0.5·U(0, 1) per coordinate.
    u = (np.arange(10**6) + 0.5) / 10**6
    a = np.sqrt(u) * 3 * math.pi
    c, sn = -np.cos(a) * a, np.sin(a) * a
    mean = np.array([c.mean() + 0.25, sn.mean() + 0.25])
    sq = (c**2 + sn**2).mean() + 0.5 * (c + sn).mean() + 2 * 0.25 / 3
    for stat, expected in [(d[:, 0], mean[0]), (d[:, 1], mean[1]), ((d**2).sum(1), sq)]:
        assert abs(stat.mean() - expected) < 4 * stat.std() / math.sqrt(half)


@pytest.mark.parametrize("n", [10000, 101])
def test_moons_match_sklearn(n):
    x, y = data.moons(jax.random.PRNGKey(0), n)
    x, y = np.asarray(x), np.asarray(y)
    ref, ref_y = make_moons(n, noise=0.0, random_state=1)
    ref = 20 * (ref - ref.mean(0))
    np.testing.assert_array_equal(np.bincount(y), np.bincount(ref_y))
    assert np.bincount(y)[0] == n // 2
    assert np.abs(x.mean(0)).max() < 1e-3
    for label in (0, 1):
        mine, theirs = x[y == label], ref[ref_y == label]
        dist, idx = cKDTree(theirs).query(mine)
        assert dist.max() < 1e-4
        assert len(np.unique(idx)) == len(theirs)  # a bijection: same set of points
    # label 0 is the upper moon
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean()


def test_moons_order_depends_on_key():
    a, _ = data.moons(jax.random.PRNGKey(0), 101)
    b, _ = data.moons(jax.random.PRNGKey(1), 101)
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(np.sort(a, axis=0), np.sort(b, axis=0))


def test_unknown_name():
    with pytest.raises(ValueError, match=r"toy data set must be one of \('8gaussians', "
                       r"'checkerboard', 'moons', 'spirals'\); got 'nope'"):
        data.get_toy_dataset("nope")
    with pytest.raises(ValueError, match="nope"):
        data.make_toy_dataset("nope", jax.random.PRNGKey(0))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_bad_num_points(bad):
    with pytest.raises(ValueError, match="num_points must be an integer >= 1"):
        data.make_toy_dataset("spirals", jax.random.PRNGKey(0), bad)


@pytest.mark.parametrize("name", NAMES)
def test_bad_n_in_generators(name):
    with pytest.raises(ValueError, match="n must be an integer >= 1; got 0"):
        data.get_toy_dataset(name)(jax.random.PRNGKey(0), 0)


def _eight_gaussians_log_density(x, sigma):
    means = np.asarray(data.EIGHT_GAUSSIANS_MEANS)
    var = data.EIGHT_GAUSSIANS_STD**2 + sigma**2
    sq = jnp.sum((x[None] - means) ** 2, axis=-1)
    return jax.scipy.special.logsumexp(-0.5 * sq / var) - math.log(8 * 2 * math.pi * var)


@pytest.mark.parametrize("sigma", [0.0, 0.1, 1.0, 3.0])
def test_eight_gaussians_score_is_the_gradient_of_the_mixture_log_density(sigma):
    x = 6.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    expected = jax.vmap(jax.grad(_eight_gaussians_log_density), (0, None))(x, sigma)
    np.testing.assert_allclose(data.eight_gaussians_score(x, sigma), expected,
                               rtol=1e-5, atol=1e-5)

