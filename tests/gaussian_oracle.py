"""Gaussian data N(μ, Σ0) with a non-diagonal Σ0: every quantity a sampler or the likelihood
targets is known in closed form (float64 NumPy, independent of sgm_jax but for the SDE's
kernel coefficients c(t), σ_t, which tests/test_sde.py checks)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback


class Gaussian:
    """Data N(μ, Σ0) on a flattened event; every marginal is N(c μ, Σ_t = c² Σ0 + σ_t² I), whose
    covariances share the eigenvectors U of Σ0, so the probability flow from t to T is the affine map
    x ↦ c_T μ + U diag(sqrt(λ_T / λ_t)) Uᵀ (x − c_t μ)."""

    def __init__(self, sde, event_shape, seed=0, isotropic=False):
        rng = np.random.default_rng(seed)
        dim = math.prod(event_shape)
        self.sde, self.event_shape, self.dim = sde, event_shape, dim
        self.mu = rng.normal(size=dim)
        a = rng.normal(size=(dim, dim))
        self.cov = 0.2 * np.eye(dim) if isotropic else a @ a.T / dim + 0.1 * np.eye(dim)
        self.lam, self.u = np.linalg.eigh(self.cov)
        self.calls = 0  # score evaluations at run time (see ``counted_score``)

    def _coeffs(self, t):
        t = jnp.asarray(t)
        return self.sde.mean_coeff(t), self.sde.marginal_std(t)

    def score(self, x, t):
        c, std = self._coeffs(t)
        flat = x.reshape(x.shape[0], -1)
        u, lam, mu = (jnp.asarray(a, x.dtype) for a in (self.u, self.lam, self.mu))
        diff = (flat - c[:, None] * mu) @ u
        var = c[:, None] ** 2 * lam + std[:, None] ** 2
        return (-(diff / var) @ u.T).reshape(x.shape)

    def _tick(self, t):
        self.calls += 1
        return t

    def counted_score(self, x, t):
        """``score`` that counts its calls at run time (once per call of the compiled program,
        whatever the tracing)."""
        t = io_callback(self._tick, jax.ShapeDtypeStruct(t.shape, t.dtype), t)
        return self.score(x, t)

    def _np(self, t):
        c, std = (float(v[0]) for v in self._coeffs(np.array([t], np.float64)))
        return c, c**2 * self.lam + std**2

    def log_density(self, flat, t):
        c, var = self._np(t)
        proj = (flat - c * self.mu) @ self.u
        return -0.5 * np.sum(np.log(2 * np.pi * var) + proj**2 / var, axis=-1)

    def expected(self, x, eps):
        """(logp, z) of the exact flow: logp = prior_logp(z) + log p_eps(x) − log p_T(z)."""
        flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
        (c0, var0), (c1, var1) = self._np(eps), self._np(self.sde.T)
        z = c1 * self.mu + (((flat - c0 * self.mu) @ self.u) * np.sqrt(var1 / var0)) @ self.u.T
        var_prior = self.sde.prior_std**2
        prior = -0.5 * (self.mu.size * np.log(2 * np.pi * var_prior) + np.sum(z**2, -1) / var_prior)
        logp = prior + self.log_density(flat, eps) - self.log_density(z, self.sde.T)
        return logp, z.reshape(x.shape)

    def sample(self, seed, batch, dtype=jnp.float32):
        """``batch`` points of the data distribution (NumPy: no PRNG kernels to compile)."""
        normal = np.random.default_rng(seed).normal(size=(batch, self.mu.size))
        flat = self.mu + (normal * np.sqrt(self.lam)) @ self.u.T
        return jnp.asarray(flat.reshape((batch,) + self.event_shape), dtype)

    # ------------------------------------------------------------------ scaled flow, posteriors

    def ideal_map(self, sigma_from, sigma_to):
        """(K, b) of the exact deterministic sampler in the scaled variable x̃ = x/c: the
        probability flow from noise level σ̃ = ``sigma_from`` to ``sigma_to`` (x̃ ~ N(μ, Σ0 + σ̃²))
        followed by the exact denoiser D(x̃; σ̃_to) = μ + Σ0 (Σ0 + σ̃_to²)⁻¹ (x̃ − μ):
        output = K x̃ + b."""
        flow = self.u @ np.diag(np.sqrt((self.lam + sigma_to**2) / (self.lam + sigma_from**2))) @ self.u.T
        denoise = self.u @ np.diag(self.lam / (self.lam + sigma_to**2)) @ self.u.T
        k = denoise @ flow
        return k, self.mu - k @ self.mu

    def conditional(self, q, known, y):
        """The law of the unknown latent coordinates of u = Q x given u[known] = y (Q orthogonal
        [D, D], ``known`` a boolean [D]): (mean [n_u], cov [n_u, n_u])."""
        mu, cov = q @ self.mu, q @ self.cov @ q.T
        k, o = known, ~known
        gain = cov[np.ix_(o, k)] @ np.linalg.inv(cov[np.ix_(k, k)])
        return mu[o] + gain @ (y - mu[k]), cov[np.ix_(o, o)] - gain @ cov[np.ix_(k, o)]

    def posterior(self, a, y, noise_std):
        """N(μ_post, Σ_post) of x given y = A x + n, n ~ N(0, noise_std² I) (A [M, D])."""
        gain = self.cov @ a.T @ np.linalg.inv(a @ self.cov @ a.T + noise_std**2 * np.eye(len(a)))
        return self.mu + gain @ (y - a @ self.mu), self.cov - gain @ a @ self.cov


def moments(x):
    """Sample mean [D] and covariance [D, D] of x [B, *event] (float64), with their standard
    errors for Gaussian samples: se(mean_j) = sqrt(C_jj/B), se(C_jk) = sqrt((C_jj C_kk + C_jk²)/B)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(flat)
    mean, cov = flat.mean(0), np.cov(flat, rowvar=False)
    var = np.diag(cov)
    return mean, cov, np.sqrt(var / n), np.sqrt((np.outer(var, var) + cov**2) / n)
