"""Samplers: Langevin dynamics, predictor–corrector (PC), the reverse-time SDE and the
probability-flow ODE (Song et al., ICLR 2021, arXiv:2011.13456; QCSGM paper Eq. 7), the fast
samplers DDIM and Heun / EDM, and controllable generation: inpainting, colorization and diffusion
posterior sampling (DPS) with the forward operators of :mod:`sgm_jax.sampling.operators`.

A *score model* is ``score_model(x, t) -> s``, batched: ``x`` is [B, *event] (any event shape),
``t`` is [B] and ``s`` has the shape of ``x``; U, C, QC and DLSM-guided posterior scores
(``sgm_jax.guidance``) are all of this kind. Every sampler returns ``(samples, nfe)``, where NFE
counts calls of the score model on the whole batch (one call = one network forward pass on B
examples):

  * PC (and inpainting / colorization, which run it): N (p + n_steps c), p = 1 for an active
    predictor and c = 1 for an active corrector (0 for "none"); with both active this is
    ``score_sde``'s N (n_steps + 1), which it reports even when one of them is "none".
  * ODE (adaptive diffrax solve): the rule of :mod:`sgm_jax.ode` (initial + per-step evaluations
    of the solver times the attempted steps), the analogue of scipy's ``nfev`` in ``score_sde``.
  * reverse SDE (fixed-step diffrax solve): ``evals_per_step * num_steps``, per ``SDE_SOLVERS``.
  * the optional final denoising step (``denoise=True``) of PC / ODE / reverse SDE: + 1.
  * DDIM: ``num_steps``; Heun (EDM): 2 ``num_steps`` − 1; DPS: ``num_steps`` forward passes,
    each with one back-propagation through the score model.
  * Langevin: one per step (+ 1 for the final denoising of annealed Langevin).

Decisions a user should know:
  * The Langevin corrector's step size ε is shared by the batch (batch-averaged norms, as
    score_sde's ``pmean``), so samples in one batch interact weakly through ε; even with the exact
    score it inflates the variance by up to 1/(1 − snr²) (the unadjusted-Langevin bias).
  * An ODE solve is one adaptive solve for the whole batch (one error norm, one step sequence),
    so its NFE is per batch and results depend slightly on the batch composition, as in score_sde.
  * The reverse-diffusion and ancestral predictors and the final denoising use the SDE's discrete
    chain (``sde.discretize``, SMLD / DDPM): VP needs ``N > beta_max``; the ancestral predictor
    exists for VE and VP only (as in score_sde).
  * DDIM, Heun and DPS have no ``eps``: their grids end at score_sde's sampling eps (1e-5 for VE,
    1e-3 for VP / sub-VP; ``_common.default_eps``) and then step to the clean level.
  * A sampler called outside ``jit`` raises ``FloatingPointError`` when its samples are not
    finite (a score model that returns NaN, or a diverging iteration); under ``jit`` the values
    are abstract, and ``main.py``'s sampling checks them on the host.

Everything is a pure function of explicit keys, jit-compatible with ``shape`` static (e.g.
``jax.jit(functools.partial(pc_sampler, sde, score_model, shape))``), and works for any event
shape. Fixed-step loops use ``jax.lax.scan``; every adaptive ODE/SDE solve uses diffrax, reverse
time being expressed by t0 > t1 (negative step).

    sample = get_sampler("heun", sde=sde, num_steps=18)
    x, nfe = jax.jit(sample, static_argnums=(0, 1))(score_model, (64, 32, 32, 3), key)
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, NamedTuple

import jax.numpy as jnp

from sgm_jax._validation import check_choice
from sgm_jax.ode import ODE_SOLVERS
from sgm_jax.sampling import operators
from sgm_jax.sampling._common import Array, ScoreModel, check_finite_samples
from sgm_jax.sampling.ddim import ddim_sampler
from sgm_jax.sampling.dps import dps_sampler
from sgm_jax.sampling.heun import edm_sigmas, heun_sampler
from sgm_jax.sampling.inpainting import COLOR_DECOUPLING, PC_OPTIONS, colorize, inpaint
from sgm_jax.sampling.langevin import (annealed_langevin_dynamics, annealed_langevin_sampler,
                                       langevin_dynamics, langevin_sampler)
from sgm_jax.sampling.pc import CORRECTORS, PREDICTORS, Update, pc_sampler
from sgm_jax.sampling.solvers import SDE_SOLVERS, ode_sampler, ode_solve, reverse_sde_sampler
from sgm_jax.sde import SDE

__all__ = [
    "CORRECTORS", "COLOR_DECOUPLING", "PREDICTORS", "SDE_SOLVERS", "ScoreModel", "Update",
    "annealed_langevin_dynamics", "check_finite_samples", "colorize", "ddim_sampler",
    "dps_sampler", "edm_sigmas", "get_sampler", "heun_sampler", "inpaint", "langevin_dynamics",
    "ode_sampler", "ode_solve", "operators", "pc_sampler", "reverse_sde_sampler",
]


def _same_shape(shape, expected: tuple[int, ...], name: str) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(f"shape must be the shape of {name}, {tuple(expected)}; got "
                         f"{tuple(shape)}.")


def _inpaint_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, x_known: Array,
                     mask: Array, x_T: Array | None = None, **pc_kwargs):
    """Registry entry "inpaint": :func:`inpaint` with ``shape`` = ``x_known.shape``."""
    _same_shape(shape, jnp.shape(x_known), "x_known")
    return inpaint(sde, score_model, x_known, mask, key, x_T=x_T, **pc_kwargs)


def _colorize_sampler(sde: SDE, score_model: ScoreModel, shape, key: Array, gray: Array,
                      x_T: Array | None = None, **pc_kwargs):
    """Registry entry "colorize": :func:`colorize` with ``shape`` = gray's [B, H, W] + (3,)."""
    _same_shape(shape, tuple(jnp.shape(gray)[:-1]) + (3,), "the colour images of gray")
    return colorize(sde, score_model, gray, key, x_T=x_T, **pc_kwargs)


