"""Conditional evaluation of an image DLSM run (DLSM poster Table 1; the official CIFAR protocol,
``official_code_facts`` §2b, ``run_lib_evaluation.py`` and ``run_lib_evaluation_cas.py``).

    results = evaluate(experiment, workdir)   # WORKDIR/classifier/eval/ckpt_<step>.json + PNG
    path = sample(experiment, workdir)        # WORKDIR/classifier/samples/samples_step_<step>.npz

**Samples.** For every class y, ``eval.samples_per_class`` = n samples from the score model's
sampler (``sampling.*``, predictor and corrector alike) following the posterior score
s(x, t) + α ∇ₓ log p(y | x, t) of the configured guidance
(:meth:`ClassifierExperiment.posterior_score_model`): the EMA parameters of the score checkpoint
the classifier was trained against and of the classifier checkpoint ``eval.checkpoint`` with its
running statistics, the classifier in evaluation mode (:func:`sgm_jax.checkpoints.load_models`).
Class y is drawn in ⌈n / ``eval.batch_size``⌉ global batches of equal size (n split evenly,
rounded up to a multiple of the device count; the surplus of the last batch is dropped), each
sharded over the mesh (:class:`sgm_jax.evaluate.images.BatchSampler`); batch j of class y uses
the key ``fold_in(fold_in(k, y), j)``. Every batch is one unit of a
:class:`~sgm_jax.evaluate.store.ShardStore` in
``WORKDIR/classifier/eval/ckpt_<step>/samples-<digest>/``
(the digest names the sampler, the guidance and the batch size), so a killed evaluation resumes
with the same numbers, and ``--mode=sample`` exports the same samples.

**Feature space.** With ``eval.enable_fid`` (the score config's image evaluation), the FID
Inception network (pool_3 features and logits, ``eval.inception_weights``) and, as the official
evaluation, the training split as the reference (its cached statistics,
:func:`sgm_jax.evaluate.images.reference_statistics`). Without it (the offline digits), the feature
space of the library's digits classifier trained on the training split
(:func:`sgm_jax.metrics.feature_classifier.fit_feature_space`, ``eval.feature_steps`` steps)
with the *test* split as the reference, images the feature network has not seen (as
``experiments/digits_demo.py``); those numbers are not Inception FIDs. The samples' features
are stored beside the samples.

**Metrics.**

* ``fid``, ``is``, ``kid``, ``precision`` / ``recall`` / ``density`` / ``coverage``
  (k = ``eval.prdc_k``) of all samples against the reference
  (:func:`sgm_jax.evaluate.images.inception_metrics`, the score config's ``eval.is_splits`` and KID
  settings). The samples enter in round-robin class order, so that each of the IS splits holds
  every class and PRDC's truncation of the larger set (the official "full" mode truncates the
  samples to the number of real images) keeps the same number of samples of each class.
* ``cw_precision`` / ``cw_recall`` / ``cw_density`` / ``cw_coverage``: the class-wise metrics
  against the reference images of each class (:func:`sgm_jax.metrics.classwise_prdc`, the
  official "class" mode), averaged over the classes.
* ``cas`` (``eval.enable_cas``): the classification accuracy score
  (:func:`sgm_jax.metrics.cas`) of the classifier network of the config without its noise
  conditioning (``resnet_cond`` with ``conditional=False``, the same depth and width), trained
  on the generated (sample, class) pairs for ``eval.cas_steps`` steps of ``eval.cas_batch_size``
  with Adam at ``eval.cas_lr`` and tested on the real test split. The official CAS network is
  torchvision's ResNet-50 trained for 400,000 steps of 150.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np

from sgm_jax import parallel, plots
from sgm_jax.checkpoints import classifier_workdir, load_models
from sgm_jax.classifier_experiment import ClassifierExperiment
from sgm_jax.data import to_unit_interval
from sgm_jax.evaluate.images import (BatchSampler, check_eval_batch, check_ready, host_array,
                                     inception_metrics, reference_statistics, to_rgb, to_uint8)
from sgm_jax.evaluate.results import write_results
from sgm_jax.evaluate.store import Progress, ShardStore
from sgm_jax.metrics import (cas, classwise_prdc, feature_statistics, inception_weights_hash,
                             load_inception)
from sgm_jax.metrics.feature_classifier import FEATURE_SEED, fit_feature_space
from sgm_jax.models.classifiers import ConditionalResNet

Array = jax.Array
Features = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

PRDC_METRICS = ("precision", "recall", "density", "coverage")
#: Samples of each class in a row of the per-class sample grid.
GRID_COLUMNS = 10


@dataclasses.dataclass(frozen=True)
class FeatureSpace:
    """Where sample quality is measured: ``features(uint8 images) -> (features [N, F], logits
    [N, K])``, the reference set's ``reference`` ("features", "mu", "cov") with its int
    ``labels``, and ``settings`` that describe the network and the reference."""

    features: Features
    reference: dict[str, np.ndarray]
    labels: np.ndarray
    settings: dict[str, Any]


def class_batches(samples_per_class: int, batch_size: int, num_devices: int) -> tuple[int, int]:
    """``(batches per class, global batch size)``: ⌈n / batch_size⌉ batches of ⌈n / batches⌉
    samples rounded up to a multiple of ``num_devices`` (at most ``batch_size`` when it is a
    multiple of ``num_devices``)."""
    num = -(-samples_per_class // batch_size)
    per_batch = -(-samples_per_class // num)
    return num, -(-per_batch // num_devices) * num_devices


def interleave_classes(num_classes: int, per_class: int) -> np.ndarray:
    """The round-robin order of class-major rows (class c's i-th sample at row c·n + i): the
    first sample of every class, then the second of every class, ..."""
    return np.arange(num_classes * per_class).reshape(num_classes, per_class).T.ravel()


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def eval_keys(experiment: ClassifierExperiment) -> tuple[Array, Array, Array]:
    """The keys of the samples, of KID's subsets and of the CAS training, from the run's
    evaluation key."""
    return tuple(jax.random.split(experiment.eval_key(), 3))


def _sample_settings(experiment: ClassifierExperiment, batch: int) -> dict[str, Any]:
    score = experiment.score
    return {"sampling": score.sampler_settings, "num_scales": int(score.sde.N),
            "guidance": experiment.guidance, "scale": experiment.scale, "batch_size": batch}


def class_samples(experiment: ClassifierExperiment, score_params: Any, params: Any, folder: str,
                  mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """All conditional samples (module docstring), computed or loaded from their units in
    ``folder``: uint8 images [C·n, ...] in class-major order, their int32 labels, the NFE of
    every batch, and the sampling settings (``"store"``: the units' folder)."""
    e, score = experiment.evaluation, experiment.score
    check_eval_batch(score, mesh)
    n, num_classes = e.samples_per_class, experiment.num_classes
    num_batches, batch = class_batches(n, e.batch_size, mesh.size)
    settings = _sample_settings(experiment, batch)
    store = ShardStore(os.path.join(folder, f"samples-{_digest(settings)}"))
    sampler = BatchSampler(
        score, (score_params, params), batch, mesh,
        score_model=lambda p, y: experiment.posterior_score_model(p[0], p[1], y))
    key = eval_keys(experiment)[0]
    progress = Progress("conditional sampling", num_classes * num_batches)
    images, nfes = [], []
    for label in range(num_classes):
        parts = []
        for j in range(num_batches):
            name = f"class_{label:04d}_{j:04d}"
            computed = not store.done(name)

            def compute(label=label, j=j):
                x, nfe = sampler(jax.random.fold_in(jax.random.fold_in(key, label), j),
                                 np.full(batch, label, np.int32))
                return {"images": x, "nfe": np.asarray(nfe)}

            unit = store.get(name, compute)
            parts.append(unit["images"])
            nfes.append(int(unit["nfe"]))
            progress(label * num_batches + j, computed)
        images.append(np.concatenate(parts)[:n])
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), n)
    settings.update(batches_per_class=num_batches, store=store.directory)
    return np.concatenate(images), labels, np.asarray(nfes), settings


