"""What every sampler shares: the score-model type, argument checks, the starting point, the
time range of the fixed-grid samplers and the check of the finished samples."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import checked_call, concrete_value
from sgm_jax.sde import SDE, VESDE
from sgm_jax.types import Array, ScoreModel

#: score_sde's ``sampling_eps`` (``run_lib``): the last time of the samplers' grids, 1e-5 for VE
#: and 1e-3 for VP and sub-VP (EDM's ε_s of the VP model, Karras et al. 2022, Table 1).
VE_EPS, VP_EPS = 1e-5, 1e-3


def default_eps(sde: SDE) -> float:
    """The smallest time of the grids of the samplers without an ``eps`` argument (DDIM, Heun,
    DPS): :data:`VE_EPS` for VE, :data:`VP_EPS` for VP and sub-VP."""
    return VE_EPS if isinstance(sde, VESDE) else VP_EPS


def check_shape(shape) -> tuple[int, ...]:
    if not (isinstance(shape, (tuple, list)) and len(shape) >= 2
            and all(isinstance(d, int) and d >= 1 for d in shape)):
        raise ValueError(
            f"shape must be a static tuple [B, *event] of positive ints; got {shape!r}.")
    return tuple(shape)


def start(sde: SDE, shape, key: Array, x_T: Array | None) -> Array:
    """The starting point: ``x_T`` when given (checked against ``shape``), else a prior sample.
    Passing x_T lets a caller choose its sharding, or start from an encoded latent."""
    shape = check_shape(shape)
    if x_T is None:
        return sde.prior_sampling(key, shape)
    if tuple(jnp.shape(x_T)) != shape:
        raise ValueError(f"x_T must have the sample shape {shape}; got {jnp.shape(x_T)}.")
    return x_T


def check_eps(sde: SDE, eps) -> None:
    value = concrete_value(eps)
    if value is not None and not 0 < float(value) < sde.T:
        raise ValueError(f"eps must lie in (0, T = {sde.T}); got {float(value)}.")


def check_range(name: str, value, low: float, high: float):
    """``value`` checked to lie in [low, high] (``high`` may be inf) when it is concrete, and
    returned as a float; a traced value is returned as it is (checked by its caller's caller)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}.")
    concrete = concrete_value(value)
    if concrete is None:
        return value
    number = float(concrete) if concrete.shape == () and concrete.dtype.kind in "iuf" else math.nan
    if not low <= number <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}.")
    return number


def checked_score_model(score_model: ScoreModel) -> ScoreModel:
    """``score_model`` whose output is checked (at trace time) to have the input's shape."""
    return lambda x, t: checked_call(lambda y: score_model(y, t), x)


def check_finite_samples(sampler: str, samples) -> None:
    """``FloatingPointError`` when concrete ``samples`` hold NaN or inf (under ``jit`` the values
    are abstract and the check is left to the caller, e.g. the pipeline, on the host)."""
    value = concrete_value(samples)
    if value is not None and not np.all(np.isfinite(value)):
        raise FloatingPointError(
            f"the {sampler} sampler produced non-finite values (NaN or inf): the score model "
            f"returned a non-finite value, or the iteration diverged (step size too large for "
            f"the model).")


def finish(sampler: str, samples: Array, nfe) -> tuple[Array, Array | int]:
    """``(samples, nfe)``, the samples checked by :func:`check_finite_samples`."""
    check_finite_samples(sampler, samples)
    return samples, nfe