class _Entry(NamedTuple):
    fn: Callable
    choices: dict  # argument -> the registry its value must come from
    forwarded: tuple[str, ...] = ()  # keyword arguments taken through ``**kwargs``


_PC_CHOICES = {"predictor": PREDICTORS, "corrector": CORRECTORS}
_FORWARDED_PC = tuple(name for name in PC_OPTIONS if name != "x_T")
_SAMPLERS = {
    "pc": _Entry(pc_sampler, _PC_CHOICES),
    "ode": _Entry(ode_sampler, {"solver": ODE_SOLVERS}),
    "reverse_sde": _Entry(reverse_sde_sampler, {"solver": SDE_SOLVERS}),
    "ddim": _Entry(ddim_sampler, {}),
    "heun": _Entry(heun_sampler, {}),
    "inpaint": _Entry(_inpaint_sampler, _PC_CHOICES, _FORWARDED_PC),
    "colorize": _Entry(_colorize_sampler, _PC_CHOICES, _FORWARDED_PC),
    "dps": _Entry(dps_sampler, {}),
    "langevin": _Entry(langevin_sampler, {}),
    "annealed_langevin": _Entry(annealed_langevin_sampler, {}),
}
#: The names :func:`get_sampler` knows.
SAMPLERS = tuple(_SAMPLERS)


def get_sampler(name: str, **kwargs) -> Callable:
    """A sampler ``sample(score_model, shape, key, x_T=None) -> (samples, nfe)`` with the other
    arguments bound from ``kwargs`` (``x_T``, when given, is the starting point instead of a
    draw of the prior / initial law, e.g. sharded over devices by the caller):

      * "pc", "ode", "reverse_sde", "ddim", "heun" (need ``sde=``; see their functions);
      * "inpaint" (``sde``, ``x_known``, ``mask`` and PC options), "colorize" (``sde``, ``gray``
        and PC options), "dps" (``sde``, ``y``, ``forward_op``, ``noise_std``, ``zeta``,
        ``num_steps``): the conditioning data are bound here, so build the sampler inside the
        jitted function that receives them (one compilation for every batch);
      * "langevin" (``step_size``, ``num_steps``, ``t``, ``noise``, ``init_std``; the model at
        the fixed time ``t``, x_0 ~ N(0, init_std²)) and "annealed_langevin" (``sigmas``,
        ``steps_per_level``, ``step_lr``, ``conditioning``, ``denoise``; the model at
        ``conditioning[i]``, default σ_i, for level i; x_0 ~ N(0, σ_1²)); see
        :mod:`sgm_jax.sampling.langevin`.

    Every sampler it returns takes ``score_model(x, t)`` (x [B, *event], t [B]); a score
    function s(x) (DESIGN.md §3.1) goes to :func:`langevin_dynamics` directly.

    Names and arguments are validated here, up front."""
    check_choice("sampler name", name, SAMPLERS)
    entry = _SAMPLERS[name]
    params = inspect.signature(entry.fn).parameters
    named = tuple(p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD)
    allowed = tuple(p for p in named if p not in ("score_model", "shape", "key", "x_T")
                    ) + entry.forwarded
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for sampler {name!r}; allowed: {allowed}.")
    empty = inspect.Parameter.empty
    missing = [p for p in allowed if p in params and params[p].default is empty
               and p not in kwargs]
    if missing:
        raise ValueError(f"sampler {name!r} needs argument(s) {missing}.")
    for arg, registry in entry.choices.items():
        if arg in kwargs:
            check_choice(f"{name} {arg}", kwargs[arg], tuple(registry))
    bound = functools.partial(entry.fn, **kwargs)
    return lambda score_model, shape, key, x_T=None: bound(score_model=score_model, shape=shape,
                                                           key=key, x_T=x_T)
