"""The SDE-level training loss (DESIGN.md §3.5): any objective of ``sgm_jax.losses`` over
continuous time, plus the quasi-conservative regulariser (QCSGM Eqs. 13, A4–A5).

    loss_fn = get_sde_loss_fn(sde, "dsm", qc_weight=1e-4)
    loss, aux = loss_fn(score_model, x0, key)        # score_model(x, t) -> s, batched

For each example: t ~ U(eps, T), z ~ N(0, I), x̃ = c(t) x0 + σ z, and

    loss = mean_b[ λ(t) · objective(x̃) ] + qc_weight · mean_{b ∈ QC rows}[ σ² · QC(x̃) ]

where c(t) is the mean coefficient of ``sde.marginal_prob`` and the perturbation std σ is

* ``perturbation="marginal"`` (default): σ = σ_t, the std of the perturbation kernel p_0t, so x̃
  is a draw of the SDE's marginal at t (score_sde, QCSGM);
* ``perturbation="diffusion"``: σ = g(t), the diffusion coefficient, as the LCSS paper's
  experiments set it (§4: "We set σ_t = g(t) in each SDE"). This is not the marginal std: under
  the VE SDE g(t) = σ_t · sqrt(2 ln(σ_max/σ_min)), so the network at t learns the score of the data
  convolved with N(0, g(t)² I) rather than of p_t.

λ(t) = σ² (``weighting="sigma2"``, the score_sde / QCSGM default; σ the perturbation std) or
g(t)² (``"likelihood"``). With ``perturbation="diffusion"`` both are g(t)², the LCSS paper's
λ(t) = g(t)² (§3.3), which cancels the 1/σ² of its Eq. 19. The objectives, each the per-example
function of ``sgm_jax.losses`` at the perturbation std σ:

* ``dsm``  ½‖s(x̃) + z/σ‖² (Eq. 6 / A4); ``lcss``  s(x̃)ᵀz/σ + ½‖s(x̃)‖² (LCSS Eq. 19);
* ``ssm``, ``fd_ssm``, ``ism``  sliced / finite-difference / exact ISM at the perturbed points x̃
  (the score of the distribution of x̃, as the FD-SSM NCSN baselines do);
* ``esm``  ½‖s(x̃) − ∇log q(x̃)‖² with q the exact density of x̃ = c x0 + σz over the Parzen
  distribution of ``data`` (toy data only: it sums over all of ``data`` at every step).

**LCSS and DSM are one objective up to a constant.** With the same z, x′ = x̃:

    s(x′)ᵀz/σ + ½‖s(x′)‖² = ½‖s(x′) + z/σ‖² − ½‖z‖²/σ²        (LCSS Eq. 18/19 = DSM Eq. 6 − const)

so ``lcss`` and ``dsm`` with the same key give the same parameter gradient, and their losses
differ by mean_b[λ(t) ½‖z‖²/σ²] (= mean_b ½‖z‖² with the σ² weighting). What the LCSS paper
changes at the SDE level is the time-conditional setting σ = g(t), λ = g(t)² (``perturbation=
"diffusion"``).

**QC.** ``QC(x̃)`` is the Hutchinson estimate vᵀJJᵀv − vᵀJJv of ½‖J − Jᵀ‖²_F (Eq. 16 / A5),
J = ∂s/∂x̃, scaled by σ² (the perturbation variance), or the exact value from the full Jacobian
with ``qc_estimator="exact"`` (D forward-mode passes; the official 2-D code's ``lqc``). By default
it shares the perturbed points and the forward pass with the objective: one ``jax.linearize`` of
the score at x̃ gives s (for the objective), Jv and, by transposition, Jᵀv. FD-SSM evaluates the
score at x̃ ± εv only, so with QC it linearises separately.

**Partial QC** (``qc_fraction`` < 1): the batch is split into ``qc_groups`` equal contiguous blocks
(the train step passes the number of devices of its data mesh, so a block is one device's shard
and no data move between devices) and the QC term is computed on the first
m = ⌈qc_fraction · block⌉ rows of every block only, with its own linearisation of the score on
those rows; the objective still uses every row. Since the rows of a batch come in random order,
the mean over the QC rows is unbiased for the mean over the batch, in value and in gradient.

**Keys.** All the randomness of one evaluation is :func:`draw_noise`'s: t, z, and the keys of
the objective's probes (``ssm``: ``draw_probes(probe_key, [K, B, *event])``, ``fd_ssm``:
``fd_ssm_loss(…, probe_key, …)``) and of the QC probes (``draw_probes(qc_key,
[qc_num_vectors, B_qc, *event])``, B_qc = B, or the number of QC rows with ``qc_fraction`` < 1).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val
from sgm_jax import losses
from sgm_jax._batch import per_example
from sgm_jax._jacobian import full_jacobian, linearize_score
from sgm_jax.sde import SDE, WEIGHTINGS
from sgm_jax.types import ScoreModel

Array = jax.Array
LossFn = Callable[[ScoreModel, Array, Array], tuple[Array, dict]]

OBJECTIVES = ("dsm", "lcss", "ssm", "fd_ssm", "ism", "esm")
QC_ESTIMATORS = ("hutchinson", "exact")
PERTURBATIONS = ("marginal", "diffusion")
PROJECTIONS = losses.PROJECTIONS
_NEEDS_JVP = ("ssm", "ism")


class Noise(NamedTuple):
    """The draws of one loss evaluation: times ``t`` [B], Gaussian noise ``z`` [B, *event], and
    the keys of the objective's probes (``probe_key``) and of the QC probes (``qc_key``)."""

    t: Array
    z: Array
    probe_key: Array
    qc_key: Array


