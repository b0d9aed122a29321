"""sgm_jax.losses against exact computations (full Jacobians, quadrature, Parzen sums)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from exact_reference import (
    Z_THRESHOLD,
    assert_unbiased,
    energy_score,
    exact_asym,
    exact_ism,
    gauss_hermite_expectation,
    init_mlp,
    mean_and_se,
    mlp_score,
    per_example_jacobian,
)
from sgm_jax import _jacobian, losses

NUM_KEYS = 3000
SHAPES = {"vector": (5,), "image": (3, 3, 2)}


def _field(event_shape, seed=0, scale=1.5, dtype=jnp.float32):
    params = init_mlp(jax.random.PRNGKey(seed), event_shape, scale=scale, dtype=dtype)
    x = jax.random.normal(jax.random.PRNGKey(seed + 100), (4, *event_shape), dtype)
    return params, functools.partial(mlp_score, params), x


def _over_keys(estimator, num=NUM_KEYS, seed=7):
    keys = jax.random.split(jax.random.PRNGKey(seed), num)
    return jax.jit(jax.vmap(estimator))(keys)


# ---------------------------------------------------------------------------- ISM


LOOPED_SHAPE = (5, 5, 3)  # D = 75: the basis JVPs run through lax.map instead of being unrolled


@pytest.mark.parametrize("shape", [*SHAPES.values(), LOOPED_SHAPE], ids=[*SHAPES.keys(), "looped"])
def test_ism_equals_half_norm_plus_jacfwd_trace(shape):
    assert np.prod(LOOPED_SHAPE) > _jacobian._UNROLL_MAX_DIM
    _, score, x = _field(shape)
    np.testing.assert_allclose(jax.jit(lambda x: losses.ism_loss(score, x))(x),
                               jax.jit(lambda x: exact_ism(score, x))(x), rtol=1e-5, atol=1e-5)


def test_ism_float64_is_exact_to_double_rounding():
    with jax.enable_x64(True):
        _, score, x = _field((6,), dtype=jnp.float64)
        value = losses.ism_loss(score, x)
        assert value.dtype == jnp.float64
        np.testing.assert_allclose(value, exact_ism(score, x), rtol=1e-12)


# ---------------------------------------------------------------------------- SSM


@pytest.mark.parametrize("projection", losses.PROJECTIONS)
@pytest.mark.parametrize("variance_reduction", [True, False])
@pytest.mark.parametrize("num_projections", [1, 3])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_ssm_is_unbiased_for_ism(shape, num_projections, variance_reduction, projection):
    _, score, x = _field(shape)
    samples = _over_keys(lambda k: losses.ssm_loss(
        score, x, k, num_projections=num_projections, projection=projection,
        variance_reduction=variance_reduction))
    assert samples.shape == (NUM_KEYS, x.shape[0])
    assert_unbiased(samples, exact_ism(score, x))


def test_ssm_more_projections_reduce_variance():
    _, score, x = _field((5,))
    _, se1 = mean_and_se(_over_keys(lambda k: losses.ssm_loss(score, x, k, 1, "gaussian")))
    _, se8 = mean_and_se(_over_keys(lambda k: losses.ssm_loss(score, x, k, 8, "gaussian")))
    np.testing.assert_allclose(se8, se1 / np.sqrt(8), rtol=0.15)


def test_ssm_vr_has_lower_variance_than_original():
    _, score, x = _field((5,))
    _, se_vr = mean_and_se(_over_keys(lambda k: losses.ssm_loss(score, x, k, 1, "gaussian", True)))
    _, se_plain = mean_and_se(_over_keys(lambda k: losses.ssm_loss(score, x, k, 1, "gaussian", False)))
    assert np.all(se_vr < se_plain)


# ---------------------------------------------------------------------------- FD-SSM


def _ssm_vr_integrand(score, x, v):
    """vᵀJv + ½‖s‖² from the full Jacobian, for a given probe v."""
    jac = per_example_jacobian(score, x)
    vf = v.reshape(x.shape[0], -1)
    s = score(x).reshape(x.shape[0], -1)
    return jnp.einsum("bi,bij,bj->b", vf, jac, vf) + 0.5 * jnp.sum(s**2, axis=1)


def test_fd_ssm_error_is_second_order_in_eps():
    with jax.enable_x64(True):
        _, score, x = _field((5,), dtype=jnp.float64)
        key = jax.random.PRNGKey(3)
        v = jax.random.rademacher(key, x.shape, dtype=jnp.float64)
        target = _ssm_vr_integrand(score, x, v)
        errors = [np.abs(losses.fd_ssm_loss(score, x, key, eps=e) - target) for e in (0.04, 0.02, 0.01)]
        ratios = np.stack([errors[0] / errors[1], errors[1] / errors[2]])
        np.testing.assert_allclose(ratios, 4.0, rtol=0.05)  # halving ε quarters the error: O(ε²)


@pytest.mark.parametrize("projection", losses.PROJECTIONS)
def test_fd_ssm_is_unbiased_for_ism_up_to_eps_squared(projection):
    _, score, x = _field((3, 3, 2))
    samples = _over_keys(lambda k: losses.fd_ssm_loss(score, x, k, eps=1e-2, projection=projection))
    # the O(ε²) bias is ~1e-4 here (second-order test above), far below the standard error
    assert_unbiased(samples, exact_ism(score, x), rounding=1e-3)


# ---------------------------------------------------------------------------- QC and Asym


@pytest.mark.parametrize("num_vectors", [1, 4])
@pytest.mark.parametrize("projection", losses.PROJECTIONS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_qc_is_unbiased_for_half_frobenius_asymmetry(shape, projection, num_vectors):
    _, score, x = _field(shape)
    samples = _over_keys(lambda k: losses.qc_loss(score, x, k, num_vectors, projection))
    assert_unbiased(samples, exact_asym(score, x))


def test_qc_is_zero_for_a_conservative_field():
    params = init_mlp(jax.random.PRNGKey(1), (4,), scale=2.0)
    score = functools.partial(energy_score, params)
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 4))
    jac_scale = float(jnp.max(jnp.sum(per_example_jacobian(score, x) ** 2, axis=(1, 2))))
    samples = _over_keys(lambda k: losses.qc_loss(score, x, k), num=64)
    assert np.max(np.abs(samples)) < 1e-5 * jac_scale


def test_qc_is_large_for_a_rotational_field():
    rotation = jnp.array([[0.0, -1.0], [1.0, 0.0]]) * 3.0

    def score(x):
        return x @ rotation.T

    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    samples = _over_keys(lambda k: losses.qc_loss(score, x, k), num=16)
    # J = 3R with R a 90° rotation: ½‖J − Jᵀ‖² = ½‖6R‖² = 36, and every Rademacher probe is exact.
    np.testing.assert_allclose(samples, 36.0, rtol=1e-6)


def test_qc_parameter_gradient_matches_exact_asymmetry_gradient():
    params, _, x = _field((4,), scale=2.0)
    exact_grad = jax.grad(lambda p: jnp.mean(exact_asym(functools.partial(mlp_score, p), x)))(params)

    def estimated_grad(key):
        return jax.grad(lambda p: jnp.mean(losses.qc_loss(functools.partial(mlp_score, p), x, key)))(params)

    samples = _over_keys(estimated_grad, num=4000)
    for name in params:
        assert_unbiased(samples[name], exact_grad[name])


# ---------------------------------------------------------------------------- DSM, LCSS, DLSM


def _per_example_quadrature(fn, x, sigma):
    """E_z[fn(x_b, z)] for each example b of a 2-D batch by Gauss–Hermite quadrature."""
    return np.array([gauss_hermite_expectation(lambda z, xb=xb: fn(xb, z, sigma), 2) for xb in x])


def _two_d_field():
    params = init_mlp(jax.random.PRNGKey(4), (2,), hidden=32, scale=2.0)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, 2))
    return params, functools.partial(mlp_score, params), x


@pytest.mark.parametrize("sigma", [0.3, jnp.array([0.2, 0.5, 1.0])], ids=["scalar", "per-example"])
def test_dsm_matches_its_defining_expectation(sigma):
    _, score, x = _two_d_field()
    sig = jnp.broadcast_to(jnp.asarray(sigma), (3,))

    def definition(xb, z, s):
        # ½‖s(x̃) − ∇ log N(x̃; x, σ²I)‖² at x̃ = x + σz
        x_tilde = xb + s * z
        return 0.5 * jnp.sum((score(x_tilde) - (xb - x_tilde) / s**2) ** 2, axis=1)

    exact = np.array([gauss_hermite_expectation(lambda z, b=b: definition(x[b], z, sig[b]), 2)
                      for b in range(3)])
    samples = _over_keys(lambda k: losses.dsm_loss(score, x, k, sigma), num=20000)
    assert_unbiased(samples, exact)


def test_dsm_is_zero_for_the_exact_conditional_score():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 2, 2))
    sigma = 0.7
    anchor = x  # data concentrated at x itself: ∇ log p(x̃|x) = (x − x̃)/σ²
    value = losses.dsm_loss(lambda y: (anchor - y) / sigma**2, x, jax.random.PRNGKey(1), sigma)
    np.testing.assert_allclose(value, 0.0, atol=1e-10)


def test_lcss_satisfies_steins_identity():
    _, score, x = _two_d_field()
    sigma = 0.5
    # E_z[LCSS] = E_{x'~N(x, σ²I)}[tr J(x') + ½‖s(x')‖²] (LCSS Eqs. 16–18)
    exact = np.array([gauss_hermite_expectation(lambda z, xb=xb: exact_ism(score, xb + sigma * z), 2)
                      for xb in x])
    samples = _over_keys(lambda k: losses.lcss_loss(score, x, k, sigma), num=20000)
    assert_unbiased(samples, exact)


def test_lcss_is_dsm_less_a_constant_with_the_same_parameter_gradient():
    """s·z/σ + ½‖s‖² = ½‖s + z/σ‖² − ½‖z‖²/σ² for the same z (LCSS Eq. 18 vs Eq. 6)."""
    params, _, x = _field((3, 3, 2))
    sigma = jnp.array([0.2, 0.5, 1.0, 3.0])
    key = jax.random.PRNGKey(11)

    def mean_loss(loss, p):
        return jnp.mean(loss(functools.partial(mlp_score, p), x, key, sigma))

    z = jax.random.normal(key, x.shape)  # the draw both functions make from `key`
    half_z2 = 0.5 * jnp.sum(z**2, axis=(1, 2, 3)) / sigma**2
    score = functools.partial(mlp_score, params)
    difference = losses.dsm_loss(score, x, key, sigma) - losses.lcss_loss(score, x, key, sigma)
    # ½‖z‖²/σ² reaches ~1e2 at σ = 0.2; float32 rounding of the two O(1e2) losses is ~1e-5 of it
    np.testing.assert_allclose(difference, half_z2, rtol=1e-5)
    grad_dsm = jax.grad(functools.partial(mean_loss, losses.dsm_loss))(params)
    grad_lcss = jax.grad(functools.partial(mean_loss, losses.lcss_loss))(params)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grad_dsm))
    assert scale > 1e-2  # the gradients are not trivially zero
    for name in params:
        # the gradients differ only by float32 rounding: the ∂/∂θ of ½‖z‖²/σ² is exactly zero
        np.testing.assert_allclose(grad_lcss[name], grad_dsm[name], rtol=1e-4, atol=1e-6 * scale)


def _classifier(key, num_classes=3):
    w = jax.random.normal(key, (2, num_classes))
    return lambda p, x: jnp.tanh(x @ p) * 2.0, w


def test_dlsm_matches_its_defining_expectation_and_freezes_the_score():
    score_params, score, x = _two_d_field()
    logits, w = _classifier(jax.random.PRNGKey(9))
    y = jnp.array([0, 2, 1])
    sigma = 0.4

    def definition(b, z):
        x_tilde = x[b] + sigma * z
        grad_log_p = jax.vmap(jax.grad(lambda xi: jax.nn.log_softmax(logits(w, xi))[y[b]]))(x_tilde)
        target = (x[b] - x_tilde) / sigma**2
        return 0.5 * jnp.sum((grad_log_p + score(x_tilde) - target) ** 2, axis=1)

    exact = np.array([gauss_hermite_expectation(lambda z, b=b: definition(b, z), 2) for b in range(3)])
    samples = _over_keys(
        lambda k: losses.dlsm_loss(lambda xx: logits(w, xx), score, x, y, k, sigma), num=20000)
    assert_unbiased(samples, exact)

    def mean_loss(classifier_params, params):
        return jnp.mean(losses.dlsm_loss(lambda xx: logits(classifier_params, xx),
                                         functools.partial(mlp_score, params), x, y,
                                         jax.random.PRNGKey(0), sigma))

    grad_w, grad_score = jax.grad(mean_loss, argnums=(0, 1))(w, score_params)
    assert float(jnp.sum(grad_w**2)) > 0
    assert all(float(jnp.sum(g**2)) == 0 for g in jax.tree_util.tree_leaves(grad_score))


# ---------------------------------------------------------------------------- ESM


def _direct_parzen_score(x, data, sigma):
    """Σ_i w_i (x_i − x)/σ² with explicit float64 NumPy weights."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    data = np.asarray(data, np.float64).reshape(data.shape[0], -1)
    sq = ((x[:, None, :] - data[None, :, :]) ** 2).sum(-1)
    logw = -sq / (2 * sigma**2)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return (w[:, :, None] * (data[None] - x[:, None])).sum(1) / sigma**2


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_esm_matches_direct_parzen_computation(chunk_size):
    _, score, x = _field((3, 3, 2))
    data = jax.random.normal(jax.random.PRNGKey(1), (50, 3, 3, 2))
    sigma = 0.8
    target = _direct_parzen_score(x, data, sigma)
    expected = 0.5 * ((np.asarray(score(x)).reshape(4, -1) - target) ** 2).sum(1)
    np.testing.assert_allclose(losses.esm_loss(score, x, data, sigma, chunk_size=chunk_size),
                               expected, rtol=1e-4)


