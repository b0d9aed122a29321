"""Score parameterisations: turn a network output f(x, t) into a score s(x, t) (QCSGM Eq. 12).

With ``f = apply_fn(params, x, t)`` ([B, *event]) and ``σ_t = sigma_fn(t)`` ([B] or scalar):

====================  ==========================================================================
``"u"``               s = (x − f) / σ_t                     unconstrained (Eq. 12, left; NCSN)
``"c"``               s = −∇ₓ E,  E = ‖x − f‖² / (2σ_t)     constrained (Eq. 12, right)
``"c_norm"``          s = −∇ₓ E,  E = ‖f‖² / (2σ_t)         the official C-NCSN++ energy
                      (official_code_facts §1a: h = −½‖f‖²/σ, s = ∇h)
``"scale_by_sigma"``  s = f / σ_t                            score_sde's ``scale_by_sigma`` (VE
                      NCSN++; QCSGM's U-NCSN++ and, with the regulariser, QC-NCSN++)
``"noise_prediction"`` s = −f / σ_t                          score_sde's VP / sub-VP score
                      (DDPM++, DDPM: f predicts the noise z of x̃ = c_t x₀ + σ_t z)
``"direct"``          s = f                                  the autoencoder, DLSM toy nets
====================  ==========================================================================

A QC model (QCSGM §4) is a "u" (or "scale_by_sigma") model trained with ``training.qc_weight``
> 0: quasi-conservativeness comes from the loss's regulariser (Eqs. 14–16), not from the
architecture, so it has no parameterisation of its own.

The constrained scores are the exact gradient of a scalar energy per example, computed by
autodiff: since examples never interact, ∇ₓ Σ_b E_b(x_b) has row b equal to ∇E_b, so one
``jax.grad`` of the batch sum gives every per-example gradient and the field is exactly
conservative (its Jacobian is a Hessian, symmetric). Note Eq. 12 divides by σ_t, not σ_t².

Networks conditioned on σ rather than t (``OfficialToyNet``) are wrapped by the caller:
``apply_fn = lambda p, x, t: net.apply(p, x, sigma_fn(t))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sgm_jax._batch import per_example, sq_norm
from sgm_jax.types import ScoreModel

Array = jax.Array
ApplyFn = Callable[[Any, Array, Array], Array]
SigmaFn = Callable[[Array], Array]
EnergyFn = Callable[[Array, Array], Array]

#: What the network receives as its conditioning input, a function of t [B] and the SDE:
#: "t" the SDE time, "sigma" σ_t (the official toy network), "log_sigma" log σ_t (NCSN++ with
#: Gaussian Fourier features, score_sde VE continuous), "999t" 999·t (DDPM++ / DDPM with
#: positional features, score_sde VP / sub-VP continuous).
CONDITIONS: tuple[str, ...] = ("t", "sigma", "log_sigma", "999t")

PARAMETERISATIONS: tuple[str, ...] = ("u", "c", "c_norm", "scale_by_sigma",
                                      "noise_prediction", "direct")
ENERGY_PARAMETERISATIONS: tuple[str, ...] = ("c", "c_norm")


def conditioning_fn(condition: str, sigma_fn: SigmaFn) -> Callable[[Array], Array]:
    """``t [B] -> the network's conditioning input [B]`` for ``condition`` (:data:`CONDITIONS`);
    ``sigma_fn(t)`` is σ_t (an SDE's ``marginal_std``)."""
    if condition == "t":
        return lambda t: t
    if condition == "sigma":
        return sigma_fn
    if condition == "log_sigma":
        return lambda t: jnp.log(sigma_fn(t))
    if condition == "999t":
        return lambda t: 999.0 * t
    raise ValueError(f"model.condition must be one of {CONDITIONS}; got {condition!r}.")


def _sigma(sigma_fn: SigmaFn, t: Array, x: Array) -> Array:
    """σ_t in the dtype of x, shaped to broadcast against x ([B] → [B, 1, …, 1])."""
    return per_example(jnp.asarray(sigma_fn(t), x.dtype), x)


def _check(parameterisation: str, allowed: tuple[str, ...], sigma_fn: SigmaFn | None) -> None:
    if parameterisation not in allowed:
        raise ValueError(
            f"parameterisation={parameterisation!r} is not supported here; allowed: {list(allowed)}"
        )
    if sigma_fn is None and parameterisation != "direct":
        raise ValueError(f"parameterisation={parameterisation!r} needs a sigma_fn (t -> σ_t)")


def make_energy_fn(
    apply_fn: ApplyFn, params: Any, parameterisation: str, sigma_fn: SigmaFn
) -> EnergyFn:
    """The per-example energy E(x, t) → [B] whose negative gradient is the constrained score.

    ``"c"``: E = ‖x − f(x, t)‖² / (2σ_t) (QCSGM Eq. 12, right); ``"c_norm"``:
    E = ‖f(x, t)‖² / (2σ_t) (official C-NCSN++). The model density is p(x, t) ∝ exp(−E).
    Raises ``ValueError`` for any other parameterisation (they define no energy).
    """
    _check(parameterisation, ENERGY_PARAMETERISATIONS, sigma_fn)
    residual = parameterisation == "c"

    def energy(x: Array, t: Array) -> Array:
        f = apply_fn(params, x, t)
        sigma = jnp.asarray(sigma_fn(t), x.dtype)
        return sq_norm(x - f if residual else f) / (2.0 * sigma)

    return energy


def make_score_fn(
    apply_fn: ApplyFn, params: Any, parameterisation: str, sigma_fn: SigmaFn | None = None
) -> ScoreModel:
    """A batched score model ``score(x, t) -> s`` ([B, *event], [B] → [B, *event]).

    ``apply_fn(params, x, t)`` returns the network output f of x's shape; ``sigma_fn(t)`` gives
    σ_t (not needed for ``"direct"``). See the module docstring for the formulas (QCSGM Eq. 12).
    The result closes over ``params``, so training differentiates
    ``lambda p: loss(make_score_fn(apply_fn, p, ...), ...)``. Raises ``ValueError`` for an
    unknown ``parameterisation`` (listing ``PARAMETERISATIONS``) or a missing ``sigma_fn``.
    """
    _check(parameterisation, PARAMETERISATIONS, sigma_fn)

    if parameterisation in ENERGY_PARAMETERISATIONS:
        energy = make_energy_fn(apply_fn, params, parameterisation, sigma_fn)

        def constrained_score(x: Array, t: Array) -> Array:
            return -jax.grad(lambda y: jnp.sum(energy(y, t)))(x)

        return constrained_score

    if parameterisation == "direct":

        def direct_score(x: Array, t: Array) -> Array:
            return apply_fn(params, x, t)

        return direct_score

    if parameterisation == "scale_by_sigma":

        def scaled_score(x: Array, t: Array) -> Array:
            return apply_fn(params, x, t) / _sigma(sigma_fn, t, x)

        return scaled_score

    if parameterisation == "noise_prediction":

        def noise_score(x: Array, t: Array) -> Array:
            return -apply_fn(params, x, t) / _sigma(sigma_fn, t, x)

        return noise_score

    def unconstrained_score(x: Array, t: Array) -> Array:
        return (x - apply_fn(params, x, t)) / _sigma(sigma_fn, t, x)

    return unconstrained_score
