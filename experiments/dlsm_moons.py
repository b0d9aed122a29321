"""Reproduce the inter-twinning moons study of the DLSM poster (Fig. 1): the posterior scores of
(a) base, (b) scaling, (c) posterior SM, (d) DLSM and (e) the oracle, compared with the oracle.

The models, trained by the library's loop (``sgm_jax.train.train``, what ``main.py`` runs):

* one unconditional score model, the score half of ``configs/dlsm/moons_dlsm.py``;
* one cross-entropy classifier (``configs/dlsm/moons_base.py`` with ``classifier.score_workdir``
  the score run; ``sgm_jax.dlsm.train_pipeline``), shared by base (α = 1) and scaling (α = 10,
  the guidance of ``configs/dlsm/moons_scaling.py``);
* one classifier trained with L_Total = L_DLSM + 0.125 L_CE (``configs/dlsm/moons_dlsm.py``)
  against the same score run;
* posterior SM: the score model's config trained on the rows of one class of the same 10,000
  points (``toy_source(..., classes=(y,))``), one model per class; its likelihood field is the
  class model minus the unconditional one.

Each method is evaluated with ``sgm_jax.evaluate.conditional_toy`` (the official toy protocol): the mean
Euclidean error and the mean squared error of the posterior and likelihood fields on the 35²
grid against the oracle at σ = ``eval.grid_sigma`` (7.5, official) and at ``--sigmas``;
``eval.samples_per_class`` samples per class by the configured PC sampler (1,000 steps), their
class-wise precision / recall / density / coverage (k = ``eval.prdc_k``) and the sampler's NFE.
The oracle is the Parzen score of the clean class points at σ_t (``oracle_score_model``): its
grid errors are 0, and its samples show what the sampler reaches with the exact score. All
methods draw with the same keys (the same prior draws and sampler noise per class).

To explain the results: the same errors near the data (training points perturbed at
``--data-sigmas``) with the size of each likelihood term; where the samples lie (the fraction
nearer to the other class, the distance to their class); the classifiers' objectives on the
same batches; the score model's DSM loss against the oracle's (its minimum) and s ≡ 0; and the
runs' training curves.

Finished runs and evaluations are cached in ``--workdir`` and reused; a "## Distance from the
paper" section already in ``--out`` is kept. Writes ``--out``, a PNG and a JSON next to it.

    python experiments/dlsm_moons.py --score-iters 10000 --classifier-iters 10000 \\
        --workdir runs/dlsm_moons --out docs/results/dlsm_moons.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from types import ModuleType
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.dlsm import moons_base, moons_dlsm  # noqa: E402
from sgm_jax.evaluate import conditional_toy as ce  # noqa: E402
from sgm_jax import checkpoints, dlsm, train  # noqa: E402
from sgm_jax.evaluate import toy as toy_eval  # noqa: E402
from sgm_jax.checkpoints import checkpoint_dir, load_checkpoint  # noqa: E402
from sgm_jax.classifier_experiment import (ClassifierExperiment,  # noqa: E402
                                           build_classifier_experiment)
from sgm_jax.data import toy_source  # noqa: E402
from sgm_jax.experiment import Experiment, build_experiment  # noqa: E402
from sgm_jax.metrics import classwise_prdc  # noqa: E402
from sgm_jax.plots import save_figure  # noqa: E402  (selects matplotlib's Agg backend)
import matplotlib.pyplot as plt  # noqa: E402
from report import command_line, write_keeping_discussion  # noqa: E402

OFFICIAL_ITERS = 40000  # the official toy runs: 40,001 iterations of every model
METHODS = ("base", "scaling", "posterior_sm", "dlsm", "oracle")
LABELS = {"base": "(a) base", "scaling": "(b) scaling", "posterior_sm": "(c) posterior SM",
          "dlsm": "(d) DLSM (ours)", "oracle": "(e) oracle"}
SCALING_ALPHA = 10.0  # configs/dlsm/moons_scaling.py
SCORE_COLUMNS = ("posterior_error", "posterior_mse", "likelihood_error", "likelihood_mse")
QUALITY_COLUMNS = ("precision", "recall", "density", "coverage")
FIGURE_SAMPLES = 1000  # samples of each class drawn in the figure


class Method(NamedTuple):
    """A method's posterior scores: ``fields(points, t, label)`` (``sgm_jax.evaluate.conditional_toy`` fields)
    and ``samples(label, num, key) -> (samples, nfe)``."""

    fields: Callable
    samples: Callable


# --------------------------------------------------------------------------- the models


def run_names(score_iters: int, classifier_iters: int) -> dict[str, str]:
    """The run folders' names, which carry their iteration counts."""
    return {"score": f"score_{score_iters}",
            **{f"class{y}": f"score_class{y}_{score_iters}" for y in (0, 1)},
            "ce": f"classifier_ce_{score_iters}_{classifier_iters}",
            "total": f"classifier_total_{score_iters}_{classifier_iters}"}