def test_parzen_score_is_finite_and_correct_far_from_the_data():
    data = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = jnp.array([[1e3, 2e3], [-50.0, 0.3]])
    sigma = 0.05
    score = losses.parzen_score(x, data, sigma)
    nearest = np.array([[0.0, 1.0], [0.0, 0.0]])  # exp(-d²/2σ²) underflows; the softmax must not
    assert np.all(np.isfinite(score))
    np.testing.assert_allclose(score, (nearest - np.asarray(x)) / sigma**2, rtol=1e-4)


@pytest.mark.parametrize("num_points,event", [(50_000, (2,)), (10_000, (32, 32, 3))])
def test_esm_scales_to_large_datasets(num_points, event):
    """The chunked float32 ESM over a whole large data set against float64 NumPy (squared
    distances from ‖x‖² + ‖d‖² − 2x·d, all M weights at once). The Parzen target t is a weighted
    sum of M terms over D coordinates, off by ≤ γ_{M+D} ≈ (M + D)·u of its size in float32 (any
    summation order); ½‖s − t‖² turns a relative error ε of t into 2ε‖t‖/‖s − t‖ of the value.
    A chunking that drops or repeats data points moves the target by O(chunk / M), far more."""
    data = jax.random.normal(jax.random.PRNGKey(0), (num_points, *event))
    x = data[:8] + 0.1
    value = jax.jit(lambda x, d: losses.esm_loss(lambda y: -y, x, d, 0.5))(x, data)
    xs = np.asarray(x, np.float64).reshape(8, -1)
    ds = np.asarray(data, np.float64).reshape(num_points, -1)
    sq = (xs**2).sum(1)[:, None] + (ds**2).sum(1)[None] - 2 * xs @ ds.T
    logw = -sq / (2 * 0.5**2)
    w = np.exp(logw - logw.max(1, keepdims=True))
    target = (w / w.sum(1, keepdims=True) @ ds - xs) / 0.5**2
    expected = 0.5 * ((-xs - target) ** 2).sum(1)
    amplification = 2 * np.linalg.norm(target, axis=1) / np.linalg.norm(-xs - target, axis=1)
    bound = amplification * (num_points + math.prod(event)) * 2.0**-24 * expected
    np.testing.assert_array_less(np.abs(np.asarray(value, np.float64) - expected), bound)


