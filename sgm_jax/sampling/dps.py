"""Diffusion posterior sampling (DPS; Chung, Kim, Mccann, Klasky & Ye, ICLR 2023,
arXiv:2209.14687, Algorithm 1) for y = A(x) + n, n ~ N(0, σ_y² I), A linear.

Bayes' rule gives ∇ log p_t(x_t | y) = ∇ log p_t(x_t) + ∇ log p_t(y | x_t); DPS approximates the
second term by ∇ log p(y | x̂_0(x_t)) with the posterior mean x̂_0 = (x_t + σ_t² s(x_t, t))/c_t
(Tweedie; DPS Eqs. 10–16), i.e. by −ρ ∇_{x_t} ‖y − A(x̂_0)‖², differentiating through the score
model. Each step of Algorithm 1 is the ancestral step of the unconditional chain (DDPM's, here
:func:`sgm_jax.sampling.ddim.ddim_step` with η = 1 on the SDE's kernel, so VE, VP and sub-VP alike)
followed by the guidance step

    x_{i−1} = x'_{i−1} − ζ_i ∇_{x_i} ‖y − A(x̂_0)‖²,    ζ_i = ζ / ‖y − A(x̂_0)‖    (DPS App. C.2)

per example. Deviation: the normaliser ‖y − A(x̂_0)‖ is floored at σ_y sqrt(M), the expected
norm of the noise (M entries of y): above it the step is the paper's, below it a smaller
residual says nothing more about x, and the paper's rule would divide by a vanishing residual in
noiseless problems. (The official code steps by ``scale`` · ∇‖y − A(x̂_0)‖, which is this rule
with ``scale`` = 2ζ.) The grid is DDIM's (``ddim.time_grid``), the last step landing on the
clean level; the guided x after it is returned.

DPS is an approximation: even with the exact score its samples are not those of p(x | y)
(``tests/test_dps.py`` measures the gap on a Gaussian inverse problem).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from sgm_jax._batch import batch_times, per_example, sq_norm
from sgm_jax._validation import check_batched, check_positive_int
from sgm_jax.sampling._common import (Array, ScoreModel, check_range, checked_score_model, finish,
                                      start)
from sgm_jax.sampling.ddim import ddim_step, time_grid
from sgm_jax.sde import SDE


def dps_sampler(sde: SDE, score_model: ScoreModel, y: Array, forward_op: Callable[[Array], Array],
                shape, key: Array, noise_std: float, zeta: float = 1.0, num_steps: int = 1000,
                x_T: Array | None = None):
    """Diffusion posterior sampling (module docstring) of x [``shape``] given measurements ``y``
    [B, *measurement] = ``forward_op``(x) + n, n ~ N(0, ``noise_std``² I); ``forward_op`` is a
    pure, linear JAX function [B, *event] -> [B, *measurement] whose examples do not interact.
    ``zeta`` ≥ 0 is ζ (0: unconditional ancestral sampling), ``num_steps`` the grid's size.
    Returns ``(samples, nfe)``, NFE = ``num_steps`` (each step also back-propagates once through
    the score model, about one more forward pass of cost)."""
    check_positive_int("num_steps", num_steps)
    noise_std = check_range("noise_std", noise_std, 0.0, math.inf)
    zeta = check_range("zeta", zeta, 0.0, math.inf)
    check_batched("y", y)
    score_model = checked_score_model(score_model)
    prior_key, key = jax.random.split(key)
    x = start(sde, shape, prior_key, x_T)
    measured = jax.eval_shape(forward_op, x)
    if measured.shape != jnp.shape(y):
        raise ValueError(f"y must have the shape of forward_op(x), {measured.shape}; got "
                         f"{jnp.shape(y)}.")
    floor = noise_std * math.sqrt(math.prod(measured.shape[1:]))
    ts, c, std, c_next, std_next = time_grid(sde, num_steps, x.dtype)

    def step(x, inputs):
        t, k, c, std, c_next, std_next = inputs

        def residual(x):
            score = score_model(x, batch_times(t, x))
            r = y - forward_op((x + std**2 * score) / c)
            return jnp.sum(r**2), (score, jnp.sqrt(sq_norm(r)))

        grad, (score, norm) = jax.grad(residual, has_aux=True)(x)
        noise = jax.random.normal(k, x.shape, x.dtype)
        x_next, _ = ddim_step(x, score, c, std, c_next, std_next, 1.0, noise)
        scale = jnp.maximum(norm, floor)
        zeta_i = jnp.where(scale > 0, zeta / jnp.where(scale > 0, scale, 1.0), 0.0)
        return x_next - per_example(zeta_i, x) * grad, None

    inputs = (ts, jax.random.split(key, num_steps), c, std, c_next, std_next)
    x, _ = jax.lax.scan(step, x, inputs)
    return finish("dps", x, num_steps)