def classifier_config(module: ModuleType, score_iters: int, classifier_iters: int,
                      score_dir: str, samples: int) -> ml_collections.ConfigDict:
    """``module.get_config()`` with the iteration counts, the shared score run and the samples
    per class."""
    config = module.get_config()
    config.training.n_iters = score_iters
    config.classifier.training.n_iters = classifier_iters
    config.classifier.score_workdir = score_dir
    config.eval.samples_per_class = samples
    return config


def class_experiment(score: Experiment, label: int) -> Experiment:
    """The score model's experiment on the rows of class ``label`` of its training set (the same
    points, data key and batch key)."""
    keys = score.keys()
    data = toy_source(score.dataset, num_points=score.data.points.shape[0],
                      data_key=keys["data"], batch_key=keys["batches"],
                      batch_size=score.training.batch_size, classes=(label,))
    return dataclasses.replace(score, data=data, name=f"{score.name}, class {label}")


class Timer:
    """Wall times of the study's stages, kept in ``root/timings.json`` across reruns (a stage
    that was cached keeps the time it took when it ran)."""

    def __init__(self, root: str):
        self.path = os.path.join(root, "timings.json")
        self.times = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.times = json.load(f)

    def record(self, name: str, seconds: float) -> None:
        self.times[name] = seconds
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(self.times, f, indent=2)


def _finished(workdir: str, n_iters: int) -> bool:
    return os.path.isdir(os.path.join(checkpoint_dir(workdir), str(n_iters)))


def train_all(score_iters: int, classifier_iters: int, samples: int, root: str, timer: Timer):
    """Train (or resume) every model; returns ``(score experiment, {run: workdir}, CE classifier
    experiment, total classifier experiment)``."""
    dirs = {k: os.path.join(root, v) for k, v in run_names(score_iters, classifier_iters).items()}
    total_config = classifier_config(moons_dlsm, score_iters, classifier_iters, dirs["score"],
                                     samples)
    score = build_experiment(total_config)  # the score half of moons_dlsm
    total = build_classifier_experiment(total_config, score)
    base = build_classifier_experiment(
        classifier_config(moons_base, score_iters, classifier_iters, dirs["score"], samples),
        score)
    jobs = [("score", score, train.train),
            *[(f"class{y}", class_experiment(score, y), train.train) for y in (0, 1)],
            ("ce", base, dlsm.train_pipeline), ("total", total, dlsm.train_pipeline)]
    for name, experiment, run in jobs:
        workdir = dirs[name]
        n_iters = experiment.training.n_iters
        done_dir = checkpoints.classifier_workdir(workdir) if name in ("ce", "total") else workdir
        if _finished(done_dir, n_iters):
            continue
        print(f"training {name} ({n_iters} steps) in {workdir}", flush=True)
        start = time.time()
        run(experiment, workdir)
        timer.record(os.path.basename(workdir), time.time() - start)
    return score, dirs, base, total


# --------------------------------------------------------------------------- the five methods


def guided(experiment: ClassifierExperiment, score_params, params) -> Method:
    """s + α ∇ log p(y | x, t) of a classifier run (``model_fields`` / ``class_samples``)."""
    return Method(
        fields=lambda points, t, label: ce.model_fields(experiment, score_params, params, points,
                                                        t, label),
        samples=lambda label, num, key: ce.class_samples(experiment, score_params, params, label,
                                                         num, key))


def per_class_models(experiment: ClassifierExperiment, full, posteriors) -> Method:
    """An unconditional score model ``full`` and one posterior score model per class, sampled by
    the score run's sampler in batches of ``eval.batch_size``."""
    return Method(
        fields=lambda points, t, label: ce.score_fields(full, posteriors[label], points, t),
        samples=lambda label, num, key: ce.draw_samples(
            experiment.score.sampler, posteriors[label], experiment.event_shape, num,
            experiment.evaluation.batch_size, key))


