"""sgm_jax.metrics.prdc against a brute-force NumPy / scikit-learn reference and exact cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from conftest import run_with_default_compilation
from sgm_jax.metrics import knn_radii, prdc

KEYS = ("precision", "recall", "density", "coverage")


def reference_prdc(real, fake, k, closed=False):
    """Brute force in float64: full distance matrix, k-NN radii from scikit-learn."""
    inside = np.less_equal if closed else np.less
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    # The k+1-th neighbour of a point within its own set, itself included, is its k-th other one.
    real_radii = NearestNeighbors(n_neighbors=k + 1).fit(real).kneighbors(real)[0][:, k]
    fake_radii = NearestNeighbors(n_neighbors=k + 1).fit(fake).kneighbors(fake)[0][:, k]
    dist = np.linalg.norm(fake[:, None, :] - real[None, :, :], axis=-1)  # [M, N]
    in_real_ball = inside(dist, real_radii[None, :])
    return {
        "precision": in_real_ball.any(axis=1).mean(),
        "recall": inside(dist, fake_radii[:, None]).any(axis=0).mean(),
        "density": in_real_ball.sum() / (k * fake.shape[0]),
        "coverage": inside(dist.min(axis=0), real_radii).mean(),
    }


def _sets(dim, n=203, m=157, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, dim)).astype(np.float32)
    fake = (1.3 * rng.normal(size=(m, dim)) + 0.4).astype(np.float32)
    return real, fake


# dim 2 takes the explicit-difference path, dim 40 the centred-matmul path; the chunk sizes 7
# and 64 divide neither N = 203 nor M = 157. (Shapes are shared between tests so that the jitted
# kernels compile few times.)
@pytest.mark.parametrize("dim,k,chunk,closed", [(2, 1, 64, True), (2, 3, 7, False),
                                                (40, 5, 64, False)])
def test_prdc_matches_brute_force(dim, k, chunk, closed):
    real, fake = _sets(dim, seed=k)
    got = prdc(real, fake, nearest_k=k, chunk_size=chunk, closed_balls=closed)
    want = reference_prdc(real, fake, k, closed)
    for name in KEYS:
        np.testing.assert_allclose(float(got[name]), want[name], rtol=1e-6, err_msg=name)
    assert 0.0 < want["precision"] < 1.0 and 0.0 < want["coverage"] < 1.0  # a non-trivial case


def test_knn_radii_match_sklearn_and_exclude_self():
    real, _ = _sets(2)
    want = NearestNeighbors(n_neighbors=4).fit(real).kneighbors(real)[0][:, 3]
    np.testing.assert_allclose(knn_radii(real, 3, chunk_size=7), want, rtol=1e-5)
    # A duplicated point is its copy's nearest other point: radius 0 for k = 1.
    dup = np.concatenate([real, real[:1]])
    radii = knn_radii(dup, 1, chunk_size=64)
    assert float(radii[0]) == 0.0 and float(radii[-1]) == 0.0


IDENTICAL_CASES = [(2, 3, 7, False), (2, 1, 64, True), (40, 5, 64, False)]
_IDENTICAL_CHILD = """
import json
from test_metrics_prdc import IDENTICAL_CASES, KEYS, _sets
from sgm_jax.metrics import prdc
out = []
for dim, k, chunk, closed in IDENTICAL_CASES:
    real, _ = _sets(dim)
    values = prdc(real, real, nearest_k=k, chunk_size=chunk, closed_balls=closed)
    out.append({"num_points": real.shape[0], **{name: float(values[name]) for name in KEYS}})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def identical_set_values():
    """prdc of every case of :func:`test_identical_sets`, in a process with XLA's default
    compilation (what users run). The exact ties there need the radius pass and the cross pass
    to round every distance alike; with the default suite's ``conftest.FAST_COMPILE`` XLA:CPU
    rounds some differently in the two programs (density 1.026 instead of 1 for k = 3)."""
    return dict(zip(IDENTICAL_CASES, run_with_default_compilation(_IDENTICAL_CHILD)))


@pytest.mark.parametrize("dim,k,chunk,closed", IDENTICAL_CASES)
def test_identical_sets(identical_set_values, dim, k, chunk, closed):
    out = identical_set_values[dim, k, chunk, closed]
    for name in ("precision", "recall", "coverage"):
        assert out[name] == 1.0, name
    # Each point lies in its own ball and in those of the k − 1 points it is nearer to than
    # their k-th neighbour; with closed balls also in those of the k points it is the k-th
    # neighbour of, which lie exactly on boundaries. (With the matmul path for D > 16 a rounding
    # difference between the radius pass and the cross pass could flip such a point: allow 2.)
    want = (k + 1) / k if closed else 1.0
    atol = 1e-6 if dim <= 16 else 2.0 / (k * out["num_points"])
    np.testing.assert_allclose(out["density"], want, rtol=0, atol=atol)


def test_same_distribution_density_near_one():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(2, 1000, 2)).astype(np.float32)
    out = prdc(real, fake, nearest_k=3)
    assert abs(float(out["density"]) - 1.0) < 0.08
    assert float(out["precision"]) > 0.95 and float(out["recall"]) > 0.95


@pytest.mark.parametrize("dim,k,chunk", [(2, 3, 7), (40, 5, 64)])
def test_far_apart_sets_give_zero(dim, k, chunk):
    real, fake = _sets(dim)
    out = prdc(real, fake + 1000.0, nearest_k=k, chunk_size=chunk)
    for name in KEYS:
        assert float(out[name]) == 0.0, name


def test_feature_shape_is_flattened_and_dtype_kept():
    real, fake = _sets(40)
    flat = prdc(real, fake, 5, chunk_size=64)
    shaped = prdc(real.reshape(203, 2, 5, 4), fake.reshape(157, 2, 5, 4), 5, chunk_size=64)
    for name in KEYS:
        assert float(flat[name]) == float(shaped[name])
        assert shaped[name].dtype == jnp.float32 and shaped[name].shape == ()


def test_float64_radii():
    with jax.enable_x64(True):
        real = np.random.default_rng(5).normal(size=(60, 2))
        radii = knn_radii(real, 3, chunk_size=11)
        assert radii.dtype == jnp.float64
        want = NearestNeighbors(n_neighbors=4).fit(real).kneighbors(real)[0][:, 3]
        np.testing.assert_allclose(radii, want, rtol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(real_features=np.zeros(10), fake_features=np.zeros((10, 2))), "real_features"),
    (dict(real_features=np.zeros((10, 2)), fake_features=np.zeros((10, 3))), "feature shape"),
    (dict(nearest_k=0), "nearest_k"),
    (dict(nearest_k=2.0), "nearest_k"),
    (dict(nearest_k=10), "nearest_k"),  # = N: no 10th other point among 10
    (dict(fake_features=np.random.default_rng(0).normal(size=(3, 2)), nearest_k=3), "fake"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(closed_balls="yes"), "closed_balls"),
    (dict(fake_features=np.full((10, 2), np.nan)), "fake_features"),
])
def test_bad_arguments_raise(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(real_features=rng.normal(size=(10, 2)), fake_features=rng.normal(size=(12, 2)),
                nearest_k=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        prdc(**args)
