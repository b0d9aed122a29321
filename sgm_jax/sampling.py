"""Samplers: Langevin dynamics, predictor–corrector (PC), the reverse-time SDE and the
probability-flow ODE (Song et al., ICLR 2021, arXiv:2011.13456; QCSGM paper Eq. 7).

A *score model* is ``score_model(x, t) -> s``, batched: ``x`` is [B, *event] (any event shape),
``t`` is [B] and ``s`` has the shape of ``x``. Every sampler returns ``(samples, nfe)``, where NFE
counts calls of the score model on the whole batch (one call = one network forward pass on B
examples):

  * PC: N (p + n_steps c), p = 1 for an active predictor and c = 1 for an active corrector (0 for
    "none"); with both active this is ``score_sde``'s N (n_steps + 1), which it reports even when
    one of them is "none".
  * ODE (adaptive diffrax solve): the rule of :mod:`sgm_jax.ode` (initial + per-step evaluations
    of the solver times the attempted steps), the analogue of scipy's ``nfev`` in ``score_sde``.
  * reverse SDE (fixed-step diffrax solve): ``evals_per_step * num_steps``, per ``SDE_SOLVERS``.
  * the optional final denoising step (``denoise=True``): + 1.
  * Langevin: one per step (+ 1 for the final denoising of annealed Langevin).

Decisions a user should know:
  * The Langevin corrector's step size ε is shared by the batch (batch-averaged norms, as
    score_sde's ``pmean``), so samples in one batch interact weakly through ε; even with the exact
    score it inflates the variance by up to 1/(1 − snr²) (the unadjusted-Langevin bias).
  * An ODE solve is one adaptive solve for the whole batch (one error norm, one step sequence),
    so its NFE is per batch and results depend slightly on the batch composition, as in score_sde.
  * The reverse-diffusion predictor and the final denoising use ``sde.discretize``: VP needs
    ``N > beta_max``. score_sde's "ancestral_sampling" predictor is not provided.

Everything is a pure function of explicit keys, jit-compatible with ``shape`` static (e.g.
``jax.jit(functools.partial(pc_sampler, sde, score_model, shape))``), and works for any event
shape. Fixed-step loops use ``jax.lax.scan``; every ODE/SDE solve uses diffrax, reverse time being
expressed by t0 > t1 (negative step).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, NamedTuple

import diffrax as dfx
import jax
import jax.numpy as jnp
import lineax as lx

from sgm_jax._batch import batch_times, per_example, sq_norm
from sgm_jax._validation import check_choice, check_positive, check_positive_int, concrete_value
from sgm_jax.ode import ODE_SOLVERS, integrate_ode
from sgm_jax.sde import SDE, VPSDE, subVPSDE
from sgm_jax.types import ScoreModel

Array = jax.Array


def _check_shape(shape) -> tuple[int, ...]:
    if not (isinstance(shape, (tuple, list)) and len(shape) >= 2
            and all(isinstance(d, int) and d >= 1 for d in shape)):
        raise ValueError(
            f"shape must be a static tuple [B, *event] of positive ints; got {shape!r}.")
    return tuple(shape)


def _start(sde: SDE, shape, key: Array, x_T: Array | None) -> Array:
    """The starting point: ``x_T`` when given (checked against ``shape``), else a prior sample.
    Passing x_T lets a caller choose its sharding, or start from an encoded latent."""
    shape = _check_shape(shape)
    if x_T is None:
        return sde.prior_sampling(key, shape)
    if tuple(jnp.shape(x_T)) != shape:
        raise ValueError(f"x_T must have the sample shape {shape}; got {jnp.shape(x_T)}.")
    return x_T


def _check_eps(sde: SDE, eps) -> None:
    value = concrete_value(eps)
    if value is not None and not 0 < float(value) < sde.T:
        raise ValueError(f"eps must lie in (0, T = {sde.T}); got {float(value)}.")


# --------------------------------------------------------------------------- Langevin dynamics


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


def langevin_dynamics(score, x0: Array, key: Array, step_size, num_steps: int, t=None,
                      noise: bool = True, return_trajectory: bool = False):
    """Langevin dynamics (QCSGM Eq. 7): x_{k+1} = x_k + α_k s(x_k) + sqrt(2 α_k) z_k, z_k ~ N(0, I).

    ``noise=False`` gives the deterministic variant x_{k+1} = x_k + α_k s(x_k) of QCSGM §3.1.
    ``step_size`` is a scalar α or a schedule of shape [num_steps] (e.g. QCSGM's α e^{−k/1000}).
    Conditioning: with ``t=None``, ``score`` is a score function ``score(x)`` (QCSGM §3.1);
    otherwise a score model called as ``score(x, t_vec)`` with ``t`` (scalar or [B]) broadcast
    to [B].
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
    if t is None:
        score_at = lambda x, _: score(x)  # noqa: E731
    else:
        t_vec = jnp.broadcast_to(jnp.asarray(t, x0.dtype), (x0.shape[0],))
        score_at = lambda x, _: score(x, t_vec)  # noqa: E731
    return _langevin_chain(score_at, x0, key, alphas, jnp.zeros((num_steps,), x0.dtype), noise,
                           return_trajectory)


def annealed_langevin_dynamics(score_model, x0: Array, key: Array, sigmas, steps_per_level: int,
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


# --------------------------------------------------------------------------- predictors, correctors


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


def _no_predictor(sde, score_model, x, t, key, probability_flow):
    return x, x


def _langevin_alpha(sde: SDE, t: Array) -> Array:
    """The α_i of score_sde's Langevin and ALD correctors: 1 for VE; 1 − β_i for VP, where
    β_i = β_min/N + i (β_max − β_min)/(N (N − 1)) are the DDPM betas of the discrete chain at
    i = ⌊t (N − 1)/T⌋ (score_sde's ``VPSDE.alphas``). For sub-VP this library uses the same
    1 − β_i: that is an extension, score_sde has none (its corrector tests for sub-VP but reads an
    ``alphas`` table that only ``VPSDE`` defines)."""
    if not isinstance(sde, (VPSDE, subVPSDE)):
        return jnp.ones_like(t)
    i = jnp.clip(jnp.floor(t * (sde.N - 1) / sde.T), 0, sde.N - 1)
    return 1 - (sde.beta_min + i / max(sde.N - 1, 1) * (sde.beta_max - sde.beta_min)) / sde.N


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
    "none": Update(_no_predictor, 0),
}
#: corrector(sde, score_model, x, t [B], key, snr, n_steps) -> (x, x_mean); add entries to extend.
CORRECTORS: dict[str, Update] = {
    "langevin": Update(_langevin_corrector, 1),
    "ald": Update(_ald_corrector, 1),
    "none": Update(_no_corrector, 0),
}


def _denoise(sde: SDE, score_model: ScoreModel, x: Array, eps) -> Array:
    """score_sde's final noise removal: the x_mean of one reverse-diffusion step at t = eps."""
    return _reverse_diffusion(sde, score_model, x, batch_times(eps, x), jax.random.PRNGKey(0), False)[1]


def pc_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, predictor: str = "reverse_diffusion",
               corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
               probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3,
               x_T: Array | None = None):
    """Predictor–corrector sampling (score_sde ``get_pc_sampler``): x_T ~ prior (or the given
    ``x_T``), then for each
    t of ``linspace(T, eps, N)`` (N = ``sde.N``) a corrector update followed by a predictor update
    (score_sde's order), in a ``lax.scan``. Returns ``(x_mean if denoise else x, nfe)``: with
    ``denoise`` the last predictor step is taken without its noise. NFE = N (p + n_steps c)."""
    check_choice("predictor", predictor, tuple(PREDICTORS))
    check_choice("corrector", corrector, tuple(CORRECTORS))
    check_positive_int("n_steps", n_steps)
    _check_eps(sde, eps)
    pred, corr = PREDICTORS[predictor], CORRECTORS[corrector]
    prior_key, key = jax.random.split(key)
    x = _start(sde, shape, prior_key, x_T)

    def step(carry, inputs):
        t, k = inputs
        corrector_key, predictor_key = jax.random.split(k)
        t = batch_times(t, carry[0])
        x, _ = corr.fn(sde, score_model, carry[0], t, corrector_key, snr, n_steps)
        return pred.fn(sde, score_model, x, t, predictor_key, probability_flow), None

    ts = jnp.linspace(sde.T, eps, sde.N, dtype=x.dtype)
    (x, x_mean), _ = jax.lax.scan(step, (x, x), (ts, jax.random.split(key, sde.N)))
    return (x_mean if denoise else x), sde.N * (pred.nfe + n_steps * corr.nfe)