def load_methods(score: Experiment, dirs: dict[str, str], base: ClassifierExperiment,
                 total: ClassifierExperiment) -> dict[str, Method]:
    """The five methods of :data:`METHODS` from the trained runs in ``dirs``."""
    scaling = dataclasses.replace(base, scale=SCALING_ALPHA, guidance="scaling")
    methods = {}
    for name, experiment, run in (("base", base, "ce"), ("scaling", scaling, "ce"),
                                  ("dlsm", total, "total")):
        score_params, params, _, _ = checkpoints.load_models(experiment, dirs[run])
        methods[name] = guided(experiment, score_params, params)
    # the per-class runs have the score run's network and optimiser: its abstract state fits
    score_model = score.score_model(load_checkpoint(score, dirs["score"]).ema_params)
    class_models = [score.score_model(load_checkpoint(score, dirs[f"class{y}"]).ema_params)
                    for y in (0, 1)]
    methods["posterior_sm"] = per_class_models(base, score_model, class_models)
    data, labels = jnp.asarray(base.data.points), jnp.asarray(base.data.labels)
    sde = score.sde
    methods["oracle"] = per_class_models(
        base, ce.oracle_score_model(sde, data),
        [ce.oracle_score_model(sde, data[labels == y]) for y in (0, 1)])
    return {name: methods[name] for name in METHODS}


# --------------------------------------------------------------------------- evaluation


def method_samples(name: str, method: Method, experiment: ClassifierExperiment, folder: str,
                   timer: Timer) -> tuple[np.ndarray, np.ndarray, int]:
    """``eval.samples_per_class`` samples of every class (cached in ``folder/<name>.npz``), with
    the keys ``fold_in(eval_key, label)`` of ``conditional_toy.evaluate`` for every method."""
    path = os.path.join(folder, f"{name}.npz")
    if os.path.exists(path):
        with np.load(path) as stored:
            return stored["x"], stored["label"], int(stored["nfe"])
    n, key = experiment.evaluation.samples_per_class, experiment.eval_key()
    start = time.time()
    parts, nfe = [], 0
    for label in range(experiment.num_classes):
        x, nfe = method.samples(label, n, jax.random.fold_in(key, label))
        parts.append(x)
        print(f"  sampled {name}, class {label}: {time.time() - start:.0f} s", flush=True)
    timer.record(f"{os.path.basename(folder)}/{name}", time.time() - start)
    x = np.concatenate(parts)
    labels = np.repeat(np.arange(experiment.num_classes, dtype=np.int32), n)
    os.makedirs(folder, exist_ok=True)
    np.savez(path, x=x, label=labels, nfe=nfe)
    return x, labels, nfe


def errors_at(method: Method, experiment: ClassifierExperiment, sigma: float,
              points_of: Callable[[int, float], jax.Array]) -> dict:
    """``field_errors`` of the method against the oracle at noise level σ at the points
    ``points_of(label, t)`` of each class, averaged over the classes, with the per-class values
    and the posterior fields."""
    sde = experiment.score.sde
    t = ce.time_of_std(sde, sigma)
    data, labels = jnp.asarray(experiment.data.points), jnp.asarray(experiment.data.labels)
    per_class, fields = [], []
    for label in range(experiment.num_classes):
        points = points_of(label, t)
        model = method.fields(points, t, label)
        oracle = ce.oracle_fields(sde, points, t, data, labels, label)
        norms = {f"{who}{field}_norm": float(jnp.mean(jnp.linalg.norm(fields_of[field], axis=1)))
                 for who, fields_of in (("", model), ("oracle_", oracle))
                 for field in ("likelihood", "posterior")}
        per_class.append({**ce.field_errors(model, oracle), **norms})
        fields.append(np.asarray(model["posterior"]))
    means = {k: float(np.mean([c[k] for c in per_class])) for k in per_class[0]}
    return {**means, "t": t, "per_class": per_class, "fields": fields}


def grid_errors(method: Method, experiment: ClassifierExperiment, sigma: float) -> dict:
    """:func:`errors_at` the evaluation grid (the official protocol)."""
    e = experiment.evaluation
    points = jnp.asarray(ce.grid_points(e.grid_size, e.grid_range))
    return errors_at(method, experiment, sigma, lambda label, t: points)


def data_errors(method: Method, experiment: ClassifierExperiment, sigma: float,
                num: int) -> dict:
    """:func:`errors_at` the first ``num`` training points of each class perturbed by the SDE's
    marginal at σ, x_t = c(t) x_0 + σ z (z from ``fold_in(eval_key, label)``, the same for every
    method and σ): where the sampler's paths run, unlike most of the grid at small σ."""
    sde = experiment.score.sde

    def points_of(label, t):
        x0 = jnp.asarray(experiment.data.points[experiment.data.labels == label][:num])
        mean, std = sde.marginal_prob(x0, jnp.full((x0.shape[0],), t))
        z = jax.random.normal(jax.random.fold_in(experiment.eval_key(), label), x0.shape)
        return mean + std[:, None] * z

    return errors_at(method, experiment, sigma, points_of)


