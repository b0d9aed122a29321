"""The SDE-level training loss of a noise-conditional classifier p(y | x̃, t) for conditional
generation (DLSM poster Eqs. 4–7).

    loss_fn = get_classifier_loss_fn(sde, "total", ce_weight=1.0)
    loss, aux = loss_fn(logits_model, score_model, x0, y, key)

``logits_model(x, t) -> [B, num_classes]`` is the classifier being trained and
``score_model(x, t) -> s`` the frozen unconditional score model (its output's gradient is
stopped: only the classifier learns). For each example t ~ U(eps, T), z ~ N(0, I) and
x̃ = c(t) x0 + σ_t z (the SDE's perturbation kernel, as the score model's DSM), and with
g = ∇_x̃ log softmax(f(x̃, t))_y (:func:`sgm_jax.losses.class_log_likelihood_grad`, the gradient
of the batch sum, as the official code; per example when the classifier's examples are
independent):

* ``"ce"``    L_CE = mean_b[ −log softmax(f(x̃, t))_y ] (the cross-entropy of Eq. 4, "base");
* ``"dlsm"``  L_DLSM = mean_b[ λ(t) · ½‖g + s(x̃, t) + z/σ_t‖² ] (Eq. 6: the posterior score
  g + s matched to the denoising target ∇ log p(x̃ | x0) = −z/σ_t);
* ``"total"`` L_Total = L_DLSM + ``ce_weight`` · L_CE (Eq. 7, λ of the poster = ``ce_weight``).

The DLSM weighting λ(t) (``dlsm_weighting``) is σ_t² (``"sigma2"``, the library's default: the
weighting of the score model's own DSM, which keeps every noise level's term O(1)), σ_t⁴
(``"sigma4"``, the official toy code's ``weighting_dlsm`` = 2) or 1 (``"one"``, the official CIFAR
code's ``weighting_dlsm`` = 0); ``reduce_mean=True`` divides it by the event size D (both official
codes average over dimensions). The cross-entropy is never weighted (both official codes use
``weighting_ce`` = 0). docs/methods.md maps the configs' settings to the official ones.

**A classifier with a model state** (the BatchNorm ResNet in training mode) is passed as
``logits_model(x, t) -> (logits, state)`` with ``loss_fn(..., has_state=True)``: its one forward
pass at x̃ gives the logits and the updated state (the running statistics, updated once per
step as in the official training step), and the loss returns ``(loss, (aux, state))``.

**Keys.** ``key`` splits as ``kt, kz = jax.random.split(key)``: t = ``uniform(kt, [B], eps, T)``,
z = ``normal(kz, x0.shape)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val
from sgm_jax import losses
from sgm_jax._batch import per_example
from sgm_jax.sde import SDE
from sgm_jax.types import LogitsModel, ScoreModel

Array = jax.Array
ClassifierLossFn = Callable[..., tuple[Array, Any]]

OBJECTIVES = ("ce", "dlsm", "total")
DLSM_WEIGHTINGS = ("sigma2", "sigma4", "one")


def dlsm_weight(weighting: str, std: Array) -> Array:
    """λ(t) [B] of the DLSM term from the perturbation std σ_t [B] (module docstring)."""
    val.check_choice("dlsm_weighting", weighting, DLSM_WEIGHTINGS)
    return {"sigma2": std**2, "sigma4": std**4, "one": jnp.ones_like(std)}[weighting]


def get_classifier_loss_fn(
    sde: SDE,
    objective: str = "total",
    *,
    ce_weight: float = 1.0,
    dlsm_weighting: str = "sigma2",
    reduce_mean: bool = False,
    eps: float = 1e-5,
) -> ClassifierLossFn:
    """``loss_fn(logits_model, score_model, x0, y, key, *, has_state=False) -> (loss, aux)``
    (module docstring); with ``has_state`` ``logits_model`` returns ``(logits, state)`` and the
    result is ``(loss, (aux, state))``.

    ``aux`` holds the batch means ``"ce"`` (the cross-entropy), ``"dlsm"`` (the weighted DLSM
    term; 0 for ``"ce"``, which computes no likelihood score), ``"accuracy"`` (argmax of the
    logits at x̃ equals y) and the total ``"loss"``. ``score_model`` is not called for ``"ce"``.
    """
    val.check_choice("objective", objective, OBJECTIVES)
    val.check_choice("dlsm_weighting", dlsm_weighting, DLSM_WEIGHTINGS)
    if not ce_weight >= 0:
        raise ValueError(f"ce_weight must be >= 0; got {ce_weight!r}.")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T = {sde.T}); got {eps!r}.")

    def loss_fn(logits_model: LogitsModel, score_model: ScoreModel, x0: Array, y: Array,
                key: Array, *, has_state: bool = False) -> tuple[Array, Any]:
        val.check_batched("x0", x0)
        val.check_labels("y", y, x0)
        kt, kz = jax.random.split(key)
        t = jax.random.uniform(kt, (x0.shape[0],), x0.dtype, eps, sde.T)
        mean, std = sde.marginal_prob(x0, t)
        sig = per_example(std, x0)
        z = jax.random.normal(kz, x0.shape, x0.dtype)
        x_tilde = mean + sig * z

        def forward(u: Array) -> tuple[Array, Any]:
            out = logits_model(u, t)
            return out if has_state else (out, None)

        if objective == "ce":
            logits, state = forward(x_tilde)
            val.check_logits(logits, x0)
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            dlsm_mean = jnp.zeros((), x0.dtype)
        else:
            g, (log_probs, state) = losses.class_log_likelihood_grad(forward, x_tilde, y,
                                                                     has_aux=True)
            s = jax.lax.stop_gradient(val.checked_call(lambda u: score_model(u, t), x_tilde))
            values = losses.dsm_from_score(g + s, z, sig)
            if reduce_mean:
                values = values / math.prod(x0.shape[1:])
            dlsm_mean = jnp.mean(dlsm_weight(dlsm_weighting, std) * values)
        ce_mean = -jnp.mean(losses.label_log_probs(log_probs, y))
        total = {"ce": ce_mean, "dlsm": dlsm_mean, "total": dlsm_mean + ce_weight * ce_mean}[
            objective]
        accuracy = jnp.mean((jnp.argmax(log_probs, axis=-1) == y).astype(x0.dtype))
        aux = {"loss": total, "ce": ce_mean, "dlsm": dlsm_mean, "accuracy": accuracy}
        return (total, (aux, state)) if has_state else (total, aux)

    return loss_fn