def load_test_split(experiment: ClassifierExperiment) -> tuple[np.ndarray, np.ndarray]:
    """The whole test split as uint8 images and int32 labels, on every process."""
    score = experiment.score
    parts = [(b["x"], b["label"], b["mask"])
             for b in score.data.eval_batches(score.evaluation.batch_size)]
    x, labels, mask = (host_array(np.concatenate([p[i] for p in parts])) for i in range(3))
    return to_uint8(score, x[mask]), labels[mask].astype(np.int32)


def inception_space(experiment: ClassifierExperiment) -> FeatureSpace:
    """The FID Inception network with the training split as the reference (module docstring)."""
    score = experiment.score
    check_ready(score, conditional=True)
    weights = score.evaluation.inception_weights
    inception = load_inception(weights)
    return FeatureSpace(
        features=lambda images: inception(to_rgb(images)),
        reference=reference_statistics(score, inception), labels=score.data.labels,
        settings={"network": "inception", "weights_sha256": inception_weights_hash(weights),
                  "reference": "train"})


def classifier_space(experiment: ClassifierExperiment,
                     test: tuple[np.ndarray, np.ndarray]) -> FeatureSpace:
    """The library's feature classifier trained on the training split, with the test split
    ``test`` (images, labels) as the reference (module docstring)."""
    data = experiment.score.data
    steps = experiment.evaluation.feature_steps
    features = fit_feature_space(data.points, data.labels, experiment.num_classes, steps=steps)
    reference = features(test[0])[0]
    mu, cov = feature_statistics(reference)
    return FeatureSpace(
        features=features, reference={"features": reference, "mu": mu, "cov": cov},
        labels=test[1],
        settings={"network": "feature_classifier", "seed": FEATURE_SEED, "steps": steps,
                  "reference": "test"})