# --------------------------------------------------------------------------- diffrax ODE / SDE


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
    _check_eps(sde, eps)
    x = _start(sde, shape, key, x_T)
    x, nfe = ode_solve(sde, score_model, x, sde.T, eps, rtol=rtol, atol=atol, solver=solver,
                       max_steps=max_steps)
    return (_denoise(sde, score_model, x, eps), nfe + 1) if denoise else (x, nfe)


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
    _check_eps(sde, eps)
    shape = _check_shape(shape)
    make_solver, evals_per_step = SDE_SOLVERS[solver]
    prior_key, path_key = jax.random.split(key)
    x = _start(sde, shape, prior_key, x_T)
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
    return (_denoise(sde, score_model, x, eps), nfe + 1) if denoise else (x, nfe)


# --------------------------------------------------------------------------- registry


def _langevin_sampler(score_model, shape, key, step_size, num_steps, t=None, noise=True,
                      init_std=1.0, x_T=None):
    init_key, key = jax.random.split(key)
    if x_T is None:
        x_T = init_std * jax.random.normal(init_key, _check_shape(shape))
    return langevin_dynamics(score_model, x_T, key, step_size, num_steps, t, noise), num_steps


def _annealed_langevin_sampler(score_model, shape, key, sigmas, steps_per_level, step_lr,
                               conditioning=None, denoise=False, x_T=None):
    init_key, key = jax.random.split(key)
    if x_T is None:
        x_T = jnp.asarray(sigmas)[0] * jax.random.normal(init_key, _check_shape(shape))
    x = annealed_langevin_dynamics(score_model, x_T, key, sigmas, steps_per_level, step_lr,
                                   conditioning, denoise)
    return x, len(sigmas) * steps_per_level + int(denoise)


