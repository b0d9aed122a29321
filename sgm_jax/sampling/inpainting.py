"""Imputation with the predictor–corrector sampler: inpainting and colorization (Song et al.
2021, §5 and App. I.2; score_sde's ``controllable_generation.get_pc_inpainter`` and
``get_pc_colorizer``).

The known part y of a sample is fixed, the rest drawn with the unconditional score model: the PC
chain runs on the whole x, and after every corrector and predictor update the known part is
replaced by y perturbed to the noise level the chain has reached, c_t y + σ_t z (z fresh each
time). This approximates the conditional score by ∇ log p_t(x_unknown, ŷ_t) at a draw ŷ_t of the
known part (App. I.2); the Langevin corrector is what mixes the unknown part towards p(x_unknown
| y) at each level (without a corrector the replacement leaves an error that does not vanish as
N grows; ``tests/test_inpainting.py`` measures both on a Gaussian). Colorization does the same in
a decoupled colour space: an orthonormal 3×3 transform M whose first column is (1, 1, 1)/√3, so
the first channel of x M is √3 × the grey level (r + g + b)/3 and the other two hold the chroma.

Where this differs from score_sde, and why:
  * the known part is put at the noise level of the time the chain has reached: t_{k+1} after
    the predictor step from t_k (score_sde uses t_k for both updates of step k, one step behind),
    the prior level T at the start (score_sde starts from the clean y) and the clean y after the
    last step;
  * the denoised output (``denoise=True``) takes the unknown part from the predictor's mean:
    score_sde rebuilds ``x_mean`` from the new noisy x, so its "denoised" output keeps the last
    step's noise in the unknown region;
  * the known pixels come back exactly (inpainting) or up to the rounding of M (colorization's
    grey level), with no residual noise.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import check_batched, concrete_value
from sgm_jax.sampling._common import Array, ScoreModel, checked_score_model, finish, start
from sgm_jax.sampling.pc import CORRECTORS, PREDICTORS, check_pc_arguments, pc_loop, pc_sampler
from sgm_jax.sde import SDE

#: score_sde's colour decoupling M (columns orthonormal): x ↦ x M per pixel puts √3 × the grey
#: level (r + g + b)/3 in channel 0 and two chroma directions in channels 1 and 2.
COLOR_DECOUPLING = np.array([[1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
                             [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
                             [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)]])

_PC_PARAMETERS = inspect.signature(pc_sampler).parameters
#: the keyword arguments of :func:`pc_sampler` that ``inpaint`` and ``colorize`` accept.
PC_OPTIONS = tuple(name for name in _PC_PARAMETERS if name not in ("sde", "score_model", "shape",
                                                                   "key"))


def _pc_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(PC_OPTIONS))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for the PC sampler; allowed: {PC_OPTIONS}.")
    return {name: kwargs.get(name, _PC_PARAMETERS[name].default) for name in PC_OPTIONS}


def _impute(name: str, sde: SDE, score_model: ScoreModel, known: Array, mask: Array, key: Array,
            to_latent: Callable[[Array], Array], from_latent: Callable[[Array], Array],
            pc_kwargs: dict[str, Any]) -> tuple[Array, Array | int]:
    """The PC chain with the latent entries where ``mask`` holds replaced by ``known`` at the
    chain's noise level (module docstring); ``known`` and ``mask`` live in the latent space
    ``to_latent(x)``."""
    o = _pc_options(pc_kwargs)
    check_pc_arguments(sde, o["predictor"], o["corrector"], o["n_steps"], o["eps"])
    prior_key, key = jax.random.split(key)
    x = start(sde, known.shape, prior_key, o["x_T"])

    def impose(x, x_mean, c, std, k):
        noisy = c * known + std * jax.random.normal(k, known.shape, known.dtype)
        return (from_latent(jnp.where(mask, noisy, to_latent(x))),
                from_latent(jnp.where(mask, c * known, to_latent(x_mean))))

    x, _ = impose(x, x, sde.mean_coeff(jnp.asarray(sde.T, x.dtype)),
                  sde.marginal_std(jnp.asarray(sde.T, x.dtype)), jax.random.fold_in(prior_key, 1))
    x, x_mean = pc_loop(sde, checked_score_model(score_model), x, key, o["predictor"],
                        o["corrector"], o["snr"], o["n_steps"], o["probability_flow"], o["eps"],
                        impose)
    nfe = sde.N * (PREDICTORS[o["predictor"]].nfe + o["n_steps"] * CORRECTORS[o["corrector"]].nfe)
    return finish(name, x_mean if o["denoise"] else x, nfe)


def check_mask(mask, x: Array) -> Array:
    """``mask`` as a boolean array of x's shape (it must broadcast to it and hold 0/1 values)."""
    mask = jnp.asarray(mask)
    try:
        shape = jnp.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"mask must broadcast to the images' shape {x.shape}; got shape "
                         f"{mask.shape}.")
    value = concrete_value(mask)
    if value is not None and not np.all((value == 0) | (value == 1)):
        raise ValueError(f"mask must hold 0 (unknown) and 1 (known) only; got values "
                         f"{np.unique(value)[:5]}.")
    return jnp.broadcast_to(mask.astype(bool), x.shape)


def inpaint(sde: SDE, score_model: ScoreModel, x_known: Array, mask: Array, key: Array,
            **pc_kwargs) -> tuple[Array, Array | int]:
    """Inpainting by PC imputation (Song et al. 2021, App. I.2; module docstring): the pixels of
    ``x_known`` [B, *event] where ``mask`` (broadcastable to it; 1 known, 0 unknown) is 1 are kept
    and returned exactly, the others drawn. ``pc_kwargs`` are :func:`pc_sampler`'s options
    (predictor, corrector, snr, n_steps, probability_flow, denoise, eps, x_T).
    Returns ``(samples, nfe)`` with the PC sampler's NFE."""
    check_batched("x_known", x_known)
    mask = check_mask(mask, x_known)
    identity = lambda u: u  # noqa: E731
    return _impute("inpaint", sde, score_model, x_known, mask, key, identity, identity, pc_kwargs)


def colorize(sde: SDE, score_model: ScoreModel, gray: Array, key: Array,
             **pc_kwargs) -> tuple[Array, Array | int]:
    """Colorization by PC imputation in score_sde's decoupled colour space (module docstring):
    ``gray`` [B, H, W, 1] is the grey level (r + g + b)/3 of the wanted RGB images; the chroma
    channels are drawn, the grey level kept. ``pc_kwargs`` as for :func:`inpaint` (``x_T`` of
    shape [B, H, W, 3]). Returns ``(samples [B, H, W, 3], nfe)``."""
    if jnp.ndim(gray) != 4 or jnp.shape(gray)[-1] != 1:
        raise ValueError(f"gray must be grey images of shape [B, H, W, 1]; got shape "
                         f"{jnp.shape(gray)}.")
    gray = jnp.asarray(gray)
    m = jnp.asarray(COLOR_DECOUPLING, gray.dtype)
    known = jnp.concatenate([math.sqrt(3) * gray, jnp.zeros_like(gray), jnp.zeros_like(gray)], -1)
    mask = jnp.broadcast_to(jnp.arange(3) == 0, known.shape)
    return _impute("colorize", sde, score_model, known, mask, key, lambda x: x @ m,
                   lambda u: u @ m.T, pc_kwargs)
