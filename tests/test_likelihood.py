"""Tests of sgm_jax.likelihood against closed-form Gaussian flows."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_oracle import Gaussian

from sgm_jax.likelihood import (bits_per_dim, dequantization_offset, log_likelihood,
                                uniform_dequantize)
from sgm_jax.sde import VESDE, VPSDE


CASES = [(VESDE(), 2), (VPSDE(), 4)]


@pytest.mark.parametrize("sde,dim", CASES, ids=[f"{type(s).__name__}-{d}" for s, d in CASES])
def test_exact_divergence_matches_gaussian_flow(sde, dim):
    """log p_eps(x) and z = x(T) of the exact flow, in float64 with tight tolerances."""
    with jax.enable_x64(True):
        g = Gaussian(sde, (dim,), seed=dim)
        x = g.sample(dim, 6, jnp.float64)
        logp, z, nfe = log_likelihood(sde, g.score, x, rtol=1e-8, atol=1e-8)
        want_logp, want_z = g.expected(x, 1e-5)
        assert logp.shape == (6,) and z.shape == x.shape and logp.dtype == jnp.float64
        np.testing.assert_allclose(z, want_z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logp, want_logp, rtol=0, atol=1e-5)
        assert int(nfe) > 0


def test_nfe_counts_every_evaluation_grows_with_accuracy_float32():
    """On the QCSGM toy SDE in float32 (exact divergence): nfe equals the number of score
    evaluations, grows as the tolerances shrink, and the result is accurate at both."""
    sde = VESDE(sigma_min=0.1, sigma_max=3.0)
    g = Gaussian(sde, (4,), seed=4)
    x = g.sample(4, 8)
    want_logp = g.expected(x, 1e-5)[0]
    calls = []

    def counted_score(y, t):
        jax.debug.callback(lambda: calls.append(1))
        return g.score(y, t)

    # Tolerances may be traced: one compiled function serves both.
    fn = jax.jit(functools.partial(log_likelihood, sde, counted_score, solver="tsit5"))
    nfes = []
    for tol, err in ((1e-3, 3e-2), (1e-6, 2e-3)):
        calls.clear()
        logp, _, nfe = fn(x, rtol=jnp.float32(tol), atol=jnp.float32(tol))
        jax.effects_barrier()
        assert int(nfe) == len(calls) > 0
        np.testing.assert_allclose(logp, want_logp, atol=err)
        nfes.append(int(nfe))
    assert nfes[1] > nfes[0]


@pytest.mark.parametrize("projection,num_vectors,sde,dim",
                         [("rademacher", 1, VPSDE(), 2), ("gaussian", 3, VESDE(), 4)],
                         ids=["rademacher-VP-2", "gaussian3-VE-4"])
def test_hutchinson_is_unbiased(projection, num_vectors, sde, dim):
    """One point repeated B times: each copy gets its own fixed probes, so the copies are B
    independent estimates of the same integral; their mean must match the exact-divergence
    result (the closed form, which the exact divergence reproduces: tests above)."""
    batch = 256
    g = Gaussian(sde, (dim,), seed=7)
    x = jnp.repeat(g.sample(0, 1), batch, axis=0)
    exact = g.expected(x[:1], 1e-5)[0][0]
    est, _, _ = log_likelihood(sde, g.score, x, jax.random.PRNGKey(1), divergence="hutchinson",
                               projection=projection, num_vectors=num_vectors)
    est = np.asarray(est, np.float64)
    se = est.std(ddof=1) / math.sqrt(batch)
    assert est.std() > 1e-2  # a non-isotropic Jacobian: the estimator really has variance
    assert abs(est.mean() - exact) < 4 * se + 2e-3, (est.mean(), exact, se)


def test_image_input_hutchinson_under_jit():
    """Isotropic data: J ∝ I, so a Rademacher probe gives the exact trace (zero variance)."""
    sde = VESDE()
    g = Gaussian(sde, (4, 4, 1), seed=1, isotropic=True)
    x = g.sample(2, 3)
    fn = jax.jit(functools.partial(log_likelihood, sde, g.score, divergence="hutchinson",
                                   num_vectors=2))
    logp, z, nfe = fn(x, jax.random.PRNGKey(5))
    assert logp.shape == (3,) and z.shape == x.shape and nfe.dtype == jnp.int32
    want_logp, want_z = g.expected(x, 1e-5)
    np.testing.assert_allclose(logp, want_logp, rtol=1e-4, atol=5e-3)
    np.testing.assert_allclose(z, want_z, rtol=1e-3, atol=1e-3)
    bpd = bits_per_dim(logp, x.shape[1:], offset=dequantization_offset(centered=True))
    np.testing.assert_allclose(bpd, -want_logp / (16 * np.log(2)) + 7, rtol=1e-4)


@pytest.mark.parametrize("centered", [False, True])
def test_bits_per_dim_of_a_model_with_a_known_density(centered):
    """8-bit images n, dequantised to v = n + u and scaled to y = a v/256 + b, under the VP flow of
    the exact score of N(0, s0² I): the model density of y is the prior pushed back by that linear
    flow, log N(z; 0, I) + (D/2) log(var_T/var_eps), z = y sqrt(var_T/var_eps). Its density in
    integer units is p_y (a/256)^D, so bits/dim = −log2 of that over D, with no offset formula."""
    sde, s0, event = VPSDE(), 0.3, (2, 3, 1)
    dim = math.prod(event)
    n = np.random.default_rng(0).integers(0, 256, size=(16, *event)).astype(np.uint8)
    y = uniform_dequantize(jax.random.PRNGKey(1), n, centered=centered)

    def coeffs(t, xp=np):  # c(t) and σ_t² of the VP SDE, written out
        m = -0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
        return xp.exp(m), 1 - xp.exp(2 * m)

    def score(x, t):
        c, var = coeffs(t, jnp)
        return -x / (c**2 * s0**2 + var)[:, None, None, None]

    logp, _, _ = jax.jit(functools.partial(log_likelihood, sde, score, rtol=1e-6, atol=1e-6))(y)
    bpd = bits_per_dim(logp, event, offset=dequantization_offset(centered=centered))

    a, b = (2.0, -1.0) if centered else (1.0, 0.0)
    v = (np.asarray(y, np.float64) - b) * 256 / a
    assert np.all((v >= n) & (v < n.astype(np.float64) + 1))
    flat = (a * v / 256 + b).reshape(16, dim)
    (c0, q0), (c1, q1) = coeffs(1e-5), coeffs(1.0)
    var0, var1 = c0**2 * s0**2 + q0, c1**2 * s0**2 + q1
    z = flat * np.sqrt(var1 / var0)
    log_p_y = -0.5 * np.sum(np.log(2 * np.pi) + z**2, axis=1) + 0.5 * dim * np.log(var1 / var0)
    log_p_v = log_p_y + dim * np.log(a / 256)
    np.testing.assert_allclose(np.asarray(bpd), -log_p_v / (dim * np.log(2)), rtol=2e-5)


def test_bits_per_dim_by_hand():
    logp = jnp.array([-100.0, 20.0])
    np.testing.assert_allclose(bits_per_dim(logp, (4, 4, 1)), [100 / (16 * math.log(2)),
                                                                -20 / (16 * math.log(2))],
                               rtol=1e-6)
    np.testing.assert_allclose(bits_per_dim(logp, 3072, offset=8.0),
                               [100 / (3072 * math.log(2)) + 8, -20 / (3072 * math.log(2)) + 8],
                               rtol=1e-6)
    assert dequantization_offset() == 8.0 and dequantization_offset(centered=True) == 7.0
    assert dequantization_offset(num_bits=5) == 5.0


def test_uniform_dequantize():
    n = jnp.arange(256, dtype=jnp.uint8).reshape(4, 8, 8, 1)
    key = jax.random.PRNGKey(0)
    x = uniform_dequantize(key, n)
    assert x.dtype == jnp.float32 and x.shape == n.shape
    np.testing.assert_array_equal(np.floor(np.asarray(x, np.float64) * 256), np.asarray(n))
    np.testing.assert_array_equal(uniform_dequantize(key, n / 255.0), x)  # score_sde's [0,1] floats
    np.testing.assert_allclose(uniform_dequantize(key, n, centered=True), 2 * x - 1, atol=1e-6)
    u = np.asarray(x, np.float64) * 256 - np.asarray(n)
    assert 0.4 < u.mean() < 0.6 and u.min() >= 0 and u.max() < 1


@pytest.mark.parametrize("kwargs,match", [
    ({"divergence": "trace"}, "divergence.*'exact', 'hutchinson'.*'trace'"),
    ({"projection": "sphere"}, "projection.*'rademacher', 'gaussian'.*'sphere'"),
    ({"solver": "rk4"}, "solver.*'dopri5', 'tsit5'.*'rk4'"),
    ({"num_vectors": 0}, "num_vectors"),
    ({"num_vectors": 1.5}, "num_vectors"),
    ({"rtol": 0.0}, "rtol"),
    ({"atol": -1.0}, "atol"),
    ({"atol": float("nan")}, "atol"),
    ({"eps": 1.0}, "eps"),
    ({"eps": jnp.array([1e-3, 1e-3])}, "eps"),
    ({"max_steps": 0}, "max_steps"),
    ({"divergence": "hutchinson"}, "key"),
])
def test_bad_arguments_raise(kwargs, match):
    sde = VPSDE()
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, lambda x, t: -x, jnp.ones((2, 3)), **kwargs)


def test_bad_inputs_raise():
    sde, score = VPSDE(), (lambda x, t: -x)
    with pytest.raises(ValueError, match="batched"):
        log_likelihood(sde, score, jnp.ones((3,)))
    with pytest.raises(ValueError, match="floating"):
        log_likelihood(sde, score, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(sde, lambda x, t: x[:, :1], jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="event_shape"):
        bits_per_dim(jnp.zeros(2), (0,))
