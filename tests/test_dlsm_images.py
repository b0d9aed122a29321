"""The image DLSM pipeline through ``main.run`` on tfds mock data: the CIFAR-10 "dlsm" config at
tiny width trains the score model and the classifier against it, evaluates (FID / IS / KID / PRDC
and the class-wise metrics in the offline feature space, CAS, the per-class grid), resumes a
killed evaluation from its stored units, samples every class and refuses another score
checkpoint; every ``configs/dlsm`` config validates with the official settings; the evaluation's
batching and class order by hand.

Tiny means: 16×16 images, NCSN++ with nf 8 on one resolution, a ResNet-18 of width 4, 4 noise
scales, 2 steps of each stage, 4 samples per class, 20 steps of the feature classifier; every
other field as the config ships it.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import config_files
import main as entry
from configs.dlsm import cifar10_dlsm
from sgm_jax.evaluate import conditional_images as cie
from sgm_jax import checkpoints
from sgm_jax.evaluate import images as image_eval
from sgm_jax.classifier_experiment import build_classifier_experiment
from sgm_jax.metrics import classwise_prdc, fid, inception_score, prdc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 64
SAMPLES, CLASSES, STEPS, SCALES = 4, 10, 2, 4
TINY = {
    "data.image_size": 16, "model.nf": 8, "model.ch_mult": (1,), "model.num_res_blocks": 1,
    "model.attn_resolutions": (), "sde.num_scales": SCALES, "training.batch_size": 8,
    "training.n_iters": STEPS, "training.n_jitted_steps": 1, "training.log_freq": 1,
    "training.eval_freq": 0, "training.snapshot_freq": 1, "training.keep_checkpoints": 2,
    "training.keep_every": 0, "training.snapshot_sampling": False,
    "classifier.model.width": 4, "classifier.model.nf": 4, "classifier.model.temb_dim": 8,
    "classifier.training.batch_size": 8, "classifier.training.n_iters": STEPS,
    "classifier.training.n_jitted_steps": 1, "classifier.training.log_freq": 1,
    "classifier.training.eval_freq": 0, "classifier.training.snapshot_freq": STEPS,
    "classifier.training.keep_every": 0,
    "eval.batch_size": 8, "eval.samples_per_class": SAMPLES, "eval.prdc_k": 1,
    "eval.kid_subset_size": 4, "eval.kid_num_subsets": 2, "eval.is_splits": 2,
    "eval.enable_fid": False, "eval.cas_steps": 3, "eval.cas_batch_size": 8,
    "eval.feature_steps": 20,
}
KEYS = ("fid", "is", "kid", "precision", "recall", "density", "coverage", "cw_precision",
        "cw_recall", "cw_density", "cw_coverage", "cas", "nfe")


def tiny(**overrides):
    config = cifar10_dlsm.get_config()
    for path, value in {**TINY, **overrides}.items():
        *sections, field = path.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[field] = value
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cifar10_dlsm"))
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        results = entry.run(tiny(**{"training.evaluate_after": True}), "train", workdir)
    return workdir, results


def _units(workdir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(workdir, "classifier", "eval", f"ckpt_{STEPS}",
                                         "samples-*", "class_*.npz")))


def test_train_runs_both_stages_and_evaluates(run):
    workdir, results = run
    with open(os.path.join(workdir, "classifier", checkpoints.SOURCE_FILE)) as f:
        source = json.load(f)
    assert source["step"] == STEPS and source["folder"] == os.path.abspath(workdir)
    assert results["step"] == STEPS and results["score"] == source
    assert (results["guidance"], results["scale"], results["objective"]) == ("dlsm", 1.0, "total")
    with open(os.path.join(workdir, "classifier", "eval", f"ckpt_{STEPS}.json")) as f:
        stored = json.load(f)
    for key in KEYS:
        assert stored[key] == results[key] and np.isfinite(results[key]), key
    assert results["nfe"] == 2 * SCALES  # PC: one predictor and one corrector step per scale
    assert results["num_samples"] == CLASSES * SAMPLES
    assert results["fid"] >= 0 and 1 <= results["is"] <= CLASSES  # IS ∈ [1, number of classes]
    for name in ("precision", "recall", "coverage", "cw_precision", "cw_recall", "cw_coverage",
                 "cas", "cas_train_accuracy"):
        assert 0 <= results[name] <= 1, name
    assert results["density"] >= 0 and results["cw_density"] >= 0
    for name in ("precision", "recall", "density", "coverage"):  # the mean over the classes
        per_class = results["cw_per_class"][name]
        assert len(per_class) == CLASSES and results[f"cw_{name}"] == pytest.approx(
            np.mean(per_class), rel=1e-12)
    settings = results["settings"]
    assert settings["feature_space"]["reference"] == "test"  # no Inception: the digits protocol
    assert settings["feature_space"]["steps"] == 20
    assert (settings["batches_per_class"], settings["batch_size"]) == (1, 8)  # 4 rounded up to 8
    assert len(_units(workdir)) == CLASSES
    assert os.path.exists(results["figures"][0])


def test_a_killed_evaluation_resumes_from_its_units(run, monkeypatch):
    """A unit removed (a kill before its batch was stored): only that batch is drawn again, the
    stored ones are read, and the numbers are those of the uninterrupted evaluation."""
    workdir, results = run
    calls = []
    draw = image_eval.BatchSampler.__call__

    def counted(self, key, labels=None):
        calls.append(None if labels is None else int(labels[0]))
        return draw(self, key, labels)

    monkeypatch.setattr(image_eval.BatchSampler, "__call__", counted)
    units = _units(workdir)
    with np.load(units[3]) as stored:
        images = stored["images"]
    os.remove(units[3])  # class 3's only batch
    os.remove(os.path.join(workdir, "classifier", "eval", f"ckpt_{STEPS}.json"))
    kept = {u: os.path.getmtime(u) for u in units if u != units[3]}
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        resumed = entry.run(tiny(), "eval", workdir)
    assert calls == [3] and {u: os.path.getmtime(u) for u in kept} == kept
    with np.load(units[3]) as stored:
        np.testing.assert_array_equal(stored["images"], images)
    for key in KEYS:
        assert resumed[key] == results[key], key


def test_inception_path_measures_against_the_training_split(run, monkeypatch, tmp_path):
    """With ``eval.enable_fid`` the samples and the training split go through the Inception
    function (here a stand-in: pixel features and fixed random logits) and the results are those
    of the metric functions on them: FID against the training statistics, IS and PRDC of the
    samples in round-robin class order, class-wise PRDC against each class's training images."""
    workdir, _ = run
    weights = str(tmp_path / "weights.npz")
    np.savez(weights, w=np.zeros(1))
    projection = np.random.default_rng(0).standard_normal((16 * 16 * 3, 7))

    def network(images):
        features = images.reshape(len(images), -1).astype(np.float64) / 255.0
        return features, features @ projection

    monkeypatch.setattr(cie, "load_inception", lambda path: network)
    config = tiny(**{"eval.enable_fid": True, "eval.inception_weights": weights,
                     "eval.stats_dir": str(tmp_path / "stats")})
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        results = entry.run(config, "eval", workdir)
        data = build_classifier_experiment(config).score.data
        real, real_labels = network(data.points)[0], data.labels  # read on first use
    images = np.concatenate([np.load(u)["images"][:SAMPLES] for u in _units(workdir)])
    labels = np.repeat(np.arange(CLASSES), SAMPLES)
    fake, logits = network(images)
    assert results["settings"]["feature_space"]["reference"] == "train"
    assert results["fid"] == pytest.approx(fid(real, fake), rel=1e-6)
    order = [c * SAMPLES + i for i in range(SAMPLES) for c in range(CLASSES)]
    assert results["is"] == pytest.approx(inception_score(logits[order], splits=2)[0], rel=1e-12)
    n = min(len(real), len(fake))
    overall = prdc(real[:n], fake[order][:n], nearest_k=1)
    classwise = classwise_prdc(real, real_labels, fake, labels, num_classes=CLASSES, nearest_k=1)
    for name in ("precision", "recall", "density", "coverage"):
        assert results[name] == pytest.approx(float(overall[name]), rel=1e-6), name
        assert results[f"cw_{name}"] == pytest.approx(classwise[name], rel=1e-6), name