def sample_quality(experiment: ClassifierExperiment, space: FeatureSpace, features: np.ndarray,
                   logits: np.ndarray, labels: np.ndarray, key: Array) -> dict[str, Any]:
    """The metrics of all samples and the class-wise ones (module docstring) from the samples'
    ``features`` and ``logits`` in class-major order with their ``labels``."""
    order = interleave_classes(experiment.num_classes, experiment.evaluation.samples_per_class)
    overall = inception_metrics(experiment.score, features[order], logits[order], space.reference,
                                key)
    classwise = classwise_prdc(space.reference["features"], space.labels, features, labels,
                               num_classes=experiment.num_classes,
                               nearest_k=experiment.evaluation.prdc_k)
    return {**overall, **{f"cw_{name}": classwise[name] for name in PRDC_METRICS},
            "cw_per_class": classwise["per_class"]}


def classification_accuracy_score(experiment: ClassifierExperiment, images: np.ndarray,
                                  labels: np.ndarray, test: tuple[np.ndarray, np.ndarray],
                                  key: Array) -> dict[str, Any]:
    """``cas`` and ``cas_train_accuracy`` of the unconditioned classifier network trained on the
    uint8 samples ``images`` with their ``labels`` and tested on ``test`` (module docstring)."""
    e, network = experiment.evaluation, experiment.network
    if not isinstance(network, ConditionalResNet):
        raise ValueError("eval.enable_cas trains the classifier network without its noise "
                         "conditioning, which needs classifier.model.name='resnet_cond'; got "
                         f"{type(network).__name__}. Set eval.enable_cas=False.")
    scaler = experiment.score.data.scaler
    out = cas(network.clone(conditional=False), scaler(to_unit_interval(images)), labels,
              scaler(to_unit_interval(test[0])), test[1], key=key, steps=e.cas_steps,
              batch_size=e.cas_batch_size, lr=e.cas_lr)
    return {"cas": out["cas"], "cas_train_accuracy": out["train_accuracy"]}


