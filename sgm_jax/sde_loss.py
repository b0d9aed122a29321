"""The SDE-level training loss (DESIGN.md §3.5): any objective of ``sgm_jax.losses`` over
continuous time, plus the fused quasi-conservative regulariser (QCSGM Eqs. 13, A4–A5).

    loss_fn = get_sde_loss_fn(sde, "dsm", qc_weight=1e-4)
    loss, aux = loss_fn(score_model, x0, key)        # score_model(x, t) -> s, batched

For each example: t ~ U(eps, T), z ~ N(0, I), x̃ = c_t x0 + σ_t z (``sde.marginal_prob``), and

    loss = mean_b[ λ(t) · objective(x̃) + qc_weight · σ_t² · QC(x̃) ]

with λ(t) = σ_t² (``weighting="sigma2"``, the score_sde / QCSGM default) or g(t)²
(``"likelihood"``). The objectives, each the per-example function of ``sgm_jax.losses`` at the
marginal's σ_t:

* ``dsm``  ½‖s(x̃) + z/σ_t‖² (Eq. 6 / A4); ``lcss``  s(x̃)ᵀz/σ_t + ½‖s(x̃)‖² (LCSS Eq. 19);
* ``ssm``, ``fd_ssm``, ``ism``  sliced / finite-difference / exact ISM at the perturbed points x̃
  (the score of p_t, as the FD-SSM NCSN baselines do);
* ``esm``  ½‖s(x̃) − ∇log p_t(x̃)‖² with p_t the exact perturbed Parzen density of ``data``
  (toy data only: it sums over all of ``data`` at every step).

QC shares the perturbed points and the forward pass: one ``jax.linearize`` of the score at x̃
gives s (for the objective), Jv and, by transposition, Jᵀv. ``qc_estimator="exact"`` computes
½‖J − Jᵀ‖²_F from the full Jacobian instead (D forward-mode passes; the official 2-D code's
``lqc``). FD-SSM evaluates the score at x̃ ± εv only, so with QC it linearises separately.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val
from sgm_jax import losses
from sgm_jax._jacobian import full_jacobian, linearize_score
from sgm_jax.sde import SDE, WEIGHTINGS

Array = jax.Array
ScoreModel = Callable[[Array, Array], Array]
LossFn = Callable[[ScoreModel, Array, Array], tuple[Array, dict]]

OBJECTIVES = ("dsm", "lcss", "ssm", "fd_ssm", "ism", "esm")
QC_ESTIMATORS = ("hutchinson", "exact")
_NEEDS_JVP = ("ssm", "ism")


def exact_qc(jvp_fn, x: Array) -> Array:
    """½‖J − Jᵀ‖²_F = tr(JJᵀ) − tr(JJ) per example from the full Jacobian (Eq. 14)."""
    jac = full_jacobian(jvp_fn, x)
    return 0.5 * jnp.sum((jac - jnp.swapaxes(jac, 1, 2)) ** 2, axis=(1, 2))


def get_sde_loss_fn(
    sde: SDE,
    objective: str = "dsm",
    *,
    qc_weight: float = 0.0,
    qc_num_vectors: int = 1,
    qc_estimator: str = "hutchinson",
    weighting: str = "sigma2",
    eps: float = 1e-5,
    data: Array | None = None,
    num_projections: int = 1,
    projection: str = "rademacher",
    fd_eps: float = 0.01,
) -> LossFn:
    """The loss ``loss_fn(score_model, x0, key) -> (loss, aux)`` of the module docstring.

    ``aux`` holds the batch means of the weighted objective (``"objective"``), of the σ_t²-scaled
    QC term before ``qc_weight`` (``"qc"``, the QCSGM regulariser; 0 when ``qc_weight == 0``)
    and the total (``"loss"``). ``num_projections``/``projection`` configure SSM probes,
    ``fd_eps`` FD-SSM's ε; ``projection`` also selects the QC probes.
    """
    val.check_choice("objective", objective, OBJECTIVES)
    val.check_choice("qc_estimator", qc_estimator, QC_ESTIMATORS)
    val.check_choice("weighting", weighting, WEIGHTINGS)
    val.check_choice("projection", projection, losses.PROJECTIONS)
    val.check_positive_int("qc_num_vectors", qc_num_vectors)
    val.check_positive_int("num_projections", num_projections)
    val.check_positive("fd_eps", fd_eps)
    if not qc_weight >= 0:
        raise ValueError(f"qc_weight must be >= 0; got {qc_weight!r}.")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T = {sde.T}); got {eps!r}.")
    if objective == "esm":
        if data is None:
            raise ValueError("objective 'esm' needs data=[M, *event], the training set of the Parzen target.")
        data = jnp.asarray(data)
    use_qc = qc_weight > 0

    def loss_fn(score_model: ScoreModel, x0: Array, key: Array) -> tuple[Array, dict]:
        val.check_batched("x0", x0)
        kt, kz, kp, kq = jax.random.split(key, 4)
        batch = x0.shape[0]
        t = jax.random.uniform(kt, (batch,), x0.dtype, eps, sde.T)
        mean, std = sde.marginal_prob(x0, t)
        sig = val.broadcast_sigma(std, x0)
        z = jax.random.normal(kz, x0.shape, x0.dtype)
        x_tilde = mean + sig * z

        def score(y):
            return val.checked_call(lambda u: score_model(u, t), y)

        if use_qc or objective in _NEEDS_JVP:
            s, jvp_fn, vjp_fn = linearize_score(score, x_tilde)
        elif objective != "fd_ssm":
            s = score(x_tilde)

        if objective == "dsm":
            per_example = losses.dsm_from_score(s, z, sig)
        elif objective == "lcss":
            per_example = losses.lcss_from_score(s, z, sig)
        elif objective == "ssm":
            v = losses.draw_probes(kp, (num_projections, *x0.shape), projection, x0.dtype)
            per_example = losses.ssm_from_linearization(s, jvp_fn, v)
        elif objective == "ism":
            per_example = losses.ism_from_linearization(s, jvp_fn, x_tilde)
        elif objective == "fd_ssm":
            per_example = losses.fd_ssm_loss(score, x_tilde, kp, fd_eps, projection)
            if use_qc:
                _, jvp_fn, vjp_fn = linearize_score(score, x_tilde)
        else:  # esm: p_t(x̃) = Parzen(x̃/c; data, σ/c) up to a constant, so ∇ = (1/c)·score there
            c = val.broadcast_sigma(sde.mean_coeff(t), x0)
            target = losses.parzen_score(x_tilde / c, data, std / sde.mean_coeff(t)) / c
            per_example = losses.esm_from_score(s, target)

        weighted = sde.loss_weighting(t, weighting) * per_example
        if use_qc:
            if qc_estimator == "exact":
                qc = exact_qc(jvp_fn, x_tilde)
            else:
                v = losses.draw_probes(kq, (qc_num_vectors, *x0.shape), projection, x0.dtype)
                qc = losses.qc_from_linearization(jvp_fn, vjp_fn, v)
            qc_term = std**2 * qc
        else:
            qc_term = jnp.zeros_like(weighted)
        total = jnp.mean(weighted + qc_weight * qc_term)
        return total, {"loss": total, "objective": jnp.mean(weighted), "qc": jnp.mean(qc_term)}

    return loss_fn
