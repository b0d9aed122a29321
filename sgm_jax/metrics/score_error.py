"""Score error against the exact Parzen oracle, and averaging of metrics over noise levels.

The QCSGM toy evaluation (paper §5.1, Tables 1 and A1) reports, averaged over noise levels, the
score error ½‖s_θ(x̃; σ) − ∇log p_σ(x̃)‖², where p_σ = 1/M Σᵢ N(·; x⁽ⁱ⁾, σ²I) is the Parzen
density of the clean training set at the model's own σ, together with Asym and NAsym on the same
perturbed points x̃ = x + σz.

How this differs from the official code (``2d_examples/utils.py``; see
``reference/official_code_facts.md`` §1b), deliberately:

* **Same σ for model and oracle.** The official metric builds its oracle on 11 levels
  t = ns/11 (ns = 0…10) but evaluates the model at 10 levels t = (ns+1)/10 (ns = 0…9), so the
  model and the oracle never share a noise level. Here the caller passes one σ, used for both.
* **Clean kernel centres.** The official oracle re-noises every data point (b̃ⱼ = bⱼ + σzⱼ) before
  using it as a kernel centre; as M → ∞ that is the score of p_data ∗ N(0, 2σ²I), i.e. of the
  noise level √2·σ, plus Monte-Carlo noise. Here the centres are the clean data, so the oracle is
  exactly ∇log p_σ of the Parzen density (QCSGM Eq. 1).
* **Exact, stable normalisation.** The official weights are raw Gaussian densities divided by
  Σⱼ wⱼ + 1e-8, which underflows to a zero score in float32 far from the data (at σ = 0.1 already
  ~1.3 away from every centre). :func:`sgm_jax.losses.parzen_score` uses a streaming
  log-sum-exp and is exact everywhere.
* The official per-level value is a mean over 5000 points of ½‖s* − s‖² and the reported number
  the mean over its 10 levels; :func:`average_over_levels` computes the same pair of
  reductions (per-level means, then their mean).

Consequently numbers from this module are not comparable digit-for-digit with the paper's tables.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from sgm_jax import _validation as val
from sgm_jax.losses import parzen_score
from sgm_jax.types import ScoreFn

Array = jax.Array

__all__ = ["score_error", "average_over_levels"]


def score_error(score_fn: ScoreFn, x: Array, data: Array, sigma: Array | float, *,
                chunk_size: int | None = None) -> Array:
    """Per-example ½‖s(x) − ∇log p_σ(x)‖² against the Parzen score of the clean ``data``.

    The oracle is :func:`sgm_jax.losses.parzen_score` ``(x, data, sigma)`` — kernel centres are
    the *clean* data points and the bandwidth is the *same* σ at which ``score_fn`` is the
    model's score (the official QCSGM code noises the centres and mismatches the two σ; see the
    module docstring). The value equals :func:`sgm_jax.losses.esm_loss`; this is its evaluation
    name, with the same argument order.

    Args:
      score_fn: batched score function at noise level σ, e.g.
        ``lambda y: model(y, jnp.full((y.shape[0],), t))`` with σ = σ(t).
      x: evaluation points ``[B, *event]``, typically x̃ = x₀ + σz with x₀ clean data.
      data: clean data ``[M, *event]`` (the whole training set for the toy tables). For a
        variance-preserving SDE, whose marginal is N(α_t x₀, σ_t²I), pass ``α_t · data``.
      sigma: the model's noise level, a positive scalar or ``[B]``.
      chunk_size: data points per chunk of the oracle (memory O(B · chunk · D)).
    Returns:
      ``[B]``.
    """
    val.check_batched("x", x)  # argument errors before any model or oracle evaluation
    val.check_event_shape("data", data, x)
    val.check_sigma("sigma", sigma, x)
    s = val.checked_call(score_fn, x)
    oracle = parzen_score(x, data, sigma, chunk_size=chunk_size)
    diff = (s - oracle).reshape(s.shape[0], -1)
    return 0.5 * jnp.sum(diff * diff, axis=1)


def average_over_levels(metric_fn: Callable[..., Any], levels: Sequence[float] | Array,
                        key: Array | None = None) -> tuple[Any, Any]:
    """Mean of a per-example metric at each noise level, and the mean of those means.

    ``metric_fn(level)`` (or ``metric_fn(level, key_l)`` when ``key`` is given, with
    ``key_l = jax.random.fold_in(key, l)`` for the l-th level) returns per-example values —
    an array ``[B]`` or any pytree of them, e.g. a dict holding Asym, NAsym and the score error
    computed on the same perturbed points. Each leaf is averaged over all its elements at each
    level; the overall value is the unweighted mean over levels (QCSGM toy protocol: mean over
    levels of the mean over points).

    ``level`` is passed as a 0-d array (so a jitted ``metric_fn`` is traced once). Levels run
    in a Python loop, so ``metric_fn`` need not be traceable and only one level's per-example
    values are held at a time.

    Example (the toy evaluation: one z, shared by all metrics and levels)::

        z = jax.random.normal(key, x0.shape)

        @jax.jit
        def at_level(t):
            sigma = sde.marginal_std(t)        # σ(t) of the VE SDE
            xt = x0 + sigma * z
            fn = lambda y: model(y, jnp.full((y.shape[0],), t))
            return {"score_error": score_error(fn, xt, data, sigma),
                    "asym": asym(fn, xt), "nasym": nasym(fn, xt)}

        per_level, mean = average_over_levels(at_level, jnp.linspace(0.1, 1.0, 10))
        # per_level["asym"] has shape [10]; mean["asym"] is a scalar.

    Args:
      metric_fn: callable as above.
      levels: a non-empty 1-D sequence of noise levels (times t or σ, whatever
        ``metric_fn`` expects).
      key: optional ``jax.random`` key; when given, each level gets its own folded key.
    Returns:
      ``(per_level, mean)``: pytrees shaped like ``metric_fn``'s output, with leaves of shape
      ``[L]`` and ``()`` respectively.
    Raises:
      ValueError: when ``metric_fn`` is not callable, ``levels`` is not a non-empty 1-D
        sequence, or the outputs' structure changes between levels.
    """
    if not callable(metric_fn):
        raise ValueError(f"metric_fn must be callable; got {type(metric_fn).__name__}.")
    levels = jnp.asarray(levels)
    if levels.ndim != 1 or levels.shape[0] < 1:
        raise ValueError(
            f"levels must be a non-empty 1-D sequence of noise levels; got shape {levels.shape}.")

    means, structure = [], None
    for index in range(levels.shape[0]):
        args = (levels[index],) if key is None else (levels[index], jax.random.fold_in(key, index))
        out = metric_fn(*args)
        leaves, treedef = jax.tree_util.tree_flatten(out)
        if not leaves:
            raise ValueError("metric_fn must return an array or a non-empty pytree of arrays.")
        if structure is None:
            structure = treedef
        elif treedef != structure:
            raise ValueError(
                f"metric_fn must return the same structure at every level; level {index} gave "
                f"{treedef}, level 0 gave {structure}.")
        means.append([jnp.mean(jnp.asarray(leaf)) for leaf in leaves])

    per_level = [jnp.stack(column) for column in zip(*means)]
    overall = [jnp.mean(column) for column in per_level]
    return (jax.tree_util.tree_unflatten(structure, per_level),
            jax.tree_util.tree_unflatten(structure, overall))
