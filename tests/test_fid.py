"""FID, IS and KID (sgm_jax.metrics.feature_metrics) against closed forms and direct NumPy references."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import scipy.linalg

from sgm_jax.metrics import feature_statistics, fid, frechet_distance, inception_score, kid

from exact_reference import Z_THRESHOLD


def _random_orthogonal(dim, rng):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def _commuting_gaussians(dim=6, seed=0):
    """Two Gaussians whose covariances share eigenvectors Q, and their closed-form distance
    ‖μ₁ − μ₂‖² + Σᵢ (√aᵢ − √bᵢ)² (then (C₁C₂)^{1/2} = Q diag(√(ab)) Qᵀ)."""
    rng = np.random.default_rng(seed)
    q = _random_orthogonal(dim, rng)
    a, b = rng.uniform(0.2, 3.0, dim), rng.uniform(0.2, 3.0, dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    return mu1, (q * a) @ q.T, mu2, (q * b) @ q.T, exact


def _features_with_moments(mu, cov, num, rng):
    """[num, F] points whose sample mean is exactly ``mu`` and unbiased covariance ``cov``."""
    z = rng.normal(size=(num, mu.size))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample cov = I
    return z @ np.linalg.cholesky(cov).T + mu


def test_frechet_distance_closed_form_for_commuting_covariances():
    mu1, cov1, mu2, cov2, exact = _commuting_gaussians()
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(exact, rel=1e-10)
    # Diagonal covariances: the sum of per-coordinate 1-D distances.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    got = frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
    assert got == pytest.approx(3.0 + 1.0 + 1.0 + 0.0, rel=1e-12)


def test_fid_of_features_with_known_moments_is_the_closed_form():
    mu1, cov1, mu2, cov2, exact = _commuting_gaussians(seed=1)
    rng = np.random.default_rng(1)
    a = _features_with_moments(mu1, cov1, 40, rng)
    b = _features_with_moments(mu2, cov2, 25, rng)
    mean_a, cov_a = feature_statistics(a)
    np.testing.assert_allclose(mean_a, mu1, atol=1e-12)
    np.testing.assert_allclose(cov_a, cov1, atol=1e-12)
    assert fid(a, b) == pytest.approx(exact, rel=1e-9)


def pytorch_fid_distance(mu1, cov1, mu2, cov2):
    """pytorch-fid's calculate_frechet_distance on well-conditioned inputs (sqrtm of C₁C₂)."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean)


def test_frechet_distance_matches_the_sqrtm_formula_on_non_commuting_covariances():
    rng = np.random.default_rng(2)
    dim = 64
    stats = []
    for scale in (1.0, 2.0):
        root = rng.normal(size=(dim, dim)) / math.sqrt(dim)
        stats += [scale * rng.normal(size=dim), root @ root.T + 0.1 * scale * np.eye(dim)]
    got = frechet_distance(*stats)
    want = pytorch_fid_distance(*stats)
    assert got == pytest.approx(want, rel=1e-6)


def test_singular_covariances_give_the_nuclear_norm_formula_and_zero_for_equal_sets():
    """With fewer points than features, C = AᵀA with A the centred points / √(N − 1), and
    tr (C₁C₂)^{1/2} is the nuclear norm of A₁A₂ᵀ (the square roots of the nonzero eigenvalues of
    C₁C₂ are the singular values of A₁A₂ᵀ): an exact reference for rank-deficient inputs."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 64)), 1.5 * rng.normal(size=(15, 64)) + 0.2

    def centred(x):
        return (x - x.mean(axis=0)) / math.sqrt(x.shape[0] - 1)

    ca, cb = centred(a), centred(b)
    nuclear = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
    diff = a.mean(axis=0) - b.mean(axis=0)
    trace = np.sum(ca**2) + np.sum(cb**2)
    want = diff @ diff + trace - 2.0 * nuclear
    got = fid(a, b)
    assert math.isfinite(got) and got > 0
    assert got == pytest.approx(want, abs=1e-9 * trace)
    self_distance = fid(a, a)
    assert 0.0 <= self_distance <= 1e-9 * 2 * np.sum(ca**2)


def test_fid_rejects_bad_inputs():
    with pytest.raises(ValueError, match="features must have shape"):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="finite"):
        feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))


# --------------------------------------------------------------------------------------------
# Inception Score.


def reference_inception_score(logits, splits):
    """The OpenAI / TTUR code: softmax, per split exp(mean KL(p(y|x) ‖ p(y))), np.std."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = p.shape[0]
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return np.mean(scores), np.std(scores)


def test_inception_score_matches_reference_on_uneven_splits():
    logits = 3.0 * np.random.default_rng(4).normal(size=(103, 20))
    got = inception_score(logits, splits=10)
    np.testing.assert_allclose(got, reference_inception_score(logits, 10), rtol=1e-10)


