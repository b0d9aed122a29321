"""Heun's second-order sampler on EDM's noise levels (Karras, Aittala, Aila & Laine, NeurIPS
2022, arXiv:2206.00364, Algorithms 1 and 2).

The probability-flow ODE is solved for the scaled variable x̃ = x / c(t), whose noise level is
σ̃(t) = σ_t / c(t) (``sde.scaled_std``; EDM Eq. 4 with s(t) = c(t)): VE directly (c = 1, σ̃ = σ),
VP and sub-VP through their σ̃(t) and its inverse t(σ̃) (EDM Table 1). In σ̃ the ODE is
dx̃/dσ = (x̃ − D(x̃; σ))/σ with the denoiser D(x̃; σ) = x̃ + σ² c ∇ log p_t(c x̃) (EDM Eqs. 3 and 7),
so every evaluation is one call of the score model at x = c(t) x̃, t = t(σ).

Noise levels (EDM Eq. 5, Table 1): σ_i = (σ_max^{1/ρ} + i/(N − 1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ
for i < N and σ_N = 0, with σ_max = σ̃(T) and σ_min = σ̃(eps) (eps = 1e-5 for VE, 1e-3 for VP and
sub-VP: score_sde's sampling eps, EDM's ε_s). Step i (Algorithm 2): with churn
γ_i = min(S_churn/N, √2 − 1) for σ_i ∈ [S_min, S_max] (else 0), raise the level to
σ̂ = σ_i (1 + γ_i) by adding N(0, (σ̂² − σ_i²) S_noise² I), take an Euler step to σ_{i+1} and,
unless σ_{i+1} = 0, correct it with the trapezoidal (Heun) rule. NFE = 2N − 1. With S_churn = 0
this is Algorithm 1, deterministic. σ̂ may exceed σ_max; the score model is then called at
t(σ̂) > T, as EDM's networks are called above their largest training σ.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._batch import batch_times, per_example
from sgm_jax._validation import check_positive, check_positive_int
from sgm_jax.sampling._common import (Array, ScoreModel, check_range, checked_score_model,
                                      default_eps, finish, start)
from sgm_jax.sde import SDE


def edm_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0
               ) -> np.ndarray:
    """EDM's noise levels σ_0 = σ_max > … > σ_{N−1} = σ_min, σ_N = 0 (Eq. 5), float64 [N + 1]."""
    i = np.arange(num_steps, dtype=np.float64)
    fraction = i / (num_steps - 1) if num_steps > 1 else i
    sigmas = (sigma_max ** (1 / rho) + fraction * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(sigmas, 0.0)


def sigma_range(sde: SDE) -> tuple[float, float]:
    """(σ_min, σ_max) = (σ̃(eps), σ̃(T)) of the scaled probability-flow ODE (module docstring)."""
    with jax.ensure_compile_time_eval():
        ends = np.asarray(sde.scaled_std(jnp.asarray([default_eps(sde), sde.T], jnp.float32)))
    return float(ends[0]), float(ends[1])


def _churn(sigmas: np.ndarray, s_churn: float, s_min: float, s_max: float) -> np.ndarray:
    """γ_i of Algorithm 2 for the N levels σ_0 … σ_{N−1}."""
    num_steps = len(sigmas) - 1
    gamma = min(s_churn / num_steps, math.sqrt(2) - 1)
    inside = (sigmas[:-1] >= s_min) & (sigmas[:-1] <= s_max)
    return np.where(inside, gamma, 0.0)


def heun_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, num_steps: int = 18,
                 rho: float = 7.0, s_churn: float = 0.0, s_min: float = 0.0,
                 s_max: float = float("inf"), s_noise: float = 1.0, x_T: Array | None = None):
    """Karras et al. (2022) Algorithm 2 (Algorithm 1 when ``s_churn`` = 0) on the probability-flow
    ODE in σ̃ (module docstring), from x_T ~ prior (or ``x_T``) scaled to x̃ = x_T / c(T).
    ``num_steps`` N ≥ 1 levels, ``rho`` > 0, ``s_churn`` ≥ 0, ``s_min`` ≤ ``s_max`` (inf allowed),
    ``s_noise`` ≥ 0. Returns ``(samples, nfe)``, NFE = 2N − 1; the key draws the prior and, with
    churn, the added noise."""
    check_positive_int("num_steps", num_steps)
    check_positive("rho", rho)
    s_churn = check_range("s_churn", s_churn, 0.0, math.inf)
    s_min = check_range("s_min", s_min, 0.0, math.inf)
    s_max = check_range("s_max", s_max, s_min, math.inf)
    s_noise = check_range("s_noise", s_noise, 0.0, math.inf)
    score_model = checked_score_model(score_model)
    prior_key, key = jax.random.split(key)
    x_T = start(sde, shape, prior_key, x_T)
    sigmas = edm_sigmas(*sigma_range(sde), num_steps, float(rho))
    gammas = _churn(sigmas, s_churn, s_min, s_max)
    churn = bool(np.any(gammas > 0))
    dtype = x_T.dtype

    def slope(x, sigma):
        """dx̃/dσ = (x̃ − D(x̃; σ))/σ = −σ c s(c x̃, t(σ))."""
        t = sde.scaled_std_inverse(batch_times(sigma, x))
        c = per_example(sde.mean_coeff(t), x)
        return -sigma * c * score_model(c * x, t)

    def step(x, inputs, heun: bool):
        sigma, sigma_next, gamma, k = inputs
        sigma_hat = sigma * (1 + gamma)
        if churn:
            noise = jax.random.normal(k, x.shape, dtype)
            x = x + jnp.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise
        d = slope(x, sigma_hat)
        x_next = x + (sigma_next - sigma_hat) * d
        if heun:
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (d + slope(x_next, sigma_next))
        return x_next

    keys = jax.random.split(key, num_steps)
    levels = (jnp.asarray(sigmas[:-1], dtype), jnp.asarray(sigmas[1:], dtype),
              jnp.asarray(gammas, dtype), keys)
    x = x_T / sde.mean_coeff(jnp.asarray(sde.T, dtype))
    heun_levels = jax.tree.map(lambda a: a[:-1], levels)
    x, _ = jax.lax.scan(lambda x, inputs: (step(x, inputs, heun=True), None), x, heun_levels)
    x = step(x, jax.tree.map(lambda a: a[-1], levels), heun=False)  # σ_N = 0: Euler
    return finish("heun", x, 2 * num_steps - 1)
