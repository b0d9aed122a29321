"""The two-stage DLSM pipeline on the moons through ``main.run`` (score model, classifier against
its frozen EMA parameters, conditional evaluation and sampling), the record of the score
checkpoint and its refusal of another one, config validation, and the toy conditional
evaluation's oracle against its definition."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import main as entry
from configs.dlsm import moons_base, moons_dlsm
from sgm_jax import checkpoints
from sgm_jax.evaluate import conditional_toy as conditional_eval
from sgm_jax.sde import VESDE, VPSDE

SCORE_ITERS, CLASSIFIER_ITERS, SAMPLES = 20, 10, 64


def tiny(config):
    t, ct, e = config.training, config.classifier.training, config.eval
    t.n_iters, t.batch_size, t.log_freq, t.snapshot_freq = SCORE_ITERS, 256, 10, 10
    ct.n_iters, ct.batch_size, ct.log_freq, ct.snapshot_freq = CLASSIFIER_ITERS, 256, 5, 5
    ct.eval_freq = 5
    config.sde.num_scales = 20
    e.samples_per_class, e.batch_size, e.grid_size = SAMPLES, SAMPLES, 9
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("moons_dlsm"))
    results = entry.run(tiny(moons_dlsm.get_config()), "train", workdir)
    return workdir, results


def test_train_runs_both_stages_and_evaluates(run):
    workdir, results = run
    with open(os.path.join(workdir, "classifier", checkpoints.SOURCE_FILE)) as f:
        source = json.load(f)
    assert source["step"] == SCORE_ITERS and source["folder"] == os.path.abspath(workdir)
    assert results["step"] == CLASSIFIER_ITERS
    assert results["score"] == source
    assert (results["guidance"], results["scale"], results["objective"]) == ("dlsm", 1.0, "total")
    assert results["nfe"] == 2 * 20  # PC: one predictor and one corrector evaluation per step
    for key in ("precision", "recall", "density", "coverage"):
        assert 0 <= results[key] <= 1 + (key == "density") * 10
    for field in conditional_eval.FIELDS:  # a mean norm is at most the root mean square
        assert 0 < results[f"{field}_error"] <= np.sqrt(results[f"{field}_mse"]) + 1e-6
    path = os.path.join(workdir, "classifier", "eval", f"ckpt_{CLASSIFIER_ITERS}.json")
    with open(path) as f:
        assert json.load(f)["posterior_error"] == results["posterior_error"]


def test_sample_writes_every_class(run):
    workdir, _ = run
    path = entry.run(tiny(moons_dlsm.get_config()), "sample", workdir)
    with np.load(path) as stored:
        assert stored["x"].shape == (2 * SAMPLES, 2)
        np.testing.assert_array_equal(np.bincount(stored["label"]), [SAMPLES, SAMPLES])


def test_a_different_score_checkpoint_is_refused(run, tmp_path):
    """The record names another score model (its EMA digest differs from the configured
    checkpoint's): evaluating, sampling or resuming the classifier must stop before any work."""
    workdir, _ = run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("samples"))
    path = os.path.join(copy, "classifier", checkpoints.SOURCE_FILE)
    with open(path) as f:
        record = json.load(f)
    record["digest"] = "0" * 64
    with open(path, "w") as f:
        json.dump(record, f)
    config = tiny(moons_dlsm.get_config())
    for mode in ("eval", "sample", "train"):
        with pytest.raises(ValueError, match="was trained against the score model of step 20"):
            entry.run(config, mode, copy)
    assert not os.path.exists(os.path.join(copy, "samples"))


def test_a_classifier_of_another_objective_is_its_own_run(run, tmp_path):
    """The CE classifier of "base" guidance against the score run of the fixture."""
    workdir, _ = run
    config = tiny(moons_base.get_config())
    config.classifier.score_workdir = workdir
    results = entry.run(config, "train", str(tmp_path))
    assert (results["guidance"], results["objective"]) == ("base", "ce")
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))  # no stage 1 here


@pytest.mark.parametrize("field,value,match", [
    ("guidance.method", "scaling", "must be > 1"),
    ("classifier.training.objective", "ce", "needs a classifier trained with"),
    ("classifier.model.num_classes", 3, "must equal the data set's number of classes"),
    ("data.dataset", "checkerboard", "has no class labels"),
    ("classifier.training.snapshot_sampling", True, "must be False"),
    ("eval.grid_range", (1.0, 0.0, 0.0, 1.0), "eval.grid_range"),
    ("classifier.optim.lr", -1.0, "classifier.optim.lr"),
])
def test_bad_fields_are_refused_before_any_training(field, value, match, tmp_path):
    config = moons_dlsm.get_config()
    section, name = field.rsplit(".", 1)
    node = config
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=match):
        entry.run(config, "train", str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("sde", [VESDE(1e-3, 10.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
def test_time_of_std_inverts_the_marginal_std(sde):
    for sigma in (0.05, 0.5, 0.9):
        if sde.marginal_std(jnp.asarray(1e-9)) < sigma <= sde.marginal_std(jnp.asarray(sde.T)):
            t = conditional_eval.time_of_std(sde, sigma)
            np.testing.assert_allclose(sde.marginal_std(jnp.asarray(t)), sigma, rtol=1e-5)
    with pytest.raises(ValueError, match="eval.grid_sigma"):
        conditional_eval.time_of_std(sde, 1e3)


def test_oracle_fields_are_parzen_scores_of_the_perturbed_classes():
    """VP: p_t(x | y) = Parzen(x / c; class data, σ/c) / c^D, so its score at x is the Parzen
    score there divided by c; the likelihood field is the posterior one minus the full one."""
    sde = VPSDE(0.1, 20.0)
    data = jax.random.normal(jax.random.PRNGKey(0), (50, 2))
    labels = (jnp.arange(50) % 2).astype(jnp.int32)
    points = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
    t = 0.4
    fields = conditional_eval.oracle_fields(sde, points, t, data, labels, 1)
    c = float(sde.mean_coeff(jnp.asarray(t)))
    std = float(sde.marginal_std(jnp.asarray(t)))
    # by hand: ∇ log Σ_i N(x; c x_i, σ² I) over the class's points
    for name, rows in (("posterior", data[1::2]), ("full", data)):
        d = np.asarray(points)[:, None] - c * np.asarray(rows)[None]
        logw = -np.sum(d**2, axis=2) / (2 * std**2)
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        expected = -np.sum(w[..., None] * d, axis=1) / std**2
        np.testing.assert_allclose(fields[name], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fields["likelihood"], fields["posterior"] - fields["full"])
