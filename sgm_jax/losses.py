"""Score-matching objectives as pure, per-example JAX functions.

Every function takes a batched *score function* ``score_fn(x) -> s`` (``x`` and ``s`` of shape
``[B, *event]``, examples independent, see DESIGN.md §3.1) and returns the unweighted per-example
objective of shape ``[B]``; the training objective is their (weighted) mean. ``key`` is a
``jax.random`` key and ``sigma`` a positive scalar or an array of shape ``[B]``.

Equation numbers refer to Chao et al., "On Investigating the Conservative Property of Score-Based
Generative Models" (ICML 2023, the QCSGM paper) unless said otherwise; "LCSS" is Osada et al.
(NeurIPS 2024) and "DLSM" is Chao et al. (ICLR 2022).

Random probes ``v`` satisfy E[v vᵀ] = I: Rademacher (±1) or standard Gaussian.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val
from sgm_jax._batch import per_example, sq_norm, sum_event
from sgm_jax._jacobian import jacobian_trace, linearize_score
from sgm_jax.types import ScoreFn

Array = jax.Array

__all__ = [
    "esm_loss",
    "ism_loss",
    "ssm_loss",
    "fd_ssm_loss",
    "dsm_loss",
    "lcss_loss",
    "qc_loss",
    "dlsm_loss",
    "class_log_likelihood_grad",
    "parzen_score",
    "PROJECTIONS",
]

PROJECTIONS = ("rademacher", "gaussian")
_PARZEN_CHUNK_ELEMENTS = 1 << 22  # elements of one [B, chunk, D] difference block (16 MiB in f32)


def _over_probes(fn: Callable, v: Array):
    """``fn`` applied to every probe of ``v`` [K, B, *event], its outputs stacked along a leading
    K axis. K > 1 probes run as one ``vmap``; a single probe is passed straight to ``fn``: a vmap
    over an axis of size 1 surrounds every convolution of the linearised network with layout
    copies (XLA:CPU, ``small_conv`` QC step: 7 % more bytes accessed, see docs/benchmarks.md)."""
    if v.shape[0] == 1:
        return jax.tree_util.tree_map(lambda a: a[None], fn(v[0]))
    return jax.vmap(fn)(v)


def draw_probes(key: Array, shape: tuple[int, ...], projection: str, dtype) -> Array:
    """Random vectors with E[v vᵀ] = I (Eq. 4): Rademacher signs or standard normal entries."""
    val.check_choice("projection", projection, PROJECTIONS)
    if projection == "rademacher":
        return jax.random.rademacher(key, shape, dtype=dtype)
    return jax.random.normal(key, shape, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Explicit score matching.


def parzen_score(x: Array, data: Array, sigma: Array | float, *, chunk_size: int | None = None) -> Array:
    """Score of the Parzen density p_σ(x) = 1/M Σ_i N(x; x⁽ⁱ⁾, σ² I) (Eq. 1).

    ∇ log p_σ(x) = Σ_i w_i (x⁽ⁱ⁾ − x)/σ² with w = softmax_i(−‖x − x⁽ⁱ⁾‖²/(2σ²)). The softmax is
    accumulated over chunks of ``data`` with a running maximum (streaming log-sum-exp), so the
    memory is O(B · chunk · D) whatever M is, and the result stays finite far from the data.

    Args:
      x: points ``[B, *event]``.
      data: kernel centres ``[M, *event]``.
      sigma: bandwidth, scalar or ``[B]``.
      chunk_size: centres per chunk; by default as many as fit a 16 MiB block.
    Returns:
      ``[B, *event]``.
    """
    val.check_batched("x", x)
    val.check_event_shape("data", data, x)
    sigma = val.check_sigma("sigma", sigma, x)
    batch, event = x.shape[0], x.shape[1:]
    xf = x.reshape(batch, -1)
    df = data.reshape(data.shape[0], -1).astype(x.dtype)
    m, d = df.shape
    if chunk_size is None:
        chunk_size = max(1, min(m, _PARZEN_CHUNK_ELEMENTS // max(1, batch * d)))
    val.check_positive_int("chunk_size", chunk_size)
    num_chunks = -(-m // chunk_size)
    pad = num_chunks * chunk_size - m
    chunks = jnp.pad(df, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, d)
    valid = (jnp.arange(num_chunks * chunk_size) < m).reshape(num_chunks, chunk_size)
    inv_two_var = 0.5 / jnp.broadcast_to(sigma, (batch,)).astype(x.dtype) ** 2

    def accumulate(carry, chunk_and_mask):
        run_max, norm, weighted = carry
        centres, mask = chunk_and_mask
        diff = centres[None, :, :] - xf[:, None, :]  # [B, C, D]
        logits = -jnp.sum(diff * diff, axis=-1) * inv_two_var[:, None]
        logits = jnp.where(mask[None, :], logits, -jnp.inf)
        new_max = jnp.maximum(run_max, jnp.max(logits, axis=1))
        scale = jnp.exp(run_max - new_max)
        w = jnp.exp(logits - new_max[:, None])
        norm = norm * scale + jnp.sum(w, axis=1)
        weighted = weighted * scale[:, None] + jnp.einsum("bc,bcd->bd", w, diff)
        return (new_max, norm, weighted), None

    init = (
        jnp.full((batch,), -jnp.inf, x.dtype),
        jnp.zeros((batch,), x.dtype),
        jnp.zeros((batch, d), x.dtype),
    )
    (_, norm, weighted), _ = jax.lax.scan(accumulate, init, (chunks, valid))
    mean_offset = weighted / norm[:, None]  # Σ_i w_i (x⁽ⁱ⁾ − x)
    return (mean_offset * (2.0 * inv_two_var)[:, None]).reshape(batch, *event)


def esm_loss(score_fn: ScoreFn, x: Array, data: Array, sigma: Array | float, *,
             chunk_size: int | None = None) -> Array:
    """Explicit score matching ½‖s(x) − ∇ log p_σ(x)‖² against the Parzen score (Eqs. 1–2).

    The target is exact (see :func:`parzen_score`) and carries no gradient.
    """
    target = parzen_score(x, data, sigma, chunk_size=chunk_size)
    return esm_from_score(val.checked_call(score_fn, x), target)


def esm_from_score(s: Array, target: Array) -> Array:
    """½‖s − target‖² with the (gradient-free) Parzen target of Eq. 1."""
    return 0.5 * sq_norm(s - jax.lax.stop_gradient(target))


# --------------------------------------------------------------------------------------------
# Implicit and sliced score matching.


def ism_loss(score_fn: ScoreFn, x: Array) -> Array:
    """Implicit score matching ½‖s(x)‖² + tr(∂s/∂x) with the exact trace (Eq. 3).

    The trace takes D Jacobian-vector products against the basis vectors over one shared
    linearisation (unrolled for small D on CPU, else vmapped in memory-bounded blocks; see
    ``sgm_jax/_jacobian.py``): O(D) forward-mode passes, O(1) primal passes. Use it for small D;
    :func:`ssm_loss` is the scalable estimator.
    """
    val.check_batched("x", x)
    s, jvp_fn = jax.linearize(lambda y: val.checked_call(score_fn, y), x)
    return ism_from_linearization(s, jvp_fn, x)


def ism_from_linearization(s: Array, jvp_fn, x: Array) -> Array:
    """½‖s‖² + tr J from the score ``s`` at ``x`` and its JVP map (Eq. 3)."""
    return 0.5 * sq_norm(s) + jacobian_trace(jvp_fn, x)


def ssm_loss(score_fn: ScoreFn, x: Array, key: Array, num_projections: int = 1,
             projection: str = "rademacher", variance_reduction: bool = True) -> Array:
    """Sliced score matching (Song et al. 2019; Eq. 5), averaged over K probes.

    ``variance_reduction=True`` (SSM-VR, Eq. 5): vᵀJv + ½‖s‖².
    ``variance_reduction=False`` (original SSM): vᵀJv + ½(vᵀs)².
    Both are unbiased for :func:`ism_loss` because E[vvᵀ] = I. The K products vᵀJv share one
    linearisation of ``score_fn`` (one primal pass, K forward-mode passes).
    """
    val.check_batched("x", x)
    val.check_positive_int("num_projections", num_projections)
    v = draw_probes(key, (num_projections, *x.shape), projection, x.dtype)
    s, jvp_fn = jax.linearize(lambda y: val.checked_call(score_fn, y), x)
    return ssm_from_linearization(s, jvp_fn, v, variance_reduction)


def ssm_from_linearization(s: Array, jvp_fn, v: Array, variance_reduction: bool = True) -> Array:
    """Eq. 5 from the score ``s``, its JVP map and probes ``v`` [K, B, *event], mean over K."""
    vjv = _over_probes(lambda p: sum_event(p * jvp_fn(p)), v)
    if variance_reduction:
        return jnp.mean(vjv, axis=0) + 0.5 * sq_norm(s)
    vs = jax.vmap(lambda p: sum_event(p * s))(v)
    return jnp.mean(vjv + 0.5 * vs**2, axis=0)


def fd_ssm_loss(score_fn: ScoreFn, x: Array, key: Array, eps: float = 0.01,
                projection: str = "rademacher") -> Array:
    """Finite-difference sliced score matching (Pang et al. 2020; LCSS paper §2.3, Eq. 7).

    vᵀ(s(x+εv) − s(x−εv))/(2ε) + ⅛‖s(x+εv) + s(x−εv)‖², which equals the SSM-VR integrand
    vᵀJv + ½‖s‖² up to O(ε²) and needs no Jacobian: both evaluations run as one ``vmap``-ed
    forward pass. Relation to the official codes: with u uniform on the unit sphere and the
    projection εu, their ``D/ε²``-scaled form is this one with v = √D·u (E[vvᵀ] = I); the
    DeepEBM variant without the factor D is this loss divided by D. ``eps`` is the
    finite-difference step ε (its name in DESIGN.md §3.2); the SDE-level loss and the configs
    call the same step ``fd_eps`` (``get_sde_loss_fn``, ``training.fd_eps``), since their
    ``eps`` is the smallest diffusion time.
    """
    val.check_batched("x", x)
    val.check_positive("eps", eps)
    v = draw_probes(key, x.shape, projection, x.dtype)
    shifted = jnp.stack([x + eps * v, x - eps * v])
    s_plus, s_minus = jax.vmap(lambda y: val.checked_call(score_fn, y))(shifted)
    return sum_event(v * (s_plus - s_minus)) / (2.0 * eps) + 0.125 * sq_norm(s_plus + s_minus)


# --------------------------------------------------------------------------------------------
# Objectives on Gaussian perturbations.


def perturb(x: Array, key: Array, sigma: Array) -> tuple[Array, Array]:
    """x̃ = x + σ z with z ~ N(0, I); ``sigma`` already broadcast to ``x``. Returns (x̃, z)."""
    z = jax.random.normal(key, x.shape, x.dtype)
    return x + sigma * z, z


def dsm_loss(score_fn: ScoreFn, x: Array, key: Array, sigma: Array | float) -> Array:
    """Denoising score matching ½‖s(x̃) + z/σ‖², x̃ = x + σz (Vincent 2011; Eq. 6)."""
    val.check_batched("x", x)
    sig = per_example(val.check_sigma("sigma", sigma, x), x)
    x_tilde, z = perturb(x, key, sig)
    return dsm_from_score(val.checked_call(score_fn, x_tilde), z, sig)


def dsm_from_score(s: Array, z: Array, sigma: Array) -> Array:
    """½‖s(x̃) + z/σ‖² given s(x̃) at x̃ = x + σz (Eq. 6); ``sigma`` broadcasts against ``z``."""
    return 0.5 * sq_norm(s + z / sigma)


def lcss_loss(score_fn: ScoreFn, x: Array, key: Array, sigma: Array | float) -> Array:
    """Local-curvature smoothing with Stein's identity (LCSS paper, Eq. 18).

    s(x′)ᵀ(x′ − x)/σ² + ½‖s(x′)‖² with x′ = x + σz. By Stein's identity its expectation over z
    equals E_{x′~N(x, σ²I)}[tr ∂s/∂x′ + ½‖s(x′)‖²], the ISM objective smoothed around x.

    For one perturbation it is DSM (Eq. 6, :func:`dsm_loss`) less a constant:

        s(x′)ᵀz/σ + ½‖s(x′)‖² = ½‖s(x′) + z/σ‖² − ½‖z‖²/σ²,

    so with the same ``key`` (the same z) ``lcss_loss`` and ``dsm_loss`` have identical parameter
    gradients, and ``dsm_loss − lcss_loss`` = ½‖z‖²/σ² exactly.
    """
    val.check_batched("x", x)
    sig = per_example(val.check_sigma("sigma", sigma, x), x)
    x_prime, z = perturb(x, key, sig)
    return lcss_from_score(val.checked_call(score_fn, x_prime), z, sig)


def lcss_from_score(s: Array, z: Array, sigma: Array) -> Array:
    """s(x′)ᵀ z/σ + ½‖s(x′)‖² given s(x′) at x′ = x + σz, i.e. LCSS Eq. 18 with (x′ − x)/σ² = z/σ."""
    return sum_event(s * z / sigma) + 0.5 * sq_norm(s)


# --------------------------------------------------------------------------------------------
# Quasi-conservative regulariser.


def qc_terms(jvp_fn, vjp_fn, v: Array) -> tuple[Array, Array]:
    """(vᵀJJᵀv, vᵀJJv) = (‖Jᵀv‖², (Jᵀv)·(Jv)) for probes ``v`` [K, B, *event], each [K, B].

    One JVP and one VJP per probe on a shared linearisation (Eq. 16, steps (1)–(2) of Alg. 1).
    """

    def one(p):
        jtv = vjp_fn(p)
        return sq_norm(jtv), sum_event(jtv * jvp_fn(p))

    return _over_probes(one, v)


def qc_from_linearization(jvp_fn, vjp_fn, v: Array) -> Array:
    """Mean over the K probes of vᵀJJᵀv − vᵀJJv (Eq. 16), per example [B].

    Plain reverse-mode differentiation of this scalar gives the full parameter gradient, i.e. the
    sum of the paper's primary and secondary components (Appendix A.2.3).
    """
    jjt, jj = qc_terms(jvp_fn, vjp_fn, v)
    return jnp.mean(jjt - jj, axis=0)


def qc_loss(score_fn: ScoreFn, x: Array, key: Array, num_vectors: int = 1,
            projection: str = "rademacher") -> Array:
    """Hutchinson estimate of tr(JJᵀ) − tr(JJ) = ½‖J − Jᵀ‖²_F, J = ∂s/∂x (Eqs. 14–16).

    Unbiased, averaged over ``num_vectors`` probes; exactly zero for a conservative field
    (symmetric J). One ``jax.linearize`` supplies Jv and its transpose supplies Jᵀv.
    """
    val.check_batched("x", x)
    val.check_positive_int("num_vectors", num_vectors)
    v = draw_probes(key, (num_vectors, *x.shape), projection, x.dtype)
    _, jvp_fn, vjp_fn = linearize_score(lambda y: val.checked_call(score_fn, y), x)
    return qc_from_linearization(jvp_fn, vjp_fn, v)


# --------------------------------------------------------------------------------------------
# Denoising likelihood score matching.


def dlsm_loss(logits_fn: Callable[[Array], Array], score_fn: ScoreFn, x: Array, y: Array,
              key: Array, sigma: Array | float) -> Array:
    """Denoising likelihood score matching (DLSM poster, Eq. 6).

    ½‖∇_x̃ log softmax(f(x̃))_y + s(x̃) − (x − x̃)/σ²‖² with x̃ = x + σz, i.e. the posterior score
    (classifier gradient plus the frozen unconditional score ``score_fn``, whose gradient is
    stopped) matched to the denoising target −z/σ; the likelihood score is
    :func:`class_log_likelihood_grad`. ``logits_fn(x) -> [B, num_classes]``; ``y`` holds integer
    labels ``[B]``.
    """
    val.check_batched("x", x)
    val.check_labels("y", y, x)
    sig = per_example(val.check_sigma("sigma", sigma, x), x)
    x_tilde, z = perturb(x, key, sig)
    classifier_grad, _ = class_log_likelihood_grad(logits_fn, x_tilde, y)
    s = jax.lax.stop_gradient(val.checked_call(score_fn, x_tilde))
    return dsm_from_score(classifier_grad + s, z, sig)


def class_log_likelihood_grad(logits_fn: Callable[[Array], Any], x: Array, y: Array, *,
                              has_aux: bool = False) -> tuple[Array, Any]:
    """The likelihood score ∇ₓ log p(y | x) = ∇ₓ log softmax(f(x))_y of a classifier (DLSM
    poster Eq. 4) and the log-probabilities log softmax(f(x)) ``[B, num_classes]`` of the same
    forward pass (−log p(y | x) is the cross-entropy). ``logits_fn(x) -> [B, num_classes]``;
    ``y`` holds integer labels ``[B]``. The official codes differentiate log(softmax + 1e-8);
    ``log_softmax`` is the same value without the floor, stable for tiny probabilities.

    The gradient is that of Σ_b log p(y_b | x_b) with respect to the batch x, as the official
    ``autograd.grad(log_probs, x, grad_outputs=one_hot(y))``: with examples independent it is
    each example's own likelihood score; for a network that mixes examples (BatchNorm in
    training mode) it also carries the other examples' terms through the batch statistics,
    exactly as the official training step. With ``has_aux``, ``logits_fn`` returns
    ``(logits, aux)`` and the result is ``(grad, (log_probs, aux))``."""
    val.check_labels("y", y, x)

    def log_likelihood(inputs):
        out = logits_fn(inputs)
        logits, aux = out if has_aux else (out, None)
        val.check_logits(logits, x)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return jnp.sum(label_log_probs(log_probs, y)), (log_probs, aux)

    grad, (log_probs, aux) = jax.grad(log_likelihood, has_aux=True)(x)
    return (grad, (log_probs, aux)) if has_aux else (grad, log_probs)


def label_log_probs(log_probs: Array, y: Array) -> Array:
    """log p(y_b | x_b) [B] picked from log-probabilities [B, num_classes] at labels y [B]."""
    return jnp.take_along_axis(log_probs, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
