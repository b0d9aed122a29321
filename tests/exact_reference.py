"""Small random score fields and exact references computed independently of sgm_jax."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Z_THRESHOLD = 5.0  # a Monte-Carlo mean is accepted within 5 standard errors (two-sided p ≈ 6e-7)


def init_mlp(key, event_shape, hidden=16, scale=1.0, dtype=jnp.float32):
    """Parameters of a one-hidden-layer tanh network R^D -> R^D."""
    dim = math.prod(event_shape)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "w1": scale * jax.random.normal(k1, (dim, hidden), dtype) / math.sqrt(dim),
        "b1": 0.5 * jax.random.normal(k2, (hidden,), dtype),
        "w2": scale * jax.random.normal(k3, (hidden, dim), dtype) / math.sqrt(hidden),
        "b2": 0.1 * jax.random.normal(k4, (dim,), dtype),
    }


def mlp_score(params, x):
    """A generic (non-conservative) batched score field s(x) = W2 tanh(W1ᵀx + b1) + b2."""
    flat = x.reshape(x.shape[0], -1)
    out = jnp.tanh(flat @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    return out.reshape(x.shape)


def energy_score(params, x):
    """A conservative field: s = −∇ₓ E with E(x) = Σ softplus(W1ᵀx + b1)·w2[:, 0] + ½‖x‖²."""

    def energy(y):
        flat = y.reshape(y.shape[0], -1)
        hidden = jax.nn.softplus(flat @ params["w1"] + params["b1"])
        return jnp.sum(hidden @ params["w2"][:, 0]) + 0.5 * jnp.sum(flat**2)

    return -jax.grad(energy)(x)


def per_example_jacobian(score_fn, x):
    """[B, D, D] Jacobians by jax.jacfwd on each example separately."""
    dim = math.prod(x.shape[1:])

    def single(xi):
        return score_fn(xi[None])[0].reshape(-1)

    return jax.vmap(jax.jacfwd(single))(x).reshape(x.shape[0], dim, dim)


def exact_ism(score_fn, x):
    jac = per_example_jacobian(score_fn, x)
    s = score_fn(x).reshape(x.shape[0], -1)
    return 0.5 * jnp.sum(s**2, axis=1) + jnp.trace(jac, axis1=1, axis2=2)


def exact_asym(score_fn, x):
    jac = per_example_jacobian(score_fn, x)
    return 0.5 * jnp.sum((jac - jnp.swapaxes(jac, 1, 2)) ** 2, axis=(1, 2))


def mean_and_se(samples, axis=0):
    """Monte-Carlo mean and its standard error along ``axis`` (float64 NumPy)."""
    samples = np.asarray(samples, dtype=np.float64)
    n = samples.shape[axis]
    return samples.mean(axis=axis), samples.std(axis=axis, ddof=1) / math.sqrt(n)


def assert_unbiased(samples, exact, rounding=1e-5):
    """Assert that the mean of ``samples`` [N, ...] matches ``exact`` within Z_THRESHOLD se.

    ``rounding`` (relative) admits float32 rounding of the exact value itself, so a zero-variance
    estimator must still be exact to rounding.
    """
    mean, se = mean_and_se(samples)
    exact = np.asarray(exact, dtype=np.float64)
    bound = Z_THRESHOLD * se + rounding * (1.0 + np.abs(exact))
    worst = np.max(np.abs(mean - exact) - bound)
    assert worst <= 0, f"mean {mean} vs exact {exact}: excess {worst} over {Z_THRESHOLD} se ({se})"


def gauss_hermite_expectation(fn, dim, order=40):
    """E_{z~N(0, I_dim)}[fn(z)] by tensor Gauss–Hermite quadrature (fn: [N, dim] -> [N, ...])."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    weights = weights / weights.sum()
    grids = np.meshgrid(*([nodes] * dim), indexing="ij")
    points = np.stack([g.reshape(-1) for g in grids], axis=1)
    w = np.prod(np.stack(np.meshgrid(*([weights] * dim), indexing="ij")).reshape(dim, -1), axis=0)
    values = np.asarray(fn(jnp.asarray(points)), dtype=np.float64)
    return np.tensordot(w, values, axes=(0, 0))