# ---------------------------------------------------------------------------- consistency


def test_objectives_agree_up_to_theta_independent_constants():
    """E[L(θ₁)] − E[L(θ₂)] is the same for ESM, ISM, SSM, DSM and LCSS on a 2-D mixture."""
    key = jax.random.PRNGKey(0)
    centres = jnp.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    kc, kn, kz = jax.random.split(key, 3)
    data = centres[jax.random.randint(kc, (400,), 0, 3)] + 0.3 * jax.random.normal(kn, (400, 2))
    sigma = 0.6
    nets = [functools.partial(mlp_score, init_mlp(jax.random.PRNGKey(s), (2,), 32, 1.5)) for s in (11, 12)]
    num = 40_000
    clean = data[jax.random.randint(kz, (num,), 0, data.shape[0])]
    noisy = clean + sigma * jax.random.normal(jax.random.fold_in(kz, 1), clean.shape)
    probe_key, dsm_key, lcss_key = jax.random.split(jax.random.fold_in(kz, 2), 3)

    def difference(objective):
        return objective(nets[0]) - objective(nets[1])

    diffs = {
        "esm": difference(lambda s: losses.esm_loss(s, noisy, data, sigma)),
        "ism": difference(lambda s: losses.ism_loss(s, noisy)),
        "ssm": difference(lambda s: losses.ssm_loss(s, noisy, probe_key)),
        "dsm": difference(lambda s: losses.dsm_loss(s, clean, dsm_key, sigma)),
        "lcss": difference(lambda s: losses.lcss_loss(s, clean, lcss_key, sigma)),
    }
    esm_mean, esm_se = mean_and_se(diffs["esm"])
    assert abs(esm_mean) > 10 * esm_se, "the two networks must differ measurably for the test to bite"
    for name in ("ism", "ssm", "dsm", "lcss"):
        mean, se = mean_and_se(diffs[name])
        assert abs(mean - esm_mean) <= Z_THRESHOLD * np.hypot(se, esm_se), (name, mean, esm_mean, se)