_SAMPLERS = {  # name: (function, the registry each choice-valued argument must come from)
    "pc": (pc_sampler, {"predictor": PREDICTORS, "corrector": CORRECTORS}),
    "ode": (ode_sampler, {"solver": ODE_SOLVERS}),
    "reverse_sde": (reverse_sde_sampler, {"solver": SDE_SOLVERS}),
    "langevin": (_langevin_sampler, {}),
    "annealed_langevin": (_annealed_langevin_sampler, {}),
}


def get_sampler(name: str, **kwargs) -> Callable:
    """A sampler ``sample(score_model, shape, key, x_T=None) -> (samples, nfe)`` with the other
    arguments bound from ``kwargs`` (``x_T``, when given, is the starting point instead of a
    draw of the prior / initial law, e.g. sharded over devices by the caller): "pc", "ode", "reverse_sde" (need ``sde=``; see their functions),
    "langevin" (``step_size``, ``num_steps``, ``t``, ``noise``, ``init_std``; x_0 ~ N(0, init_std²))
    and "annealed_langevin" (``sigmas``, ``steps_per_level``, ``step_lr``, ``conditioning``,
    ``denoise``; x_0 ~ N(0, σ_1²)). Names and arguments are validated here, up front."""
    check_choice("sampler name", name, tuple(_SAMPLERS))
    fn, choices = _SAMPLERS[name]
    params = inspect.signature(fn).parameters
    allowed = tuple(p for p in params if p not in ("score_model", "shape", "key", "x_T"))
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for sampler {name!r}; allowed: {allowed}.")
    empty = inspect.Parameter.empty
    missing = [p for p in allowed if params[p].default is empty and p not in kwargs]
    if missing:
        raise ValueError(f"sampler {name!r} needs argument(s) {missing}.")
    for arg, registry in choices.items():
        if arg in kwargs:
            check_choice(f"{name} {arg}", kwargs[arg], tuple(registry))
    bound = functools.partial(fn, **kwargs)
    return lambda score_model, shape, key, x_T=None: bound(score_model=score_model, shape=shape,
                                                           key=key, x_T=x_T)
