"""Conservativeness of a score field: Asym and NAsym (QCSGM paper Eqs. 11, A2, A10, A11).

With J = ∂s/∂x per example, Asym = ½‖J − Jᵀ‖²_F = tr(JJᵀ) − tr(JJ) and
NAsym = ‖J − Jᵀ‖²_F / (4‖J‖²_F) ∈ [0, 1]. Without a key both come from the full Jacobian
(D forward-mode passes: small D); with a key they use K Rademacher probes and one JVP plus one
VJP each: Asym by the unbiased Hutchinson estimate (Eq. A10) and NAsym by the paper's
per-probe ratio estimate (Eq. A11), which is consistent only in the ratio's expectation
(a mean of ratios, not a ratio of means).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val
from sgm_jax._jacobian import full_jacobian, linearize_score
from sgm_jax.losses import draw_probes, qc_loss, qc_terms
from sgm_jax.types import ScoreFn

Array = jax.Array


def _exact_norms(score_fn: ScoreFn, x: Array) -> tuple[Array, Array]:
    """(‖J − Jᵀ‖²_F, ‖J‖²_F) per example from the full Jacobian."""
    val.check_batched("x", x)
    _, jvp_fn = jax.linearize(lambda y: val.checked_call(score_fn, y), x)
    jac = full_jacobian(jvp_fn, x)
    skew = jac - jnp.swapaxes(jac, 1, 2)
    return jnp.sum(skew**2, axis=(1, 2)), jnp.sum(jac**2, axis=(1, 2))


def asym(score_fn: ScoreFn, x: Array, key: Array | None = None, num_vectors: int = 1) -> Array:
    """Per-example ½‖J − Jᵀ‖²_F (Eq. 11): exact when ``key is None``, else Eq. A10's estimate."""
    if key is None:
        return 0.5 * _exact_norms(score_fn, x)[0]
    return qc_loss(score_fn, x, key, num_vectors=num_vectors)


def nasym(score_fn: ScoreFn, x: Array, key: Array | None = None, num_vectors: int = 1) -> Array:
    """Per-example ‖J − Jᵀ‖²_F / (4‖J‖²_F) (Eq. A2): exact when ``key is None``.

    With a key: the ratio estimator of Eq. A11, ½ mean_k (vₖᵀJJᵀvₖ − vₖᵀJJvₖ)/(vₖᵀJJᵀvₖ); a probe
    with vᵀJJᵀv = 0 (J v-annihilated) contributes 0. The exact form is 0 where J = 0.
    """
    if key is None:
        skew_sq, jac_sq = _exact_norms(score_fn, x)
        return jnp.where(jac_sq > 0, skew_sq / (4.0 * jnp.where(jac_sq > 0, jac_sq, 1.0)), 0.0)
    val.check_batched("x", x)
    val.check_positive_int("num_vectors", num_vectors)
    v = draw_probes(key, (num_vectors, *x.shape), "rademacher", x.dtype)
    _, jvp_fn, vjp_fn = linearize_score(lambda y: val.checked_call(score_fn, y), x)

    jjt, jj = qc_terms(jvp_fn, vjp_fn, v)
    safe = jnp.where(jjt > 0, jjt, 1.0)
    return jnp.mean(jnp.where(jjt > 0, 0.5 * (jjt - jj) / safe, 0.0), axis=0)