def sample_diagnostics(x: np.ndarray, x_labels: np.ndarray, data: np.ndarray,
                       labels: np.ndarray) -> dict:
    """Per class: the fraction of its samples whose nearest training point (of both classes)
    belongs to the other class, and the median distance of its samples to the nearest point
    of their class."""
    nearest = labels[cKDTree(data).query(x)[1]]
    wrong, distance = [], []
    for label in np.unique(labels):
        mine = x_labels == label
        wrong.append(float(np.mean(nearest[mine] != label)))
        distance.append(float(np.median(cKDTree(data[labels == label]).query(x[mine])[0])))
    return {"wrong_class": float(np.mean(wrong)), "median_distance": float(np.mean(distance)),
            "per_class": {"wrong_class": wrong, "median_distance": distance}}


def knn_radius(data: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The median distance of a training point to its k-th nearest neighbour in its class (the
    radii of precision and density)."""
    return float(np.median(np.concatenate([
        cKDTree(data[labels == y]).query(data[labels == y], k=k + 1)[0][:, k]
        for y in np.unique(labels)])))


def evaluate_all(methods: dict[str, Method], experiment: ClassifierExperiment, sigmas,
                 data_sigmas, data_points: int, folder: str, timer: Timer) -> dict:
    """Every method's samples (cached), class-wise P/R/D/C, sample diagnostics and field errors
    on the grid at ``sigmas`` and near the data at ``data_sigmas``."""
    e = experiment.evaluation
    data, labels = experiment.data.points, experiment.data.labels
    results = {}
    for name, method in methods.items():
        x, x_labels, nfe = method_samples(name, method, experiment, folder, timer)
        quality = classwise_prdc(data, labels, x, x_labels, num_classes=experiment.num_classes,
                                 nearest_k=e.prdc_k)
        errors = {sigma: grid_errors(method, experiment, sigma) for sigma in sigmas}
        near_data = {sigma: data_errors(method, experiment, sigma, data_points)
                     for sigma in data_sigmas}
        results[name] = {"nfe": nfe, **{k: errors[e.grid_sigma][k] for k in SCORE_COLUMNS},
                         **quality, "samples_near": sample_diagnostics(x, x_labels, data, labels),
                         "by_sigma": errors, "near_data_by_sigma": near_data,
                         "samples": (x, x_labels)}
    return results


def classifier_objectives(base: ClassifierExperiment, total: ClassifierExperiment,
                          dirs: dict[str, str], num_batches: int) -> dict:
    """The cross-entropy, the weighted DLSM term of L_Total and the accuracy of both trained
    classifiers on the same ``num_batches`` noisy training batches (``total.batch_loss``, batch
    i of the classifier's data source with the key ``fold_in(eval_key, i)``): the means."""
    aux = jax.jit(lambda params, frozen, batch, key: total.batch_loss(params, batch, key,
                                                                      frozen=frozen)[1][0])
    out = {}
    for name, experiment in (("ce", base), ("total", total)):
        score_params, params, _, _ = checkpoints.load_models(experiment, dirs[name])
        values = [aux(params, score_params, total.data.train_batch(i),
                      jax.random.fold_in(total.eval_key(), i)) for i in range(num_batches)]
        out[name] = {k: float(np.mean([v[k] for v in values])) for k in ("ce", "dlsm", "accuracy")}
    return out


def dsm_losses(score: Experiment, dirs: dict[str, str], num_batches: int) -> dict:
    """The score run's training loss (``score.loss_fn``) on ``num_batches`` training batches
    (batch i with the key ``fold_in(eval_key, i)``) of the trained unconditional model, of the
    oracle (the Parzen score of all training points: the loss's floor on this training set) and
    of s ≡ 0: the means."""
    models = {"model": score.score_model(load_checkpoint(score, dirs["score"]).ema_params),
              "oracle": ce.oracle_score_model(score.sde, jnp.asarray(score.data.points)),
              "zero": lambda x, t: jnp.zeros_like(x)}
    out = {}
    for name, score_model in models.items():
        loss = jax.jit(lambda x0, key, m=score_model: score.loss_fn(m, x0, key)[0])
        out[name] = float(np.mean([loss(score.data.train_batch(i)["x"],
                                        jax.random.fold_in(score.eval_key(), i))
                                   for i in range(num_batches)]))
    return out


# --------------------------------------------------------------------------- outputs


def figure(path: str, results: dict, experiment: ClassifierExperiment) -> str:
    """Fig. 1 of the poster: per method (rows) the posterior score of each class at σ =
    ``eval.grid_sigma`` on every other grid point (black; the oracle in red, unit arrows, over
    the class's data in grey) and the first :data:`FIGURE_SAMPLES` samples of each class."""
    e = experiment.evaluation
    points = ce.grid_points(e.grid_size, e.grid_range)
    index = np.arange(e.grid_size)
    keep = ((index[None, :] % 2 == 0) & (index[:, None] % 2 == 0)).ravel()  # [y, x] order
    data, labels = experiment.data.points, experiment.data.labels
    oracle = results["oracle"]["by_sigma"][e.grid_sigma]["fields"]
    colours = ("tab:blue", "tab:orange")
    fig, axes = plt.subplots(len(METHODS), 3, figsize=(11, 2.5 * len(METHODS)), squeeze=False)
    for row, name in enumerate(METHODS):
        fields = results[name]["by_sigma"][e.grid_sigma]["fields"]
        for label in range(experiment.num_classes):
            ax = axes[row, label]
            ax.scatter(*data[labels == label].T, s=1, c="0.7")
            arrows = [(oracle[label], "tab:red")]
            if name != "oracle":
                arrows.append((fields[label], "black"))
            for field, colour in arrows:
                unit = field / np.maximum(np.linalg.norm(field, axis=1, keepdims=True), 1e-12)
                ax.quiver(points[keep, 0], points[keep, 1], unit[keep, 0], unit[keep, 1],
                          color=colour, width=0.003, alpha=0.8)
            ax.set_title(f"{LABELS[name]}: posterior score, class {label}", fontsize=9)
        ax = axes[row, 2]
        x, x_labels = results[name]["samples"]
        for label in range(experiment.num_classes):
            ax.scatter(*x[x_labels == label][:FIGURE_SAMPLES].T, s=0.5, alpha=0.4,
                       c=colours[label])
        ax.set_title(f"{LABELS[name]}: samples", fontsize=9)
        for ax in axes[row]:
            ax.set_xlim(e.grid_range[0], e.grid_range[1])
            ax.set_ylim(e.grid_range[2], e.grid_range[3])
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


def numbers(results: dict) -> dict:
    """The results without the samples and fields (for the JSON)."""
    tables = ("by_sigma", "near_data_by_sigma")
    out = {}
    for name, r in results.items():
        out[name] = {k: v for k, v in r.items() if k not in ("samples", *tables)}
        for table in tables:
            out[name][table] = {str(s): {k: v for k, v in errors.items() if k != "fields"}
                                for s, errors in r[table].items()}
    return out


def settings(score: Experiment, base: ClassifierExperiment, total: ClassifierExperiment) -> dict:
    c = total.loss_settings
    return {
        "seed": score.seed, "score_iters": score.training.n_iters,
        "classifier_iters": base.training.n_iters, "official_iters": OFFICIAL_ITERS,
        "batch_size": score.training.batch_size, "classifier_batch_size": base.training.batch_size,
        "score_lr": score.training.lr, "ce_lr": base.training.lr, "total_lr": total.training.lr,
        "score_weighting": score.loss_settings["weighting"],
        "dlsm_weighting": c["dlsm_weighting"], "dlsm_reduce_mean": c["reduce_mean"],
        "ce_weight": c["ce_weight"],
        "ema_rate": score.ema_rate, "scaling_alpha": SCALING_ALPHA,
        "sigma_range": [float(score.sde.sigma_min), float(score.sde.sigma_max)],
        "sampler": score.sampler_settings, "sampler_steps": score.sde.N,
        "samples_per_class": base.evaluation.samples_per_class, "prdc_k": base.evaluation.prdc_k,
        "points_per_class": np.bincount(base.data.labels).tolist(),
        "eval_batch_size": base.evaluation.batch_size,
        "grid_size": base.evaluation.grid_size, "grid_range": list(base.evaluation.grid_range),
        "grid_sigma": base.evaluation.grid_sigma,
    }


def _f(value: float) -> str:
    return f"{value:.4g}"


def table_lines(results: dict, grid_sigma: float) -> list[str]:
    lines = [
        f"## Posterior scores at σ = {grid_sigma:g} and class-wise samples", "",
        f"Grid errors against the oracle at σ = {grid_sigma:g} (mean Euclidean norm, the "
        "official metric, and mean squared norm; means over the grid and the two classes); "
        "class-wise precision / recall / density / coverage of the samples against the clean "
        "points of their class, mean over the classes.", "",
        "| method | posterior error ↓ | posterior MSE ↓ | likelihood error ↓ | likelihood MSE ↓ "
        "| precision ↑ | recall ↑ | density | coverage ↑ | NFE |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [_f(r[k]) for k in SCORE_COLUMNS + QUALITY_COLUMNS]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + f" | {r['nfe']} |")
    lines += ["", "Per class (class 0 = upper moon, class 1 = lower moon):", "",
              "| method | posterior error (0 / 1) | precision (0 / 1) | recall (0 / 1) "
              "| density (0 / 1) | coverage (0 / 1) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        per_class = r["by_sigma"][grid_sigma]["per_class"]
        cells = [" / ".join(_f(c["posterior_error"]) for c in per_class)]
        cells += [" / ".join(_f(v) for v in r["per_class"][k]) for k in QUALITY_COLUMNS]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines + [""]


def sigma_lines(results: dict, sigmas, table: str) -> list[str]:
    """Posterior error / likelihood error of every method per noise level in ``table``, the
    unconditional model's error and the oracle posterior's mean norm (the scale)."""
    head = " | ".join(f"σ = {s:g}" for s in sigmas)
    lines = [f"| method | {head} |", "|---|" + "---|" * len(sigmas)]
    for name, r in results.items():
        cells = [f"{_f(r[table][s]['posterior_error'])} / "
                 f"{_f(r[table][s]['likelihood_error'])}" for s in sigmas]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    rows = (("unconditional score, full error", "full_error"),
            ("oracle posterior score, mean norm", "oracle_posterior_norm"))
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_f(results["base"][table][s][key])
                                                  for s in sigmas) + " |")
    return lines + [""]


def noise_level_lines(results: dict, sigmas, data_sigmas, data_points: int) -> list[str]:
    return [
        "## Errors per noise level", "",
        "Posterior error / likelihood error (mean Euclidean norms against the oracle, means over "
        "the two classes) at other noise levels, first on the evaluation grid (the official "
        "points); the \"full\" row is the unconditional score model's own error (shared by "
        "(a)–(d)), the last row the size of the oracle's posterior score there.", "",
        *sigma_lines(results, sigmas, "by_sigma"),
        f"The same near the data: at the first {data_points} training points of each class "
        "perturbed by the marginal at σ, x₀ + σz (the same z for every method), where the "
        "sampler's paths run. At small σ most of the grid lies many σ from the data, where no "
        "model saw training points.", "",
        *sigma_lines(results, data_sigmas, "near_data_by_sigma"),
        *likelihood_norm_lines(results, data_sigmas)]


def likelihood_norm_lines(results: dict, sigmas) -> list[str]:
    head = " | ".join(f"σ = {s:g}" for s in sigmas)
    lines = [
        "The size of the likelihood term near the data, mean ‖α ∇ log p(y | x, t)‖ over the same "
        "points (for (c) the class model minus the unconditional one; the oracle's is "
        "‖∇ log p_t(x | y) − ∇ log p_t(x)‖):", "",
        f"| method | {head} |", "|---|" + "---|" * len(sigmas)]
    for name, r in results.items():
        cells = [_f(r["near_data_by_sigma"][s]["likelihood_norm"]) for s in sigmas]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines + [""]


def curve_lines(dirs: dict[str, str], dsm: dict, num_batches: int) -> list[str]:
    """The logged training means (over ``log_freq`` steps) of every run at its first logged
    step, half-way and at the end (``toy_eval.training_curves``), and the DSM losses ``dsm``
    (:func:`dsm_losses`)."""
    lines = ["## Training curves", "",
             "Logged means over the last `log_freq` steps (score models: the DSM loss "
             "λ(t)·½‖s + z/σ‖² = ½‖σ s + z‖², summed over the 2 dimensions; classifiers: their "
             "objective's terms and the accuracy on the noisy batches), at the first logged step, "
             "half-way and at the end. For scale, the same DSM loss on "
             f"{num_batches} training batches: the trained unconditional model "
             f"{_f(dsm['model'])}, the oracle (the Parzen score of the 10,000 points, the "
             f"loss's minimum on them) {_f(dsm['oracle'])}, and s ≡ 0 {_f(dsm['zero'])}.", "",
             "| run | quantity | values (step: value) |", "|---|---|---|"]
    tags = {"score": ("loss",), "class0": ("loss",), "class1": ("loss",),
            "ce": ("ce", "accuracy"), "total": ("dlsm", "ce", "accuracy")}
    for run, workdir in dirs.items():
        folder = checkpoints.classifier_workdir(workdir) if run in ("ce", "total") else workdir
        curves = toy_eval.training_curves(folder)
        for tag in tags[run]:
            steps, values = curves[tag]
            picks = sorted({0, len(steps) // 2 - 1, len(steps) - 1} - {-1})
            cells = ", ".join(f"{steps[i]}: {_f(values[i])}" for i in picks)
            lines.append(f"| {os.path.basename(workdir)} | {tag} | {cells} |")
    return lines + [""]


def sample_lines(results: dict, radius: float, k: int) -> list[str]:
    lines = [
        "## Where the samples lie", "",
        "Per method, means over the classes: the fraction of a class's samples whose nearest "
        "training point belongs to the other class, and the median distance of a sample to the "
        f"nearest point of its class. For scale: the median distance of a training point to "
        f"its {k}-th nearest neighbour in its class, the radius within which a sample counts "
        f"for precision and density, is {radius:.3g}.", "",
        "| method | wrong-class fraction ↓ | median distance to its class ↓ |", "|---|---|---|"]
    for name, r in results.items():
        near = r["samples_near"]
        lines.append(f"| {LABELS[name]} | {_f(near['wrong_class'])} | "
                     f"{_f(near['median_distance'])} |")
    return lines + [""]


def objective_lines(objectives: dict, num_batches: int, s: dict) -> list[str]:
    lines = [
        "## The classifiers' objectives", "",
        f"Both classifiers on the same {num_batches} noisy training batches of "
        f"{s['classifier_batch_size']} (t ~ U(ε, 1)): the cross-entropy, the weighted DLSM term "
        "(Eq. 6, against the frozen score model) and L_Total = L_DLSM + "
        f"{s['ce_weight']:g} L_CE, and the accuracy.", "",
        "| classifier | L_CE | L_DLSM | L_Total | accuracy |", "|---|---|---|---|---|"]
    for name, label in (("ce", "cross-entropy (a, b)"), ("total", "L_Total (d)")):
        o = objectives[name]
        lines.append(f"| {label} | {_f(o['ce'])} | {_f(o['dlsm'])} | "
                     f"{_f(o['dlsm'] + s['ce_weight'] * o['ce'])} | {_f(o['accuracy'])} |")
    return lines + [""]


def settings_lines(s: dict, times: dict, dirs: dict, folder: str) -> list[str]:
    deviation = (s["score_iters"], s["classifier_iters"]) != (OFFICIAL_ITERS, OFFICIAL_ITERS)
    sampler = s["sampler"]
    lines = [
        "## Settings", "",
        f"- Data: the 10,000 noise-free moons, centred and ×20 (5,000 per class); VE SDE "
        f"σ ∈ [{s['sigma_range'][0]:g}, {s['sigma_range'][1]:g}], networks fed raw σ; seed "
        f"{s['seed']}; no EMA (rate {s['ema_rate']:g}).",
        f"- Score models (unconditional, and one per class for (c)): {s['score_iters']} "
        f"iterations, batch {s['batch_size']}, Adam lr {s['score_lr']:g}, DSM weighting "
        f"λ = {'σ²' if s['score_weighting'] == 'sigma2' else s['score_weighting']} "
        "(the official toy weights σ⁴; both have the same minimiser).",
        f"- Classifiers: {s['classifier_iters']} iterations, batch "
        f"{s['classifier_batch_size']}; cross-entropy (base, scaling) at lr {s['ce_lr']:g}; "
        f"L_Total = L_DLSM + {s['ce_weight']:g}·L_CE (DLSM) at lr {s['total_lr']:g}, DLSM term "
        f"weighted {'σ⁴' if s['dlsm_weighting'] == 'sigma4' else s['dlsm_weighting']}"
        f"{', mean over dimensions' if s['dlsm_reduce_mean'] else ''}.",
        f"- Guidance: α = 1 for base and DLSM, α = {s['scaling_alpha']:g} for scaling.",
        f"- Sampler: {sampler['method'].upper()}, {s['sampler_steps']} steps, "
        f"{sampler.get('predictor', '')} predictor + {sampler.get('corrector', '')} corrector "
        f"(snr {sampler.get('snr', '')}, {sampler.get('n_steps', '')} step), from the VE "
        f"prior, final denoising; {s['samples_per_class']} samples per class, drawn in "
        f"batches of at most {s['eval_batch_size']} with the same keys for every method.",
        f"- Class-wise P/R/D/C (`classwise_prdc`, k = {s['prdc_k']}) against the clean points of "
        f"the class ({' and '.join(str(n) for n in s['points_per_class'])}); it truncates a "
        "class's samples to the number of its points, so it scores the first "
        f"{min(s['samples_per_class'], min(s['points_per_class']))} samples of each class.",
        f"- Grid errors: {s['grid_size']}² points over (x_min, x_max, y_min, y_max) = "
        f"{tuple(s['grid_range'])}, oracle bandwidth σ = {s['grid_sigma']:g}.",
    ]
    if deviation:
        lines.append(
            f"- **Deviation:** every model was trained for {s['score_iters']} (score models) and "
            f"{s['classifier_iters']} (classifiers) iterations instead of the official "
            f"{OFFICIAL_ITERS:,} (40,001), to fit the CPU budget.")
    lines += ["", "Wall times on this machine (seconds; training includes compilation):", "",
              "| stage | s |", "|---|---|"]
    for key in [os.path.basename(d) for d in dirs.values()] + [
            f"{os.path.basename(folder)}/{m}" for m in METHODS]:
        if key in times:
            lines.append(f"| {key} | {times[key]:.0f} |")
    return lines + [""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/dlsm_moons")
    parser.add_argument("--out", default="docs/results/dlsm_moons.md")
    parser.add_argument("--score-iters", type=int, default=OFFICIAL_ITERS,
                        help="iterations of every score model (official 40,000)")
    parser.add_argument("--classifier-iters", type=int, default=OFFICIAL_ITERS,
                        help="iterations of both classifiers (official 40,000)")
    parser.add_argument("--samples", type=int, default=10000, help="samples per class")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.5, 5.0, 7.5],
                        help="noise levels of the grid errors (eval.grid_sigma is added)")
    parser.add_argument("--data-sigmas", type=float, nargs="+",
                        default=[0.1, 0.5, 1.0, 2.5, 5.0, 7.5],
                        help="noise levels of the errors near the data")
    parser.add_argument("--data-points", type=int, default=2000,
                        help="perturbed training points per class for the errors near the data")
    parser.add_argument("--objective-batches", type=int, default=20,
                        help="batches on which the classifiers' objectives and the score "
                             "model's loss are measured")
    args = parser.parse_args(argv)
    start = time.time()
    timer = Timer(args.workdir)
    score, dirs, base, total = train_all(args.score_iters, args.classifier_iters, args.samples,
                                         args.workdir, timer)
    methods = load_methods(score, dirs, base, total)
    grid_sigma = base.evaluation.grid_sigma
    sigmas = sorted(set(args.sigmas) | {grid_sigma})
    folder = os.path.join(args.workdir, f"samples_{args.score_iters}_{args.classifier_iters}_"
                                        f"{args.samples}")
    results = evaluate_all(methods, base, sigmas, args.data_sigmas, args.data_points, folder,
                           timer)
    objectives = classifier_objectives(base, total, dirs, args.objective_batches)
    dsm = dsm_losses(score, dirs, args.objective_batches)
    stem = os.path.splitext(os.path.abspath(args.out))[0]
    figure(stem + ".png", results, base)
    study = settings(score, base, total)
    with open(stem + ".json", "w") as f:
        json.dump({"settings": study, "results": numbers(results),
                   "classifier_objectives": objectives, "dsm_losses": dsm,
                   "timings": timer.times}, f, indent=2)
    lines = [
        "# DLSM inter-twinning moons (poster Fig. 1)", "",
        f"Made by `{command_line('experiments/dlsm_moons.py')}` on {jax.devices()[0].platform} (JAX "
        f"{jax.__version__}); this invocation took {time.time() - start:.0f} s (the stages it "
        "found cached keep the times of the run that computed them, under Settings). Five "
        "posterior scores ∇ log p_t(x | y): (a) base, s + ∇ log p(y | x, t) with a cross-entropy "
        f"classifier; (b) scaling, the same with α = {SCALING_ALPHA:g}; (c) posterior SM, one "
        "score model per class; (d) DLSM, a classifier trained with L_Total; (e) the oracle, "
        "the Parzen score of the clean class points at σ_t. Numbers: "
        f"`{os.path.basename(stem)}.json`.", "",
        *settings_lines(study, timer.times, dirs, folder),
        *table_lines(results, grid_sigma),
        *sample_lines(results, knn_radius(base.data.points, base.data.labels,
                                          base.evaluation.prdc_k), base.evaluation.prdc_k),
        *noise_level_lines(results, sigmas, args.data_sigmas, args.data_points),
        *objective_lines(objectives, args.objective_batches, study), *curve_lines(dirs, dsm, args.objective_batches),
        "## Figure", "",
        f"Per method: the posterior score of each class at σ = {grid_sigma:g} (black, unit "
        "arrows on every other grid point; the oracle's in red) and the first "
        f"{FIGURE_SAMPLES} samples of each class (blue: class 0, orange: class 1).", "",
        f"![posterior scores and samples]({os.path.basename(stem)}.png)", ""]
    write_keeping_discussion(args.out, "\n".join(lines))
    print(f"wrote {args.out}, {stem}.png and {stem}.json")


if __name__ == "__main__":
    main()