def draw_noise(key: Array, x0: Array, eps: float, T: float) -> Noise:
    """The randomness of ``loss_fn(score_model, x0, key)``: t ~ U(eps, T) per example and
    z ~ N(0, I) in x0's dtype, plus the probe keys (module docstring, "Keys")."""
    kt, kz, probe_key, qc_key = jax.random.split(key, 4)
    t = jax.random.uniform(kt, (x0.shape[0],), x0.dtype, eps, T)
    return Noise(t, jax.random.normal(kz, x0.shape, x0.dtype), probe_key, qc_key)


def exact_qc(jvp_fn, x: Array) -> Array:
    """½‖J − Jᵀ‖²_F = tr(JJᵀ) − tr(JJ) per example from the full Jacobian (Eq. 14)."""
    jac = full_jacobian(jvp_fn, x)
    return 0.5 * jnp.sum((jac - jnp.swapaxes(jac, 1, 2)) ** 2, axis=(1, 2))


def _perturbation_kernel(sde: SDE, perturbation: str, weighting: str, x0: Array,
                        t: Array) -> tuple[Array, Array, Array]:
    """(mean c(t) x0 [B, *event], perturbation std σ [B], weight λ(t) [B]) of the module docstring:
    σ = σ_t and λ = ``sde.loss_weighting`` for ``"marginal"``; σ = g(t) and λ = g(t)² for
    ``"diffusion"`` (LCSS §3.3–§4)."""
    mean, std = sde.marginal_prob(x0, t)
    if perturbation == "marginal":
        return mean, std, sde.loss_weighting(t, weighting)
    g = sde.diffusion_coeff(t)
    return mean, g, g**2