def test_sample_writes_every_class(run):
    workdir, _ = run
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        path = entry.run(tiny(), "sample", workdir)
    assert path == os.path.join(workdir, "classifier", "samples", f"samples_step_{STEPS}.npz")
    with np.load(path) as stored:
        images, labels = stored["images"], stored["label"]
    assert images.shape == (CLASSES * SAMPLES, 16, 16, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [SAMPLES] * CLASSES)
    with np.load(_units(workdir)[0]) as unit:  # the evaluation's samples of class 0
        np.testing.assert_array_equal(images[:SAMPLES], unit["images"][:SAMPLES])
    assert os.path.exists(path[:-4] + ".png")


def test_a_different_score_checkpoint_is_refused(run):
    workdir, _ = run
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        config = tiny(**{"classifier.score_checkpoint": 1})
        refused = f"was trained against the score model of step {STEPS}"
        with pytest.raises(ValueError, match=refused):
            entry.run(config, "eval", workdir)


def test_class_batches_and_round_robin_order():
    # 5,100 per class in batches of at most 1,024 on 8 devices: 5 batches of 1,020 → 1,024
    assert cie.class_batches(5100, 1024, 8) == (5, 1024)
    assert cie.class_batches(600, 1024, 8) == (1, 600)
    assert cie.class_batches(4, 8, 8) == (1, 8)
    assert cie.class_batches(17, 8, 4) == (3, 8)  # 6 per batch, rounded up to 8
    np.testing.assert_array_equal(cie.interleave_classes(3, 2), [0, 2, 4, 1, 3, 5])