def test_inception_score_is_one_for_identical_predictions():
    row = np.random.default_rng(5).normal(size=(1, 1008))
    mean, std = inception_score(np.repeat(row, 50, axis=0), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("num_classes,splits", [(16, 10), (1008, 1)])
def test_inception_score_is_the_class_count_for_uniform_one_hot_predictions(num_classes, splits):
    # Every split holds each class once; p(y|x) is one-hot (exp(−1e4) underflows to 0).
    labels = np.tile(np.arange(num_classes), splits)
    logits = 1e4 * np.eye(num_classes)[labels]
    mean, std = inception_score(logits, splits=splits)
    assert mean == pytest.approx(num_classes, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_rejects_more_splits_than_rows():
    with pytest.raises(ValueError, match="splits must be at most"):
        inception_score(np.zeros((5, 3)), splits=6)


# --------------------------------------------------------------------------------------------
# Kernel Inception Distance.


def exact_mmd2(x, y):
    """Unbiased MMD² over all pairs with k(a, b) = (aᵀb / F + 1)³, element by element."""
    def kernel(a, b):
        return (np.einsum("if,jf->ij", a, b) / a.shape[1] + 1.0) ** 3

    off_x = ~np.eye(len(x), dtype=bool)
    off_y = ~np.eye(len(y), dtype=bool)
    return kernel(x, x)[off_x].mean() + kernel(y, y)[off_y].mean() - 2.0 * kernel(x, y).mean()


def _shifted_sets(n, m, dim=8, shift=0.3, seed=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.normal(size=(m, dim)) + shift


def test_kid_on_whole_sets_equals_the_exact_mmd2():
    x, y = _shifted_sets(200, 200)
    mean, std = kid(x, y, subset_size=1000, num_subsets=3, key=jax.random.PRNGKey(0))
    # subset_size is clipped to 200: every subset is a permutation of a whole set.
    assert mean == pytest.approx(exact_mmd2(x, y), rel=1e-10)
    assert std <= 1e-12 * abs(mean)


def test_kid_subsets_are_unbiased_for_the_whole_sample_estimate():
    """Given the data, subsets are i.i.d. draws and each subset's estimate has, as expectation,
    the all-pairs estimate (random pairs within a set are uniform over its distinct pairs; the
    two sets are drawn independently): the mean over S subsets lies within Z·std/√S of it."""
    x, y = _shifted_sets(300, 250)
    subsets = 400
    mean, std = kid(x, y, subset_size=50, num_subsets=subsets, key=jax.random.PRNGKey(1))
    exact = exact_mmd2(x, y)
    assert exact > 0.0 and mean > 0.0
    assert abs(mean - exact) <= Z_THRESHOLD * std / math.sqrt(subsets)
    assert 0.5 < mean / exact < 2.0


def test_kid_is_zero_in_expectation_for_one_distribution():
    """Two large samples of N(0, I): each subset estimate has expectation 0. Subsets of 50 out of
    20 000 hardly overlap, so the mean over S subsets has standard error ≈ std/√S (std as
    returned); the estimate of all pairs, which the subsets average, deviates from 0 by
    O(1/N), far below that. The biased (V-statistic) estimate, which keeps k(x, x), fails."""
    x, y = _shifted_sets(20_000, 20_000, shift=0.0, seed=7)
    subsets, size = 100, 50
    mean, std = kid(x, y, subset_size=size, num_subsets=subsets, key=jax.random.PRNGKey(2))
    standard_error = std / math.sqrt(subsets)
    assert abs(mean) <= Z_THRESHOLD * standard_error
    # Power check: the V-statistic adds (E k(x, x) − E k(x, x'))/m per set, where
    # E k(x, x') = 1 + 3/F for independent standard normals (E (xᵀx'/F)² = 1/F, odd moments 0).
    diag = np.mean((np.sum(x**2, axis=1) / x.shape[1] + 1.0) ** 3)
    bias = 2.0 * (diag - (1.0 + 3.0 / x.shape[1])) / size
    assert bias > 4 * Z_THRESHOLD * standard_error  # it would miss the test by far


def test_kid_clips_the_subset_size_and_is_reproducible():
    x, y = _shifted_sets(30, 40)
    key = jax.random.PRNGKey(3)
    clipped = kid(x, y, subset_size=10**6, num_subsets=5, key=key)
    assert clipped == kid(x, y, subset_size=30, num_subsets=5, key=key)
    assert clipped != kid(x, y, subset_size=30, num_subsets=5, key=jax.random.PRNGKey(4))


def test_kid_rejects_bad_inputs():
    x, y = _shifted_sets(30, 40)
    with pytest.raises(ValueError, match="same number of features"):
        kid(x, y[:, :3], key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="subset_size must be at least 2"):
        kid(x, y, subset_size=1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_subsets"):
        kid(x, y, num_subsets=0, key=jax.random.PRNGKey(0))