def _qc_rows_per_group(batch: int, qc_fraction: float, qc_groups: int) -> int:
    """m = ⌈qc_fraction · block⌉ rows of QC per block of ``batch / qc_groups`` rows (at least 1;
    the product is rounded to 9 decimals first, so that 0.3 · 10 gives 3, not 4)."""
    if batch % qc_groups:
        raise ValueError(
            f"the batch of {batch} rows cannot be split into qc_groups={qc_groups} equal blocks; "
            f"use a batch size divisible by qc_groups (the number of devices of the data mesh).")
    return max(1, math.ceil(round(qc_fraction * (batch // qc_groups), 9)))


def _first_rows(a: Array, groups: int, rows: int) -> Array:
    """The first ``rows`` rows of each of ``groups`` equal contiguous blocks of a [B, ...]:
    [groups · rows, ...], block by block. A block that is one device's shard stays on it."""
    blocks = a.reshape(groups, a.shape[0] // groups, *a.shape[1:])
    return blocks[:, :rows].reshape(groups * rows, *a.shape[1:])


def get_sde_loss_fn(
    sde: SDE,
    objective: str = "dsm",
    *,
    qc_weight: float = 0.0,
    qc_num_vectors: int = 1,
    qc_estimator: str = "hutchinson",
    qc_fraction: float = 1.0,
    qc_groups: int = 1,
    weighting: str = "sigma2",
    perturbation: str = "marginal",
    reduce_mean: bool = False,
    eps: float = 1e-5,
    data: Array | None = None,
    num_projections: int = 1,
    projection: str = "rademacher",
    fd_eps: float = 0.01,
) -> LossFn:
    """The loss ``loss_fn(score_model, x0, key) -> (loss, aux)`` of the module docstring.

    ``aux`` holds the batch mean of the weighted objective (``"objective"``), the mean over the QC
    rows of the σ²-scaled QC term before ``qc_weight`` (``"qc"``, the QCSGM regulariser; 0 when
    ``qc_weight == 0``) and the total ``"loss"`` = objective + ``qc_weight`` · qc.
    ``qc_fraction`` ∈ (0, 1] and ``qc_groups`` select the QC rows (module docstring; the batch
    must be divisible by ``qc_groups``, checked when the loss is traced). ``perturbation`` ∈
    {"marginal", "diffusion"} sets the perturbation std. ``num_projections``/``projection``
    configure SSM probes, ``fd_eps`` FD-SSM's ε; ``projection`` also selects the QC probes.
    ``reduce_mean=True`` divides the per-example objective by the event size D (score_sde's
    ``training.reduce_mean``: the squared error averaged over pixels instead of summed); the QC
    term is not rescaled, so ``qc_weight`` keeps its meaning relative to the summed objective.
    """
    val.check_choice("objective", objective, OBJECTIVES)
    val.check_choice("qc_estimator", qc_estimator, QC_ESTIMATORS)
    val.check_choice("weighting", weighting, WEIGHTINGS)
    val.check_choice("perturbation", perturbation, PERTURBATIONS)
    val.check_choice("projection", projection, PROJECTIONS)
    val.check_positive_int("qc_num_vectors", qc_num_vectors)
    val.check_positive_int("qc_groups", qc_groups)
    val.check_positive_int("num_projections", num_projections)
    val.check_positive("fd_eps", fd_eps)
    if not qc_weight >= 0:
        raise ValueError(f"qc_weight must be >= 0; got {qc_weight!r}.")
    if not 0 < qc_fraction <= 1:
        raise ValueError(f"qc_fraction must lie in (0, 1]; got {qc_fraction!r}.")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T = {sde.T}); got {eps!r}.")
    if objective == "esm":
        if data is None:
            raise ValueError("objective 'esm' needs data=[M, *event], the training set of the Parzen target.")
        data = jnp.asarray(data)
    use_qc = qc_weight > 0

    def qc_values(jvp_fn, vjp_fn, x, key):
        if qc_estimator == "exact":
            return exact_qc(jvp_fn, x)
        v = losses.draw_probes(key, (qc_num_vectors, *x.shape), projection, x.dtype)
        return losses.qc_from_linearization(jvp_fn, vjp_fn, v)

    def loss_fn(score_model: ScoreModel, x0: Array, key: Array) -> tuple[Array, dict]:
        val.check_batched("x0", x0)
        batch = x0.shape[0]
        qc_rows = _qc_rows_per_group(batch, qc_fraction, qc_groups) if use_qc else batch
        partial_qc = use_qc and qc_rows < batch // qc_groups
        t, z, kp, kq = draw_noise(key, x0, eps, sde.T)
        mean, std, weight = _perturbation_kernel(sde, perturbation, weighting, x0, t)
        sig = per_example(std, x0)
        x_tilde = mean + sig * z

        def score_at(times):
            return lambda y: val.checked_call(lambda u: score_model(u, times), y)

        score = score_at(t)
        fused = use_qc and not partial_qc and objective != "fd_ssm"
        if fused:
            s, jvp_fn, vjp_fn = linearize_score(score, x_tilde)
        elif objective in _NEEDS_JVP:
            s, jvp_fn = jax.linearize(score, x_tilde)
        elif objective != "fd_ssm":
            s = score(x_tilde)

        if objective == "dsm":
            values = losses.dsm_from_score(s, z, sig)
        elif objective == "lcss":
            values = losses.lcss_from_score(s, z, sig)
        elif objective == "ssm":
            v = losses.draw_probes(kp, (num_projections, *x0.shape), projection, x0.dtype)
            values = losses.ssm_from_linearization(s, jvp_fn, v)
        elif objective == "ism":
            values = losses.ism_from_linearization(s, jvp_fn, x_tilde)
        elif objective == "fd_ssm":
            values = losses.fd_ssm_loss(score, x_tilde, kp, fd_eps, projection)
        else:  # esm: q(x̃) = Parzen(x̃/c; data, σ/c) / c^D, so ∇log q = (1/c)·Parzen score there
            c = sde.mean_coeff(t)
            c_x = per_example(c, x0)
            target = losses.parzen_score(x_tilde / c_x, data, std / c) / c_x
            values = losses.esm_from_score(s, target)
        if reduce_mean:
            values = values / math.prod(x0.shape[1:])
        objective_mean = jnp.mean(weight * values)

        if not use_qc:
            qc_mean = jnp.zeros((), x0.dtype)
        elif fused:
            qc_mean = jnp.mean(std**2 * qc_values(jvp_fn, vjp_fn, x_tilde, kq))
        else:
            def pick(a):
                return _first_rows(a, qc_groups, qc_rows) if partial_qc else a

            points = pick(x_tilde)
            _, jvp_qc, vjp_qc = linearize_score(score_at(pick(t)), points)
            qc_mean = jnp.mean(pick(std) ** 2 * qc_values(jvp_qc, vjp_qc, points, kq))
        total = objective_mean + qc_weight * qc_mean
        return total, {"loss": total, "objective": objective_mean, "qc": qc_mean}

    return loss_fn