#: method → (objective, guidance, α) of the DLSM study
METHODS = {"base": ("ce", "base", 1.0), "scaling": ("ce", "scaling", 10.0),
           "dlsm": ("total", "dlsm", 1.0)}
#: data set → (samples per class, ResNet depth, classifier warm-up) of the official runs
OFFICIAL = {"cifar10": (5100, 18, 0), "cifar100": (600, 34, 1000)}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "dlsm",
                                                              "*.py"))), ids=os.path.basename)
def test_dlsm_configs_validate(path):
    """Every DLSM config builds as shipped (the classifier batch of 150 on one device; the data
    are mocked), with the objective and α of its method and the official per-data-set fields."""
    name = os.path.basename(path)[:-3]
    dataset, method = name.rsplit("_", 1)
    with tfds.testing.mock_data(num_examples=160):
        config = config_files.load(path, {})
        experiment = build_classifier_experiment(config, num_devices=1)
    assert (experiment.objective, experiment.guidance, experiment.scale) == METHODS[method]
    assert experiment.evaluation.feature_steps == 2000  # the digits feature space's
    if dataset in OFFICIAL:
        spc, depth, warmup = OFFICIAL[dataset]
        assert experiment.evaluation.samples_per_class == spc and experiment.network.depth == depth
        assert config.classifier.optim.warmup == warmup and experiment.score.dataset == dataset
        assert config.training.eps == 1e-3 and config.classifier.training.eps == 1e-5
        assert (config.classifier.training.dlsm_weighting, config.classifier.training.reduce_mean,
                config.classifier.training.ce_weight) == ("one", True, 1.0)
        assert experiment.training.batch_size == 150 and experiment.training.n_iters == 60000


@pytest.mark.parametrize("method", sorted(METHODS))
def test_digits_score_half_is_the_digits_u_run(method):
    """``classifier.score_workdir`` may name a digits U run: every field of
    configs/ve/digits_u.py is the same in the DLSM digits configs."""
    config = config_files.load(f"configs/dlsm/digits_{method}.py", {}).to_dict()
    score = config_files.load("configs/ve/digits_u.py", {}).to_dict()
    for section, fields in score.items():
        if isinstance(fields, dict):
            assert {k: config[section][k] for k in fields} == fields, section
        else:
            assert config[section] == fields, section
