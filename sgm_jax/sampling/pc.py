"""Predictor–corrector sampling (score_sde's ``get_pc_sampler``; Song et al. 2021, Alg. 1–3):
the predictors and correctors of score_sde, and the PC loop, which the imputation samplers
(:mod:`sgm_jax.sampling.inpainting`) run with a step that imposes the known part."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sgm_jax._batch import batch_times, per_example, sq_norm
from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.sampling._common import (Array, ScoreModel, check_eps, checked_score_model, finish,
                                      start)
from sgm_jax.sde import SDE, VESDE, VPSDE, subVPSDE

#: ``impose(x, x_mean, c, std, key) -> (x, x_mean)``: called after every corrector and predictor
#: update with the kernel's (c, σ) of the time the chain has reached, e.g. to put the known
#: pixels at that noise level.
Impose = Callable[[Array, Array, Array, Array, Array], tuple[Array, Array]]


class Update(NamedTuple):
    """A registry entry: the pure update function and its score evaluations per call
    (for correctors: per inner step)."""

    fn: Callable
    nfe: int


def _euler_maruyama(sde, score_model, x, t, key, probability_flow):
    """x_mean = x − f_rev(x, t) T/N; x = x_mean + g_rev(t) sqrt(T/N) z (dt = T/N as in score_sde,
    not the spacing (T − eps)/(N − 1) of the time grid)."""
    dt = sde.T / sde.N
    drift, diffusion = sde.reverse(score_model, probability_flow).sde(x, t)
    x_mean = x - drift * dt
    z = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + per_example(diffusion, x) * math.sqrt(dt) * z, x_mean


def _reverse_diffusion(sde, score_model, x, t, key, probability_flow):
    """x_mean = x − f + G² s, x = x_mean + G z, (f, G) = ``sde.discretize`` (SMLD / DDPM / EM)."""
    rev_f, rev_g = sde.reverse(score_model, probability_flow).discretize(x, t)
    x_mean = x - rev_f
    return x_mean + per_example(rev_g, x) * jax.random.normal(key, x.shape, x.dtype), x_mean


def _ancestral(sde, score_model, x, t, key, probability_flow):
    """score_sde's ``AncestralSamplingPredictor`` (Song et al. 2021, App. F, Eqs. 46–47) on the
    discrete chain of step i of t:

      VE (SMLD): x_mean = x + (σ_i² − σ_{i−1}²) s,  std = sqrt(σ_{i−1}² (σ_i² − σ_{i−1}²) / σ_i²);
      VP (DDPM): x_mean = (x + β_i s) / sqrt(1 − β_i),  std = sqrt(β_i)  (DDPM's σ_i² = β_i);

    x = x_mean + std z. score_sde defines it for VE and VP only (``probability_flow`` is
    ignored, as there)."""
    del probability_flow
    score = score_model(x, t)
    if isinstance(sde, VESDE):
        sigma, prev = sde.discrete_sigmas(t)
        x_mean = x + per_example(sigma**2 - prev**2, x) * score
        std = jnp.sqrt(prev**2 * (sigma**2 - prev**2) / sigma**2)
    else:
        beta = sde.discrete_beta(t)
        x_mean = (x + per_example(beta, x) * score) / per_example(jnp.sqrt(1 - beta), x)
        std = jnp.sqrt(beta)
    return x_mean + per_example(std, x) * jax.random.normal(key, x.shape, x.dtype), x_mean


def _check_ancestral(sde: SDE) -> None:
    if not isinstance(sde, (VESDE, VPSDE)):
        raise ValueError(f"the ancestral predictor is defined for the VE and VP SDEs (score_sde's "
                         f"SMLD and DDPM chains); got {type(sde).__name__}. Allowed predictors "
                         f"for it: 'euler_maruyama', 'reverse_diffusion', 'none'.")
    if isinstance(sde, VPSDE):
        sde.check_ddpm_steps()


def _no_predictor(sde, score_model, x, t, key, probability_flow):
    return x, x


def _langevin_alpha(sde: SDE, t: Array) -> Array:
    """The α_i of score_sde's Langevin and ALD correctors: 1 for VE; 1 − β_i for VP, β_i the
    DDPM betas of the discrete chain (``discrete_beta``: score_sde's ``VPSDE.alphas``). For sub-VP
    this library uses the same 1 − β_i: that is an extension, score_sde has none (its corrector
    tests for sub-VP but reads an ``alphas`` table that only ``VPSDE`` defines)."""
    if not isinstance(sde, (VPSDE, subVPSDE)):
        return jnp.ones_like(t)
    return 1 - sde.discrete_beta(t)


def _corrector_loop(step_size_fn, score_model, x, t, key, n_steps):
    def step(carry, k):
        x, _ = carry
        grad = score_model(x, t)
        z = jax.random.normal(k, x.shape, x.dtype)
        size = step_size_fn(grad, z)
        x_mean = x + size * grad
        return (x_mean + jnp.sqrt(2 * size) * z, x_mean), None

    return jax.lax.scan(step, (x, x), jax.random.split(key, n_steps))[0]


def _langevin_corrector(sde, score_model, x, t, key, snr, n_steps):
    """score_sde's LangevinCorrector: ε = 2 α (snr ‖z‖ / ‖s‖)², x ← x + ε s + sqrt(2ε) z, the
    norms being per-example L2 norms averaged over the batch (so ε is shared by the batch)."""
    alpha = per_example(_langevin_alpha(sde, t), x)

    def size(grad, z):
        return 2 * alpha * (snr * jnp.mean(jnp.sqrt(sq_norm(z))) / jnp.mean(jnp.sqrt(sq_norm(grad)))) ** 2

    return _corrector_loop(size, score_model, x, t, key, n_steps)


def _ald_corrector(sde, score_model, x, t, key, snr, n_steps):
    """score_sde's AnnealedLangevinDynamics corrector: ε = 2 α (snr σ_t)², σ_t the kernel std."""
    size_t = per_example(2 * _langevin_alpha(sde, t) * (snr * sde.marginal_std(t)) ** 2, x)
    return _corrector_loop(lambda g, z: size_t, score_model, x, t, key, n_steps)


def _no_corrector(sde, score_model, x, t, key, snr, n_steps):
    return x, x


#: predictor(sde, score_model, x, t [B], key, probability_flow) -> (x, x_mean); add entries to extend.
PREDICTORS: dict[str, Update] = {
    "euler_maruyama": Update(_euler_maruyama, 1),
    "reverse_diffusion": Update(_reverse_diffusion, 1),
    "ancestral": Update(_ancestral, 1),
    "none": Update(_no_predictor, 0),
}
#: corrector(sde, score_model, x, t [B], key, snr, n_steps) -> (x, x_mean); add entries to extend.
CORRECTORS: dict[str, Update] = {
    "langevin": Update(_langevin_corrector, 1),
    "ald": Update(_ald_corrector, 1),
    "none": Update(_no_corrector, 0),
}


def denoise_step(sde: SDE, score_model: ScoreModel, x: Array, eps) -> Array:
    """score_sde's final noise removal: the x_mean of one reverse-diffusion step at t = eps."""
    return _reverse_diffusion(sde, score_model, x, batch_times(eps, x), jax.random.PRNGKey(0), False)[1]


def check_pc_arguments(sde: SDE, predictor: str, corrector: str, n_steps: int, eps) -> None:
    """``ValueError`` for a predictor or corrector name outside the registries, an ``n_steps``
    below 1, an ``eps`` outside (0, T), or the ancestral predictor on an SDE without its chain."""
    check_choice("predictor", predictor, tuple(PREDICTORS))
    check_choice("corrector", corrector, tuple(CORRECTORS))
    check_positive_int("n_steps", n_steps)
    check_eps(sde, eps)
    if predictor == "ancestral":
        _check_ancestral(sde)


def pc_loop(sde: SDE, score_model: ScoreModel, x: Array, key: Array, predictor: str,
            corrector: str, snr: float, n_steps: int, probability_flow: bool, eps,
            impose: Impose | None = None) -> tuple[Array, Array]:
    """The PC iteration from x at T: for each t_k of ``linspace(T, eps, N)`` a corrector update,
    then a predictor update (score_sde's order), in a ``lax.scan``; ``impose`` (when given) runs
    after each, with the kernel's (c, σ) of t_k after the corrector and of t_{k+1} after the
    predictor (the clean level c = 1, σ = 0 after the last one). Returns (x, x_mean)."""
    pred, corr = PREDICTORS[predictor], CORRECTORS[corrector]
    ts = jnp.linspace(sde.T, eps, sde.N, dtype=x.dtype)
    c, std = sde.mean_coeff(ts), sde.marginal_std(ts)
    c_next = jnp.concatenate([c[1:], jnp.ones((1,), x.dtype)])
    std_next = jnp.concatenate([std[1:], jnp.zeros((1,), x.dtype)])

    def step(carry, inputs):
        t, k, levels = inputs
        corrector_key, predictor_key = jax.random.split(k)
        t = batch_times(t, carry[0])
        x, x_mean = corr.fn(sde, score_model, carry[0], t, corrector_key, snr, n_steps)
        if impose is not None:
            x, x_mean = impose(x, x_mean, levels[0], levels[1], jax.random.fold_in(k, 2))
        x, x_mean = pred.fn(sde, score_model, x, t, predictor_key, probability_flow)
        if impose is not None:
            x, x_mean = impose(x, x_mean, levels[2], levels[3], jax.random.fold_in(k, 3))
        return (x, x_mean), None

    inputs = (ts, jax.random.split(key, sde.N), (c, std, c_next, std_next))
    return jax.lax.scan(step, (x, x), inputs)[0]


def pc_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, predictor: str = "reverse_diffusion",
               corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
               probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3,
               x_T: Array | None = None):
    """Predictor–corrector sampling (score_sde ``get_pc_sampler``): x_T ~ prior (or the given
    ``x_T``), then :func:`pc_loop` over the N = ``sde.N`` times of ``linspace(T, eps, N)``.
    Returns ``(x_mean if denoise else x, nfe)``: with ``denoise`` the last predictor step is taken
    without its noise. NFE = N (p + n_steps c). ``predictor="ancestral"`` is score_sde's ancestral
    sampling predictor (VE and VP)."""
    check_pc_arguments(sde, predictor, corrector, n_steps, eps)
    prior_key, key = jax.random.split(key)
    x = start(sde, shape, prior_key, x_T)
    x, x_mean = pc_loop(sde, checked_score_model(score_model), x, key, predictor, corrector, snr,
                        n_steps, probability_flow, eps)
    nfe = sde.N * (PREDICTORS[predictor].nfe + n_steps * CORRECTORS[corrector].nfe)
    return finish("pc", x_mean if denoise else x, nfe)