# ---------------------------------------------------------------------------- transformations


ALL_OBJECTIVES = {
    "esm": lambda s, x, k: losses.esm_loss(s, x, x[::-1] + 0.1, 0.5),
    "ism": lambda s, x, k: losses.ism_loss(s, x),
    "ssm": lambda s, x, k: losses.ssm_loss(s, x, k, 2),
    "ssm_plain": lambda s, x, k: losses.ssm_loss(s, x, k, 2, "gaussian", False),
    "fd_ssm": lambda s, x, k: losses.fd_ssm_loss(s, x, k),
    "dsm": lambda s, x, k: losses.dsm_loss(s, x, k, jnp.full((x.shape[0],), 0.3)),
    "lcss": lambda s, x, k: losses.lcss_loss(s, x, k, 0.3),
    "qc": lambda s, x, k: losses.qc_loss(s, x, k, 2),
    "dlsm": lambda s, x, k: losses.dlsm_loss(
        lambda y: y.reshape(y.shape[0], -1)[:, :3], s, x, jnp.zeros(x.shape[0], jnp.int32), k, 0.3),
}


@pytest.mark.parametrize("name", ALL_OBJECTIVES)
def test_objectives_under_jit_grad_and_vmap(name):
    objective = ALL_OBJECTIVES[name]
    params, _, x = _field((3, 3, 2))
    key = jax.random.PRNGKey(0)

    def mean_loss(p, x, k):
        return jnp.mean(objective(functools.partial(mlp_score, p), x, k))

    @jax.jit
    def transformed(p, x, k):
        per_example = objective(functools.partial(mlp_score, p), x, k)
        batched = jax.vmap(mean_loss, in_axes=(None, 0, None))(p, jnp.stack([x, 2 * x]), k)
        return per_example, jax.grad(mean_loss)(p, x, k), batched

    per_example, grads, batched = transformed(params, x, key)
    assert per_example.shape == (x.shape[0],)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    with jax.disable_jit():  # the traced values equal plain eager evaluation
        np.testing.assert_allclose(mean_loss(params, x, key), jnp.mean(per_example), rtol=1e-5)
        np.testing.assert_allclose(mean_loss(params, 2 * x, key), batched[1], rtol=1e-5)
    np.testing.assert_allclose(batched[0], jnp.mean(per_example), rtol=1e-5)


