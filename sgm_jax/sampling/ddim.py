"""DDIM (Song, Meng & Ermon, ICLR 2021, arXiv:2010.02502) on the kernels of the SDEs.

Each SDE's kernel is p_0t(x_t | x_0) = N(c_t x_0, σ_t² I) (``sde.mean_coeff``, ``sde.marginal_std``;
VP: c_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t)). From the score, ε̂ = −σ_t s(x_t, t) and
x̂_0 = (x_t − σ_t ε̂)/c_t = (x_t + σ_t² s)/c_t (DDIM Eq. 9, Tweedie's formula). One step from t
to an earlier time u is DDIM Eq. 12 with ᾱ replaced by the kernel of the SDE:

    x_u = c_u x̂_0 + sqrt(σ_u² − σ̂²) ε̂ + σ̂ z,
    σ̂ = η σ_u sqrt(1 − (c_t σ_u / (c_u σ_t))²)                          (DDIM Eq. 16)

η = 0 is the deterministic DDIM, η = 1 the ancestral step of the Markov chain with the same
marginals, i.e. DDPM's sampler with σ_t² = β̃_t (DDPM Eq. 7) for VP. For VE (c = 1), η = 0 is the
Euler step of the probability-flow ODE in σ, x_u = x_t + σ_t (σ_t − σ_u) s (Karras et al. 2022,
§3), and η = 1 is score_sde's ancestral VE step (``pc_sampler(predictor="ancestral")``) with the
noise levels σ(t_k) of the grid. The general kernel serves VE, VP and sub-VP alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sgm_jax._batch import batch_times, per_example
from sgm_jax._validation import check_positive_int
from sgm_jax.sampling._common import (Array, ScoreModel, check_range, checked_score_model,
                                      default_eps, finish, start)
from sgm_jax.sde import SDE


def time_grid(sde: SDE, num_steps: int, dtype) -> tuple[Array, Array, Array, Array, Array]:
    """The grid of DDIM and DPS: t_k = ``linspace(T, eps, num_steps)`` (eps =
    ``default_eps(sde)``), the kernel (c, σ) at each t_k, and the (c, σ) of the step's target,
    t_{k+1} or the clean level (c = 1, σ = 0) for the last step."""
    ts = jnp.linspace(sde.T, default_eps(sde), num_steps, dtype=dtype)
    c, std = sde.mean_coeff(ts), sde.marginal_std(ts)
    c_next = jnp.concatenate([c[1:], jnp.ones((1,), dtype)])
    std_next = jnp.concatenate([std[1:], jnp.zeros((1,), dtype)])
    return ts, c, std, c_next, std_next


def ddim_step(x: Array, score: Array, c, std, c_next, std_next, eta, noise: Array | None
              ) -> tuple[Array, Array]:
    """One step (module docstring) from the kernel (c, σ) of x to (c_next, σ_next), given the
    score s(x, t) [B, *event]; the coefficients are scalars or [B]. ``noise`` z is needed when
    η > 0. Returns (x_next, x̂_0)."""
    c, std, c_next, std_next = (per_example(a, x) for a in (c, std, c_next, std_next))
    x0 = (x + std**2 * score) / c
    ratio = jnp.clip(c * std_next / (c_next * std), 0.0, 1.0)
    sigma_hat = eta * std_next * jnp.sqrt(1 - ratio**2)
    x_next = c_next * x0 - jnp.sqrt(std_next**2 - sigma_hat**2) * std * score
    if noise is not None:
        x_next = x_next + sigma_hat * noise
    return x_next, x0


def ddim_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, num_steps: int = 50,
                 eta: float = 0.0, x_T: Array | None = None):
    """DDIM sampling (Song, Meng & Ermon 2021, Eqs. 12 and 16; module docstring) from x_T ~ prior
    (or ``x_T``) over the uniform grid t_k = ``linspace(T, eps, num_steps)`` (DDIM's "uniform"
    subsequence in continuous time; eps = 1e-3 for VP / sub-VP, 1e-5 for VE), the last step
    landing on the clean level (c = 1, σ = 0), i.e. returning x̂_0 of the last score. ``eta`` in
    [0, 1]: 0 deterministic (the key only draws the prior), 1 the ancestral chain.
    Returns ``(samples, nfe)``, NFE = ``num_steps``."""
    check_positive_int("num_steps", num_steps)
    eta = check_range("eta", eta, 0.0, 1.0)
    score_model = checked_score_model(score_model)
    prior_key, key = jax.random.split(key)
    x = start(sde, shape, prior_key, x_T)
    ts, c, std, c_next, std_next = time_grid(sde, num_steps, x.dtype)

    def step(x, inputs):
        t, k, c, std, c_next, std_next = inputs
        noise = jax.random.normal(k, x.shape, x.dtype) if eta > 0 else None
        return ddim_step(x, score_model(x, batch_times(t, x)), c, std, c_next, std_next, eta,
                         noise)[0], None

    inputs = (ts, jax.random.split(key, num_steps), c, std, c_next, std_next)
    x, _ = jax.lax.scan(step, x, inputs)
    return finish("ddim", x, num_steps)
