"""Conditional evaluation of a 2-D DLSM run (the inter-twinning moons study, DLSM poster Fig. 1;
official toy protocol, ``official_code_facts`` §2a, with its sampler's bugs fixed).

    results = evaluate(experiment, workdir)   # WORKDIR/classifier/eval/ckpt_<step>.json + PNG

For every class y, with the configured guidance (posterior score s + α ∇ log p(y | x, t)):

* ``eval.samples_per_class`` samples by the configured sampler, and their class-wise precision,
  recall, density and coverage (k = ``eval.prdc_k``) against the clean training points of the
  class (:func:`sgm_jax.metrics.classwise_prdc`);
* the errors of the scores on the ``eval.grid_size``² grid over ``eval.grid_range`` at the noise
  level σ = ``eval.grid_sigma`` (the time t with σ_t = σ) against the oracle of the perturbed
  training set, the Parzen scores of its clean points (bandwidth σ_t, mean c(t); exact
  log-sum-exp): the unconditional score ("full", oracle ∇ log p_t(x)), the scaled likelihood
  score α ∇ log p(y | x, t) ("likelihood", oracle ∇ log p_t(x | y) − ∇ log p_t(x)) and the
  posterior score ("posterior", oracle ∇ log p_t(x | y)). Each error is reported as the mean
  Euclidean norm of the difference (``*_error``, the official metric) and its mean square
  (``*_mse``), averaged over the grid and then over the classes.

The building blocks take any posterior score model, not only a classifier-guided one (e.g. one
score model per class, or the oracle itself, DLSM poster Fig. 1 (c) and (e)):
:func:`score_fields` (the fields of an unconditional and a posterior score model),
:func:`oracle_score_model` (the oracle as a ``score_model(x, t)``) and :func:`draw_samples`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax import plots
from sgm_jax._batch import batch_times, per_example, sq_norm
from sgm_jax.checkpoints import classifier_workdir, load_models
from sgm_jax.classifier_experiment import ClassifierExperiment
from sgm_jax.evaluate.results import write_results
from sgm_jax.losses import parzen_score
from sgm_jax.metrics import classwise_prdc
from sgm_jax.sde import SDE
from sgm_jax.types import ScoreModel

Array = jax.Array
FIELDS = ("full", "likelihood", "posterior")


def time_of_std(sde: SDE, sigma: float, iterations: int = 80) -> float:
    """The time t ∈ (0, T] with marginal std σ_t = ``sigma`` (σ_t increases with t), by
    bisection; ``ValueError`` when σ lies outside (σ_0, σ_T]."""
    lo, hi = 0.0, float(sde.T)
    std = lambda t: float(sde.marginal_std(jnp.asarray(t)))  # noqa: E731
    if not std(lo) < sigma <= std(hi):
        raise ValueError(f"eval.grid_sigma={sigma!r} is not a noise level of the SDE; allowed: "
                         f"({std(lo):.4g}, {std(hi):.4g}].")
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if std(mid) < sigma else (lo, mid)
    return 0.5 * (lo + hi)


def grid_points(size: int, extent: tuple[float, float, float, float]) -> np.ndarray:
    """A ``size``² grid over (x_min, x_max, y_min, y_max), rows of constant y: [size², 2]."""
    xs = np.linspace(extent[0], extent[1], size, dtype=np.float32)
    ys = np.linspace(extent[2], extent[3], size, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def oracle_score_model(sde: SDE, data: Array) -> ScoreModel:
    """``score_model(x, t)`` = ∇ₓ log p_t(x), p_t the marginal at time t of the clean points
    ``data`` [M, D] under ``sde``: p_t = Parzen(x / c; data, σ_t / c) / c^D with c = c(t), so the
    score is the Parzen score (exact log-sum-exp) of x / c at bandwidth σ_t / c, divided by c."""

    def score_model(x: Array, t: Array) -> Array:
        c, std = sde.mean_coeff(t), sde.marginal_std(t)
        c_x = per_example(c, x)
        return parzen_score(x / c_x, data, std / c) / c_x

    return score_model


def score_fields(score_model: ScoreModel, posterior_model: ScoreModel, points: Array,
                 t: float) -> dict[str, Array]:
    """The fields at ``points`` [G, D] and time ``t`` of an unconditional ``score_model`` and a
    class's ``posterior_model``: "full" and "posterior" their scores, "likelihood" their
    difference ∇ log p_t(x | y) − ∇ log p_t(x) (the scaled classifier gradient of a guided
    score)."""
    times = batch_times(t, points)
    full, posterior = score_model(points, times), posterior_model(points, times)
    return {"full": full, "likelihood": posterior - full, "posterior": posterior}


def oracle_fields(sde: SDE, points: Array, t: float, data: Array, labels: Array,
                  label: int) -> dict[str, Array]:
    """The oracle scores of p_t at ``points`` [G, D] (module docstring): "full" from all of
    ``data``, "posterior" from its rows of class ``label``, "likelihood" their difference."""
    return score_fields(oracle_score_model(sde, data),
                        oracle_score_model(sde, data[labels == label]), points, t)


def model_fields(experiment: ClassifierExperiment, score_params: Any, params: Any,
                 points: Array, t: float, label: int) -> dict[str, Array]:
    """The model's scores at ``points``: "full" s(x, t), "likelihood" α ∇ log p(y | x, t) and
    "posterior" their sum, the score the sampler follows."""
    labels = jnp.full((points.shape[0],), label, jnp.int32)
    return score_fields(experiment.score.score_model(score_params),
                        experiment.posterior_score_model(score_params, params, labels), points, t)


def field_errors(model: dict[str, Array], oracle: dict[str, Array]) -> dict[str, float]:
    """``<field>_error`` (mean Euclidean norm) and ``<field>_mse`` (mean squared norm) of the
    model's scores against the oracle's, for each of :data:`FIELDS`."""
    out = {}
    for name in FIELDS:
        sq = sq_norm(model[name] - oracle[name])
        out[f"{name}_error"] = float(jnp.mean(jnp.sqrt(sq)))
        out[f"{name}_mse"] = float(jnp.mean(sq))
    return out


def draw_samples(sampler: Callable, score_model: ScoreModel, event_shape: tuple[int, ...],
                 num: int, batch_size: int, key: Array) -> tuple[np.ndarray, int]:
    """``num`` samples of ``sampler(score_model, shape, key) -> (samples, nfe)`` in batches of
    ``min(num, batch_size)`` (batch j draws with ``fold_in(key, j)``) and the NFE of one batch."""
    batch = min(num, batch_size)
    draw = jax.jit(lambda k: sampler(score_model, (batch, *event_shape), k))
    parts, nfe = [], 0
    for j in range(-(-num // batch)):
        samples, nfe = draw(jax.random.fold_in(key, j))
        parts.append(np.asarray(samples))
    return np.concatenate(parts)[:num], int(nfe)


def class_samples(experiment: ClassifierExperiment, score_params: Any, params: Any, label: int,
                  num: int, key: Array) -> tuple[np.ndarray, int]:
    """``num`` samples of class ``label`` in batches of ``eval.batch_size`` (batch j draws with
    ``fold_in(key, j)``) and the NFE of one batch (:func:`draw_samples`)."""
    batch = min(num, experiment.evaluation.batch_size)
    labels = jnp.full((batch,), label, jnp.int32)
    return draw_samples(experiment.score.sampler,
                        experiment.posterior_score_model(score_params, params, labels),
                        experiment.event_shape, num, batch, key)


def _all_samples(experiment, score_params, params, key) -> tuple[np.ndarray, np.ndarray, int]:
    n = experiment.evaluation.samples_per_class
    samples, labels, nfe = [], [], 0
    for label in range(experiment.num_classes):
        x, nfe = class_samples(experiment, score_params, params, label, n,
                               jax.random.fold_in(key, label))
        samples.append(x)
        labels.append(np.full(n, label, np.int32))
    return np.concatenate(samples), np.concatenate(labels), nfe


def evaluate(experiment: ClassifierExperiment, workdir: str) -> dict[str, Any]:
    """The module docstring's metrics for the configured checkpoints; written to
    ``WORKDIR/classifier/eval/ckpt_<classifier step>.json`` with a figure of the posterior fields
    and samples per class in ``WORKDIR/classifier/figures``."""
    e = experiment.evaluation
    score_params, params, step, record = load_models(experiment, workdir)
    key = experiment.eval_key()
    samples, sample_labels, nfe = _all_samples(experiment, score_params, params, key)
    data, labels = experiment.data.points, experiment.data.labels
    quality = classwise_prdc(data, labels, samples, sample_labels,
                             num_classes=experiment.num_classes, nearest_k=e.prdc_k)
    t = time_of_std(experiment.score.sde, e.grid_sigma)
    points = jnp.asarray(grid_points(e.grid_size, e.grid_range))
    per_class, fields = [], {}
    for label in range(experiment.num_classes):
        model = model_fields(experiment, score_params, params, points, t, label)
        oracle = oracle_fields(experiment.score.sde, points, t, jnp.asarray(data),
                               jnp.asarray(labels), label)
        per_class.append(field_errors(model, oracle))
        fields[label] = (np.asarray(model["posterior"]), np.asarray(oracle["posterior"]))
    results = {
        "step": step, "score": record, "guidance": experiment.guidance,
        "scale": experiment.scale, "objective": experiment.objective, "nfe": nfe,
        **{k: float(np.mean([c[k] for c in per_class])) for k in per_class[0]},
        "per_class": per_class,
        **{k: v for k, v in quality.items()},
        "settings": {"samples_per_class": e.samples_per_class, "prdc_k": e.prdc_k,
                     "grid_size": e.grid_size, "grid_range": list(e.grid_range),
                     "grid_sigma": e.grid_sigma, "grid_t": t,
                     "sampler": experiment.score.sampler_settings},
    }
    run = classifier_workdir(workdir)
    if jax.process_index() == 0:
        results["figures"] = [plots.plot_conditional(
            os.path.join(run, "figures", f"posterior_ckpt_{step}.png"), np.asarray(points),
            fields, data, labels, samples, sample_labels,
            title=f"{experiment.guidance} (α = {experiment.scale:g})")]
    write_results(run, step, results, table=("step", "posterior_error", "posterior_mse",
                                             "likelihood_error", "full_error", "precision",
                                             "recall", "density", "coverage", "nfe"))
    return results


def sample(experiment: ClassifierExperiment, workdir: str) -> str:
    """``eval.samples_per_class`` samples of every class into
    ``WORKDIR/classifier/samples/samples_step_<classifier step>.npz`` (``x``, ``label``) and a
    PNG."""
    score_params, params, step, _ = load_models(experiment, workdir)
    samples, labels, nfe = _all_samples(experiment, score_params, params,
                                        jax.random.fold_in(experiment.eval_key(), 1))
    path = os.path.join(classifier_workdir(workdir), "samples", f"samples_step_{step}.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, x=samples, label=labels, nfe=nfe)
    plots.plot_class_samples(path[:-4] + ".png", experiment.data.points, experiment.data.labels,
                             samples, labels)
    return path