@pytest.mark.parametrize("name", ALL_OBJECTIVES)
def test_objectives_data_parallel_over_eight_devices(name):
    devices = jax.devices()
    assert len(devices) == 8, "tests run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    objective = ALL_OBJECTIVES[name]
    params, _, _ = _field((3, 3, 2))
    x = jax.random.normal(jax.random.PRNGKey(3), (16, 3, 3, 2))
    key = jax.random.PRNGKey(0)
    score = functools.partial(mlp_score, params)
    mesh = Mesh(np.array(devices), ("data",))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    value = jax.jit(lambda x: objective(score, x, key))(sharded)
    np.testing.assert_allclose(value, objective(score, x, key), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- validation


def _identity(x):
    return x


BAD_CALLS = [
    (lambda: losses.ism_loss(_identity, jnp.ones(3)), "x must be batched"),
    (lambda: losses.dsm_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), 0.0), "sigma must be finite and > 0"),
    (lambda: losses.dsm_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), -1.0), "sigma"),
    (lambda: losses.lcss_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), jnp.ones(3)), r"sigma must be a scalar or have shape \[B\]"),
    (lambda: losses.ssm_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), projection="sphere"), "projection must be one of"),
    (lambda: losses.ssm_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), num_projections=0), "num_projections must be an integer >= 1"),
    (lambda: losses.qc_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), num_vectors=1.5), "num_vectors"),
    (lambda: losses.fd_ssm_loss(_identity, jnp.ones((2, 3)), jax.random.PRNGKey(0), eps=0.0), "eps must be finite and > 0"),
    (lambda: losses.esm_loss(_identity, jnp.ones((2, 3)), jnp.ones((5, 4)), 0.5), "data must have shape"),
    (lambda: losses.ism_loss(lambda x: x[:, :2], jnp.ones((2, 3))), "score_fn must return"),
    (lambda: losses.dlsm_loss(lambda x: x, _identity, jnp.ones((2, 3)), jnp.array([0.0, 1.0]), jax.random.PRNGKey(0), 0.5), "y must hold integer class labels"),
    (lambda: losses.dlsm_loss(lambda x: x[:, 0], _identity, jnp.ones((2, 3)), jnp.array([0, 1]), jax.random.PRNGKey(0), 0.5), "logits_fn must return"),
]


@pytest.mark.parametrize("call,message", BAD_CALLS)
def test_bad_arguments_raise_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()
