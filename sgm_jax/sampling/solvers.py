"""The probability-flow ODE (adaptive, diffrax) and the reverse-time SDE (fixed steps, diffrax)
samplers of score_sde (Song et al. 2021, Eqs. 6 and 13)."""

from __future__ import annotations

from typing import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp
import lineax as lx

from sgm_jax._batch import batch_times, per_example
from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.ode import integrate_ode
from sgm_jax.sampling._common import (Array, ScoreModel, check_eps, check_shape,
                                      checked_score_model, finish, start)
from sgm_jax.sampling.pc import denoise_step
from sgm_jax.sde import SDE

#: fixed-step SDE solvers and their drift (score) evaluations per step; for additive noise (all
#: SDEs here) Heun's Stratonovich limit equals the Itô one.
SDE_SOLVERS: dict[str, tuple[Callable[[], dfx.AbstractSolver], int]] = {
    "euler": (dfx.Euler, 1),  # Euler–Maruyama
    "heun": (dfx.Heun, 2),
}


def ode_solve(sde: SDE, score_model: ScoreModel, x: Array, t0, t1, **kwargs):
    """Transport x [B, *event] along the probability-flow ODE (Song et al. Eq. 13) from t0 to t1
    (t0 = T, t1 = eps samples; t0 = eps, t1 = T encodes). ``kwargs`` go to ``integrate_ode``.
    Returns ``(x(t1), nfe)``."""
    flow = sde.reverse(score_model, probability_flow=True)
    return integrate_ode(lambda t, y: flow.sde(y, batch_times(t, y))[0], x, t0, t1, **kwargs)


def ode_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, rtol: float = 1e-5,
                atol: float = 1e-5, solver: str = "dopri5", eps: float = 1e-3, denoise: bool = True,
                max_steps: int = 4096, x_T: Array | None = None):
    """Probability-flow ODE sampler (score_sde ``get_ode_sampler`` with diffrax): x_T ~ prior
    (or the given ``x_T``, e.g. a latent from encoding), solved from T to eps, then optionally
    the one-step reverse-diffusion denoise at eps (+1 NFE). Returns ``(samples, nfe)``."""
    check_eps(sde, eps)
    score_model = checked_score_model(score_model)
    x = start(sde, shape, key, x_T)
    x, nfe = ode_solve(sde, score_model, x, sde.T, eps, rtol=rtol, atol=atol, solver=solver,
                       max_steps=max_steps)
    if denoise:
        x, nfe = denoise_step(sde, score_model, x, eps), nfe + 1
    return finish("ode", x, nfe)


def reverse_sde_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array,
                        num_steps: int | None = None, solver: str = "euler", eps: float = 1e-3,
                        denoise: bool = True, x_T: Array | None = None):
    """Reverse-time SDE (Song et al. Eq. 6) solved with diffrax from T to eps on the fixed grid
    ``linspace(T, eps, num_steps + 1)`` (``StepTo``; default num_steps = ``sde.N``), driven by a
    ``VirtualBrownianTree`` over [eps, T] with tol = step/2 (its increments are exactly
    Brownian; the path is a deterministic function of ``key``, so runs with different num_steps
    share one Brownian path). Drift f − g² s is an ``ODETerm``, diffusion g(t) dW a ``ControlTerm``
    with a diagonal operator. Optional final denoise as in ``ode_sampler``. Returns
    ``(samples, nfe)``, nfe = evals_per_step · sol.stats["num_steps"] (+1)."""
    check_choice("solver", solver, tuple(SDE_SOLVERS))
    num_steps = sde.N if num_steps is None else num_steps
    check_positive_int("num_steps", num_steps)
    check_eps(sde, eps)
    shape = check_shape(shape)
    score_model = checked_score_model(score_model)
    make_solver, evals_per_step = SDE_SOLVERS[solver]
    prior_key, path_key = jax.random.split(key)
    x = start(sde, shape, prior_key, x_T)
    ts = jnp.linspace(sde.T, eps, num_steps + 1, dtype=x.dtype)
    brownian = dfx.VirtualBrownianTree(eps, sde.T, tol=(sde.T - eps) / (2 * num_steps),
                                       shape=jax.ShapeDtypeStruct(shape, x.dtype), key=path_key)
    reverse = sde.reverse(score_model)
    drift = dfx.ODETerm(lambda t, y, args: reverse.sde(y, batch_times(t, y))[0])
    diffusion = dfx.ControlTerm(lambda t, y, args: lx.DiagonalLinearOperator(
        jnp.broadcast_to(per_example(sde.diffusion_coeff(batch_times(t, y)), y), y.shape)), brownian)
    sol = dfx.diffeqsolve(dfx.MultiTerm(drift, diffusion), make_solver(), ts[0], ts[-1], None, x,
                          stepsize_controller=dfx.StepTo(ts), saveat=dfx.SaveAt(t1=True),
                          max_steps=num_steps)
    x, nfe = sol.ys[-1], evals_per_step * sol.stats["num_steps"]
    if denoise:
        x, nfe = denoise_step(sde, score_model, x, eps), nfe + 1
    return finish("reverse_sde", x, nfe)
