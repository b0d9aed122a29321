"""Langevin dynamics (QCSGM Eq. 7) and NCSN's annealed Langevin dynamics.

:func:`langevin_dynamics` takes a score *function* ``score_fn(x)`` (DESIGN.md §3.1; a
time-conditional model is closed over its t), :func:`annealed_langevin_dynamics` a
noise-conditional ``score_model(x, c)`` whose conditioning c [B] is explicit (σ_i, or the time
t_i of each level). Their registry entries take ``score_model(x, t)`` like every other sampler:
"langevin" calls it at the fixed time ``t``, "annealed_langevin" at ``conditioning[i]`` (default
σ_i); they start from N(0, init_std²) and N(0, σ_1²) instead of an SDE's prior.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sgm_jax._batch import batch_times
from sgm_jax._validation import check_positive, check_positive_int
from sgm_jax.sampling._common import check_shape, finish
from sgm_jax.types import Array, ScoreFn, ScoreModel


def _langevin_chain(score_at, x0, key, alphas, conds, noise, return_trajectory):
    """x ← x + α_k s(x, c_k) + sqrt(2 α_k) z_k over the per-step arrays alphas, conds [K]."""

    def step(x, inputs):
        alpha, cond, k = inputs
        x = x + alpha * score_at(x, cond)
        if noise:
            x = x + jnp.sqrt(2 * alpha) * jax.random.normal(k, x.shape, x.dtype)
        return x, (x if return_trajectory else None)

    keys = jax.random.split(key, alphas.shape[0])
    x, trajectory = jax.lax.scan(step, x0, (alphas, conds, keys))
    return (x, trajectory) if return_trajectory else x


def langevin_dynamics(score_fn: ScoreFn, x0: Array, key: Array, step_size, num_steps: int,
                      noise: bool = True, return_trajectory: bool = False):
    """Langevin dynamics (QCSGM Eq. 7): x_{k+1} = x_k + α_k s(x_k) + sqrt(2 α_k) z_k, z_k ~ N(0, I).

    ``score_fn(x) -> s`` is a score function (DESIGN.md §3.1); a time-conditional model runs at
    a fixed t as ``lambda x: score_model(x, t_vec)``. ``noise=False`` gives the deterministic
    variant x_{k+1} = x_k + α_k s(x_k) of QCSGM §3.1. ``step_size`` is a scalar α or a schedule
    of shape [num_steps] (e.g. QCSGM's α e^{−k/1000}).
    Returns the final x [B, *event], or ``(x, trajectory)`` with the states after each step
    [num_steps, B, *event] when ``return_trajectory``. Costs ``num_steps`` score evaluations.
    """
    check_positive_int("num_steps", num_steps)
    check_positive("step_size", step_size)
    alphas = jnp.asarray(step_size, x0.dtype)
    if alphas.shape not in ((), (num_steps,)):
        raise ValueError(f"step_size must be a scalar or have shape [num_steps] = ({num_steps},); "
                         f"got shape {alphas.shape}.")
    alphas = jnp.broadcast_to(alphas, (num_steps,))
    return _langevin_chain(lambda x, _: score_fn(x), x0, key, alphas,
                           jnp.zeros((num_steps,), x0.dtype), noise, return_trajectory)


def annealed_langevin_dynamics(score_model: ScoreModel, x0: Array, key: Array, sigmas, steps_per_level: int,
                               step_lr: float, conditioning=None, denoise: bool = False,
                               return_trajectory: bool = False):
    """Annealed Langevin dynamics of NCSN (Song & Ermon, 2019), in the form of the NCSN code.

    For each noise level σ_i of ``sigmas`` [L], in the order given (NCSN: decreasing), run
    ``steps_per_level`` steps x ← x + α_i s(x, c_i) + sqrt(2 α_i) z with α_i = step_lr (σ_i/σ_L)².
    This is the update of the NCSN code (``anneal_runner``: step size step_lr (σ_i/σ_L)², noise
    sqrt(2 · step size)) and of QCSGM Eq. 7. The paper's Alg. 1 writes the same chain as
    x + (α'_i/2) s + sqrt(α'_i) z with α'_i = ε σ_i²/σ_L², so ``step_lr`` = ε/2 (the NCSN code's
    ``step_lr`` = 2e-5 is the paper's ε = 4e-5).
    Conditioning (explicit): the score is called as ``score_model(x, c_i · 1_B)`` where c_i =
    ``conditioning[i]`` ([L], e.g. the SDE times t_i of a time-conditional model) or, when
    ``conditioning`` is None, c_i = σ_i (a noise-conditional NCSN model). ``denoise=True`` adds
    the final Tweedie step x + σ_L² s(x, c_L) of NCSNv2 (one more evaluation).
    Returns x (and the per-step trajectory [L·steps_per_level, B, *event] when asked);
    costs L · steps_per_level (+ 1) score evaluations.
    """
    check_positive_int("steps_per_level", steps_per_level)
    check_positive("step_lr", step_lr)
    sigmas = jnp.asarray(sigmas, x0.dtype)
    check_positive("sigmas", sigmas)
    conds = sigmas if conditioning is None else jnp.asarray(conditioning, x0.dtype)
    if sigmas.ndim != 1 or conds.shape != sigmas.shape:
        raise ValueError(f"sigmas and conditioning must have the same shape [L]; got "
                         f"{sigmas.shape} and {conds.shape}.")
    alphas = step_lr * (sigmas / sigmas[-1]) ** 2
    score_at = lambda x, c: score_model(x, batch_times(c, x))  # noqa: E731
    out = _langevin_chain(score_at, x0, key, jnp.repeat(alphas, steps_per_level),
                          jnp.repeat(conds, steps_per_level), True, return_trajectory)
    if denoise:
        x = out[0] if return_trajectory else out
        x = x + sigmas[-1] ** 2 * score_at(x, conds[-1])
        out = (x, out[1]) if return_trajectory else x
    return out


def langevin_sampler(score_model: ScoreModel, shape, key: Array, step_size, num_steps: int, t,
                     noise: bool = True, init_std: float = 1.0, x_T: Array | None = None):
    """Registry entry "langevin": :func:`langevin_dynamics` with the score function
    ``x -> score_model(x, t)`` at the fixed time ``t`` (a scalar or [B]), from
    x_0 ~ N(0, init_std² I) (or ``x_T``); NFE = ``num_steps``."""
    init_key, key = jax.random.split(key)
    if x_T is None:
        x_T = init_std * jax.random.normal(init_key, check_shape(shape))
    t_vec = jnp.broadcast_to(jnp.asarray(t, x_T.dtype), (x_T.shape[0],))
    x = langevin_dynamics(lambda x: score_model(x, t_vec), x_T, key, step_size, num_steps, noise)
    return finish("langevin", x, num_steps)


def annealed_langevin_sampler(score_model: ScoreModel, shape, key: Array, sigmas,
                              steps_per_level: int, step_lr: float, conditioning=None,
                              denoise: bool = False, x_T: Array | None = None):
    """Registry entry "annealed_langevin": :func:`annealed_langevin_dynamics` from
    x_0 ~ N(0, σ_1² I) (or ``x_T``); NFE = L · steps_per_level (+ 1 with ``denoise``)."""
    init_key, key = jax.random.split(key)
    if x_T is None:
        x_T = jnp.asarray(sigmas)[0] * jax.random.normal(init_key, check_shape(shape))
    x = annealed_langevin_dynamics(score_model, x_T, key, sigmas, steps_per_level, step_lr,
                                   conditioning, denoise)
    return finish("annealed_langevin", x, len(sigmas) * steps_per_level + int(denoise))
