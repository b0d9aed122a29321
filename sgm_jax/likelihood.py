"""Exact log-likelihoods of score-based models through the probability-flow ODE (Song et al.,
ICLR 2021, §4.3 and App. D.2), integrated with diffrax, and their conversion to bits/dim.

For a linear SDE dx = f(x, t) dt + g(t) dw with score s(x, t), the probability-flow ODE

    dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² s(x, t)

transports the marginals p_t, and along its solutions the instantaneous change of variables
gives d log p_t(x(t))/dt = −∇·f̃(x(t), t). Integrating the augmented state (x, δ) with
dδ/dt = ∇·f̃ from t = eps to T, starting at (x, 0), gives

    log p_eps(x) = log p_T(x(T)) + δ(T) ≈ prior_logp(z) + δ(T),    z = x(T).

The divergence is either exact (trace of the per-example Jacobian from D basis JVPs, small D)
or the Skilling–Hutchinson estimate (1/K) Σ_k v_kᵀ (∂f̃/∂x) v_k with K probes v_k drawn once and
held fixed along the whole path, so δ(T) is unbiased for the exact integral.

As in ``score_sde`` the whole batch is one ODE: one adaptive step size for all examples, chosen by
the RMS error norm over every element of (x, δ). Results therefore depend slightly (within the
solver tolerance) on which examples share a batch, and ``nfe`` is one number per batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._batch import batch_times, sum_event
from sgm_jax._jacobian import jacobian_trace
from sgm_jax._validation import check_batched, check_choice, check_positive_int, concrete_value
from sgm_jax.losses import PROJECTIONS, draw_probes
from sgm_jax.ode import integrate_ode
from sgm_jax.sde import SDE
from sgm_jax.types import ScoreModel

Array = jax.Array

DIVERGENCES = ("exact", "hutchinson")


def _positive_float(name: str, value):
    """``value`` checked finite and > 0 when concrete; a traced scalar passes through."""
    concrete = concrete_value(value)
    if concrete is None:
        return value
    if concrete.shape != () or not (np.isfinite(concrete) and concrete > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(concrete)


def log_likelihood(
    sde: SDE,
    score_model: ScoreModel,
    x: Array,
    key: Array | None = None,
    *,
    divergence: str = "exact",
    num_vectors: int = 1,
    projection: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    solver: str = "dopri5",
    max_steps: int = 4096,
) -> tuple[Array, Array, Array]:
    """Log-density log p_eps(x) in nats under the probability-flow ODE of ``sde`` and a score model.

    Args:
      sde: the forward SDE (its ``reverse(score_model, probability_flow=True)`` gives f̃ and its
        ``prior_logp`` the density at T).
      score_model: batched ``score_model(x, t) -> s``, x [B, *event], t [B].
      x: data [B, *event] (floating point), the points at t = eps.
      key: PRNG key for the Hutchinson probes; required for ``divergence="hutchinson"``,
        ignored for ``"exact"``.
      divergence: ``"exact"`` (D JVPs per evaluation, for small D) or ``"hutchinson"``
        (``num_vectors`` JVPs per evaluation).
      num_vectors: K >= 1 probes per example, averaged; drawn once and fixed along the path.
      projection: probe distribution, ``"rademacher"`` (±1) or ``"gaussian"`` (N(0, I)).
      rtol, atol: tolerances of the ``diffrax.PIDController`` (error measured by the RMS norm over
        all elements of the batch state (x, δ), like scipy's RK45 in ``score_sde``). They may
        be traced scalars, so one compiled function serves a sweep of tolerances.
      eps: start time, static (``score_sde`` uses 1e-5); the result is the density of p_eps,
        not of p_0.
      solver: a solver of ``sgm_jax.ode.ODE_SOLVERS`` (``"dopri5"`` is the RK45 of ``score_sde``).
      max_steps: cap on step attempts; diffrax raises an error if it is reached.

    Returns:
      ``(logp, z, nfe)``: logp [B] in nats; z = x(T) [B, *event]; nfe, an int32 scalar array,
      the number of evaluations of the augmented vector field (each is one forward pass of the
      score model plus D or K JVPs through it), counted by the rule of :mod:`sgm_jax.ode`.

    The configuration (everything but ``x``, ``key``, ``rtol``, ``atol``) is static: ``jax.jit`` a
    ``functools.partial`` that fixes ``sde``, ``score_model`` and those keyword arguments, e.g.
    ``jax.jit(partial(log_likelihood, sde, score_model, divergence="hutchinson"))(x, key)``.
    Called without ``jit``, every call re-traces and re-compiles the solve (seconds).
    """
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("projection", projection, PROJECTIONS)
    check_positive_int("num_vectors", num_vectors)
    rtol, atol = _positive_float("rtol", rtol), _positive_float("atol", atol)
    eps_value = concrete_value(eps)
    if eps_value is None or eps_value.shape != () or not 0 < eps_value < sde.T:
        raise ValueError(f"eps must be a concrete (static) number in (0, T = {sde.T}); got {eps!r}.")
    eps = float(eps_value)
    check_batched("x", x)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"x must be floating point (scale or dequantise integer data first); got {x.dtype}.")
    if divergence == "hutchinson":
        if key is None:
            raise ValueError('divergence="hutchinson" needs a PRNG key; got key=None.')
        probes = draw_probes(key, (num_vectors, *x.shape), projection, x.dtype)
    else:
        probes = None

    def checked_score(y, t):
        s = score_model(y, t)
        if jnp.shape(s) != y.shape:
            raise ValueError(f"score_model must return an array of the input's shape {y.shape}; "
                             f"got shape {jnp.shape(s)}.")
        return s

    flow = sde.reverse(checked_score, probability_flow=True)

    def vector_field(t, state):
        y, _ = state

        def drift(z):
            return flow.sde(z, batch_times(t, z))[0]

        if probes is None:  # one primal pass, then D basis JVPs through its linearisation
            dy, jvp_fn = jax.linearize(drift, y)
            div = jacobian_trace(jvp_fn, y)
        else:  # forward mode, K tangents batched: the primal is computed once, no residuals kept
            dy, jv = jax.vmap(lambda v: jax.jvp(drift, (y,), (v,)), out_axes=(None, 0))(probes)
            div = jnp.mean(jax.vmap(sum_event)(probes * jv), axis=0)
        return dy, div.astype(y.dtype)

    (z, delta), nfe = integrate_ode(vector_field, (x, jnp.zeros((x.shape[0],), x.dtype)), eps,
                                    sde.T, rtol=rtol, atol=atol, solver=solver,
                                    max_steps=max_steps)
    return sde.prior_logp(z) + delta, z, nfe


def bits_per_dim(logp_nats: Array, event_shape, offset: float = 0.0) -> Array:
    """bpd = −logp / (D ln 2) + offset, D = prod(event_shape) (an int is read as (D,)).

    ``offset`` converts a density of the model's continuous inputs into bits/dim of the discrete
    data. For 8-bit data n ∈ {0, …, 255}, uniformly dequantised to x = (n + u)/256, u ~ U[0, 1)
    (``uniform_dequantize``), and fed to the model as y = a·x + b, the density of the dequantised
    integers n + u is p_y(y)·(a/256)^D, so bpd(n + u) = bpd_y + 8 − log2(a):

      * inputs in [0, 1] (``score_sde`` ``data.centered=False``, a = 1): offset = 8;
      * inputs centred to [−1, 1] (``data.centered=True``, y = 2x − 1, a = 2): offset = 7.

    ``score_sde`` writes this as offset = log2(inverse_scaler′(0)) + 8 ("a hack"), and the
    QCSGM real-world code as 7 − inverse_scaler(−1); both give the two values above.
    ``dequantization_offset`` computes it. Averaged over the dequantisation noise, the result is
    an upper bound on the discrete negative log-likelihood in bits/dim. Toy data are reported
    in nats instead (QCSGM), with no offset.
    """
    dim = int(event_shape) if isinstance(event_shape, (int, np.integer)) else math.prod(event_shape)
    check_positive_int("prod(event_shape)", dim)
    return -jnp.asarray(logp_nats) / (dim * math.log(2.0)) + offset


def dequantization_offset(num_bits: int = 8, centered: bool = False) -> float:
    """The bpd offset num_bits − log2(a) for data (n + u)/2^num_bits scaled by a = 2 when
    ``centered`` (to [−1, 1]) or a = 1 (kept in [0, 1]): 8 or 7 for 8-bit images."""
    check_positive_int("num_bits", num_bits)
    return float(num_bits - (1 if centered else 0))


def uniform_dequantize(key: Array, x: Array, num_bits: int = 8, centered: bool = False,
                       dtype=jnp.float32) -> Array:
    """x̃ = (n + u) / 2^num_bits with u ~ U[0, 1) i.i.d., then 2x̃ − 1 if ``centered``.

    ``x`` holds the levels n ∈ {0, …, 2^num_bits − 1} as an integer array (e.g. uint8 images), or
    floats n / (2^num_bits − 1) in [0, 1] (the ``tf.image.convert_image_dtype`` scaling that
    ``score_sde`` dequantises as (u + 255 x)/256; the levels are recovered by rounding).
    """
    check_positive_int("num_bits", num_bits)
    levels = 2**num_bits
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        n = jnp.round(x.astype(dtype) * (levels - 1))
    elif jnp.issubdtype(x.dtype, jnp.integer):
        n = x.astype(dtype)
    else:
        raise ValueError(f"x must hold integer levels or floats in [0, 1]; got dtype {x.dtype}.")
    out = (n + jax.random.uniform(key, x.shape, dtype)) / levels
    return 2 * out - 1 if centered else out