def _class_grid(path: str, images: np.ndarray, num_classes: int) -> str:
    """One row per class: its first samples (at most :data:`GRID_COLUMNS`)."""
    per_class = images.reshape(num_classes, -1, *images.shape[1:])
    columns = min(GRID_COLUMNS, per_class.shape[1])
    grid = per_class[:, :columns].reshape(-1, *images.shape[1:])
    return plots.save_image_grid(path, grid.astype(np.float32) / 255.0, columns=columns)


def evaluate(experiment: ClassifierExperiment, workdir: str, *, mesh=None) -> dict[str, Any]:
    """The module docstring's metrics of the classifier checkpoint ``eval.checkpoint`` of the
    DLSM run in ``workdir``; written to ``WORKDIR/classifier/eval/ckpt_<classifier step>.json``
    with a per-class sample grid beside it."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    e, score_eval = experiment.evaluation, experiment.score.evaluation
    if e.samples_per_class <= e.prdc_k:
        raise ValueError(f"eval.samples_per_class={e.samples_per_class} must exceed "
                         f"eval.prdc_k={e.prdc_k}: the class-wise PRDC needs k + 1 samples of "
                         "every class.")
    space = inception_space(experiment) if score_eval.enable_fid else None  # fails before sampling
    score_params, params, step, record = load_models(experiment, workdir, mesh=mesh)
    run = classifier_workdir(workdir)
    folder = os.path.join(run, "eval", f"ckpt_{step}")
    images, labels, nfes, sampling = class_samples(experiment, score_params, params, folder, mesh)
    test = load_test_split(experiment) if e.enable_cas or space is None else None
    space = classifier_space(experiment, test) if space is None else space
    feature_store = ShardStore(os.path.join(folder, "features-" + _digest(
        {"samples": os.path.basename(sampling["store"]), "samples_per_class": e.samples_per_class,
         "space": space.settings})))
    stored = feature_store.get("features", lambda: dict(zip(("features", "logits"),
                                                             space.features(images))))
    _, k_kid, k_cas = eval_keys(experiment)
    results: dict[str, Any] = {
        "step": step, "score": record, "guidance": experiment.guidance,
        "scale": experiment.scale, "objective": experiment.objective,
        "num_samples": int(len(images)), "nfe": float(nfes.mean()),
        **sample_quality(experiment, space, stored["features"], stored["logits"], labels, k_kid)}
    if e.enable_cas:
        results.update(classification_accuracy_score(experiment, images, labels, test, k_cas))
    results["settings"] = {
        "samples_per_class": e.samples_per_class, **sampling, "feature_space": space.settings,
        "prdc_k": e.prdc_k, "kid": [score_eval.kid_subset_size, score_eval.kid_num_subsets],
        "is_splits": score_eval.is_splits,
        "cas": {"steps": e.cas_steps, "batch_size": e.cas_batch_size, "lr": e.cas_lr}
        if e.enable_cas else None,
        "params": "ema"}
    if jax.process_index() == 0:
        results["figures"] = [_class_grid(os.path.join(run, "figures", f"samples_ckpt_{step}.png"),
                                          images, experiment.num_classes)]
    write_results(run, step, results)
    return results


def sample(experiment: ClassifierExperiment, workdir: str, *, mesh=None) -> str:
    """``eval.samples_per_class`` samples of every class, the evaluation's (computed, or loaded
    from its units): ``WORKDIR/classifier/samples/samples_step_<classifier step>.npz`` (uint8
    ``images``, int32 ``label``, mean ``nfe``) and a per-class grid beside it."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    score_params, params, step, _ = load_models(experiment, workdir, mesh=mesh)
    run = classifier_workdir(workdir)
    folder = os.path.join(run, "eval", f"ckpt_{step}")
    images, labels, nfes, _ = class_samples(experiment, score_params, params, folder, mesh)
    path = os.path.join(run, "samples", f"samples_step_{step}.npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, images=images, label=labels, nfe=float(nfes.mean()))
        _class_grid(path[:-4] + ".png", images, experiment.num_classes)
        print(f"wrote {path} ({len(images)} samples, {experiment.num_classes} classes)")
    return path
