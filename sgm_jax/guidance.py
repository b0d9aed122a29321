"""Conditional scores from an unconditional score model and a noise-conditional classifier
(DLSM poster Eq. 4 and Fig. 1 (a), (b), (d)).

    score_model = posterior_score_model(score_model, logits_model, labels, scale=1.0)
    samples, nfe = sampler(score_model, shape, key)        # any sampler of sgm_jax.sampling

By Bayes' theorem ∇ₓ log p_t(x | y) = ∇ₓ log p_t(x) + ∇ₓ log p_t(y | x). The posterior score
model is s(x, t) + α ∇ₓ log softmax(f(x, t))_y: an ordinary ``score_model(x, t)``, so every
sampler (predictor-corrector with Langevin or ALD corrector, reverse SDE, probability-flow ODE)
draws conditional samples from it unchanged, predictor and corrector alike. The guidance methods
of the DLSM study (:data:`GUIDANCE_METHODS`) differ in the classifier's training objective and in
α:

* ``"base"``: α = 1, a classifier trained with cross-entropy (Eq. 4);
* ``"scaling"``: α > 1, the same cross-entropy classifier (Fig. 1 (b));
* ``"dlsm"``: α = 1, a classifier trained with L_DLSM or L_Total (Eqs. 6–7).
"""

from __future__ import annotations

import jax

from sgm_jax import _validation as val
from sgm_jax import losses
from sgm_jax.types import LogitsModel, ScoreModel

Array = jax.Array

GUIDANCE_METHODS = ("base", "scaling", "dlsm")
#: The classifier objectives each guidance method is defined with.
GUIDANCE_OBJECTIVES = {"base": ("ce",), "scaling": ("ce",), "dlsm": ("dlsm", "total")}


def check_guidance(method: str, scale: float, objective: str) -> None:
    """``ValueError`` unless ``method`` is one of :data:`GUIDANCE_METHODS` with its α (1 for
    "base" and "dlsm", > 1 for "scaling") and a classifier ``objective`` it is defined with."""
    val.check_choice("guidance.method", method, GUIDANCE_METHODS)
    if method == "scaling" and not scale > 1:
        raise ValueError(f"guidance.scale must be > 1 for guidance.method='scaling'; got {scale!r}.")
    if method != "scaling" and scale != 1:
        raise ValueError(f"guidance.scale must be 1 for guidance.method={method!r} (the DLSM "
                         f"study's definition; use 'scaling' for α != 1); got {scale!r}.")
    if objective not in GUIDANCE_OBJECTIVES[method]:
        raise ValueError(f"guidance.method={method!r} needs a classifier trained with "
                         f"{GUIDANCE_OBJECTIVES[method]}; classifier.training.objective is "
                         f"{objective!r}.")


def likelihood_score_model(logits_model: LogitsModel, labels: Array) -> ScoreModel:
    """``(x, t) -> ∇ₓ log p(y | x, t)`` [B, *event] of the classifier ``logits_model(x, t) ->
    [B, num_classes]`` at the integer ``labels`` y [B]. Each row is that example's own
    likelihood score when the classifier's examples are independent: a BatchNorm network must
    be in evaluation mode (running statistics), as the official sampler's ``model.eval()``."""

    def likelihood_score(x: Array, t: Array) -> Array:
        grad, _ = losses.class_log_likelihood_grad(lambda u: logits_model(u, t), x, labels)
        return grad

    return likelihood_score


def posterior_score_model(score_model: ScoreModel, logits_model: LogitsModel, labels: Array,
                          scale: float = 1.0) -> ScoreModel:
    """``(x, t) -> s(x, t) + scale · ∇ₓ log p(y | x, t)``, the conditional score of Eq. 4
    (module docstring); ``labels`` [B] is the class of every row of x."""
    likelihood_score = likelihood_score_model(logits_model, labels)

    def posterior(x: Array, t: Array) -> Array:
        return score_model(x, t) + scale * likelihood_score(x, t)

    return posterior
