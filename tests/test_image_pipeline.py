"""The image path end to end through ``main.run``: the real CIFAR-10 configs at tiny width on
tfds mock data (training with the evaluation loss, a kill and a resume, the NaN stop, the
evaluation with FID / IS / KID / PRDC on random Inception weights, bits/dim and Asym over t, a
killed evaluation resumed), and every image config's validation.

Tiny means: 16×16 images, nf 8, one residual block on two resolutions, 10 noise scales, a few
steps; every other field as the config ships it.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import main as entry
import config_files
from recording_writer import Recorder
from sgm_jax import checkpoints, train
from sgm_jax.data import DataSource
from sgm_jax.experiment import build_experiment
from sgm_jax.metrics.inception import write_random_inception_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 32
TINY = {
    "data.image_size": 16, "model.nf": 8, "model.ch_mult": (1, 2), "model.num_res_blocks": 1,
    "model.attn_resolutions": (8,), "sde.num_scales": 10, "training.batch_size": 16,
    # one step per dispatch (several per dispatch: tests/test_train.py and test_multiprocess.py)
    "training.n_iters": 4, "training.n_jitted_steps": 1, "training.log_freq": 2,
    "training.eval_freq": 2, "training.snapshot_freq": 2, "training.keep_every": 0,
    "training.snapshot_num_samples": 8, "eval.batch_size": 8, "eval.num_samples": 16,
    "eval.bpd_num_examples": 16, "eval.bpd_repeats": 2, "eval.bpd_rtol": 1e-3,
    "eval.bpd_atol": 1e-3, "eval.asym_num_levels": 2, "eval.asym_num_examples": 16,
    "eval.kid_subset_size": 8, "eval.kid_num_subsets": 4, "eval.is_splits": 2,
    "sampling.num_samples": 8,
}


def _config(module: str, **overrides):
    return config_files.load(module, {**TINY, **overrides})


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Random FID Inception weights in the converted format (the real file is not available
    offline; the metrics' wiring, not their values, is under test here)."""
    return write_random_inception_weights(
        str(tmp_path_factory.mktemp("inception") / "inception_random.npz"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cifar10_qc"))
    config = _config("configs/ve/cifar10_qc.py")
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        recorder = Recorder()
        state = train.train(build_experiment(config), workdir, writer=recorder)
    return workdir, config, jax.device_get(state), recorder.scalars


def test_training_logs_losses_eval_loss_and_writes_snapshots(trained):
    workdir, _, state, scalars = trained
    assert int(state.step) == 4
    assert sorted(scalars["loss"]) == [2, 4] and sorted(scalars["eval_loss"]) == [2, 4]
    assert all(np.isfinite(v) and v > 0 for v in scalars["eval_loss"].values())
    assert all(abs(v) < 1e-3 for v in scalars["qc_share"].values())  # QC-NCSN++: λ = 1e-4
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_2.png", "step_4.png"]
    # the Gaussian Fourier W is a parameter that never moves (stop_gradient, zero Adam update),
    # so its EMA stays equal to it up to the rounding of rate·w + (1 − rate)·w
    w = np.asarray(state.params["params"]["GaussianFourierProjection_0"]["W"])
    w_ema = np.asarray(state.ema_params["params"]["GaussianFourierProjection_0"]["W"])
    np.testing.assert_allclose(w_ema, w, rtol=1e-6)


def test_evaluation_metrics_and_resume_after_a_kill(trained, inception_weights, tmp_path):
    workdir, config, _, _ = trained
    config.eval.inception_weights = inception_weights
    config.eval.stats_dir = str(tmp_path / "stats")
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        results = entry.run(config, "eval", workdir)
        for name in ("fid", "is", "kid", "precision", "recall", "density", "coverage", "nfe",
                     "bpd", "asym", "nasym"):
            assert np.isfinite(results[name]), name
        assert results["nfe"] == 20 and results["nfe_per_batch"] == [20, 20]  # PC: N (1 + 1)
        assert results["bpd_num"] == 2 * 16 and results["asym_num"] == 16
        assert len(results["asym_over_t"]["t"]) == 2 and results["prdc_num"] == 16
        assert len(results["settings"]["inception_weights_sha256"]) == 64
        with open(os.path.join(workdir, "eval", "ckpt_4.json")) as f:
            assert json.load(f)["bpd"] == results["bpd"]
        # a killed evaluation: remove the JSON and the later units, then evaluate again
        store = os.path.join(workdir, "eval", "ckpt_4")
        os.remove(os.path.join(workdir, "eval", "ckpt_4.json"))
        for name in ("samples-*/samples_00001.npz", "bpd-*/bpd_01_00000.npz", "asym-*/asym_001.npz"):
            (path,) = glob.glob(os.path.join(store, name))
            os.remove(path)
        again = entry.run(config, "eval", workdir)
    for name in ("fid", "is", "kid", "precision", "bpd", "asym", "nasym", "nfe"):
        assert again[name] == results[name], name
    assert len(os.listdir(config.eval.stats_dir)) == 1  # the reference statistics, cached once


def test_sample_mode_writes_the_grid_and_npz(trained):
    workdir, config, _, _ = trained
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        path = entry.run(config, "sample", workdir)
    images = np.load(path)["images"]
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert os.path.exists(path.replace(".npz", ".png"))


def test_evaluation_with_every_part_off_writes_its_results(trained, tmp_path):
    """Sampling, bits/dim and Asym all off in a run that has no evaluation folder yet: the
    results file holds the step and the settings."""
    workdir, config, _, _ = trained
    config = copy.deepcopy(config)
    config.eval.enable_sampling = config.eval.enable_bpd = config.eval.enable_asym = False
    fresh = str(tmp_path / "run")
    shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(fresh, "checkpoints"))
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        results = entry.run(config, "eval", fresh)
    with open(os.path.join(fresh, "eval", "ckpt_4.json")) as f:
        assert json.load(f) == results
    assert results["step"] == 4 and "bpd" not in results and "nfe" not in results


def test_missing_inception_weights_fail_before_sampling(trained):
    workdir, config, _, _ = trained
    config.eval.inception_weights = ""
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        with pytest.raises(ValueError, match="pt_inception-2015-12-05"):
            entry.run(config, "eval", workdir)


def test_missing_data_set_fails_clearly(tmp_path):
    config = _config("configs/ve/cifar10_u.py", **{"data.data_dir": str(tmp_path / "tfds")})
    with pytest.raises(FileNotFoundError, match=r"cifar10.*tfds build"):
        entry.run(config, "train", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


_CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{root!r}, os.path.join({root!r}, "tests")]
    import tensorflow_datasets as tfds
    from tests.test_image_pipeline import _config
    from sgm_jax import train
    from sgm_jax.data import DataSource
    from sgm_jax.experiment import build_experiment
    slow = DataSource.train_batch
    def throttled(self, step):
        time.sleep(0.5)
        return slow(self, step)
    DataSource.train_batch = throttled
    with tfds.testing.mock_data(num_examples={n}):
        config = _config("configs/ve/cifar10_u.py", **{{"training.n_iters": 1000}})
        train.train(build_experiment(config), sys.argv[1])
""")


@pytest.mark.slow
def test_kill_resume_and_nan_stop(tmp_path, monkeypatch):
    """A run killed after its first checkpoint resumes to the state of an uninterrupted run;
    a non-finite loss stops training at its step and keeps the last good checkpoint.

    Slow (three trainings and a subprocess's compilation of NCSN++: minutes on 2 cores); the
    default suite checks the same mechanisms on the toy path (``tests/test_train.py``) and on
    two processes (``tests/test_multiprocess.py``), and that an image batch is a function of
    (seed, step) in ``tests/test_data.py``."""
    workdir = str(tmp_path / "killed")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=ROOT, n=NUM_EXAMPLES), workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 400
        while not os.path.isdir(os.path.join(workdir, "checkpoints", "2")):
            if child.poll() is not None:
                pytest.fail("training subprocess exited early:\n"
                            + child.stderr.read().decode()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 400 s")
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    config = _config("configs/ve/cifar10_u.py")
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        experiment = build_experiment(config)
        resumed = train.train(experiment, workdir)
        reference = train.train(experiment, str(tmp_path / "reference"))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(resumed), jax.device_get(reference))

    clean = DataSource.train_batch
    monkeypatch.setattr(DataSource, "train_batch", lambda self, step: (
        {**clean(self, step), "x": clean(self, step)["x"] * np.nan} if step >= 2 else
        clean(self, step)))
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        with pytest.raises(FloatingPointError, match="at step 2"):
            train.train(build_experiment(config), str(tmp_path / "nan"))
    assert checkpoints.manager(checkpoints.checkpoint_dir(str(tmp_path / "nan")),
                               read_only=True).all_steps() == [2]


@pytest.mark.parametrize("path", sorted(
    p for folder in ("ve", "vp", "subvp") for p in glob.glob(os.path.join(ROOT, "configs", folder,
                                                                          "*.py"))))
def test_image_configs_validate(path):
    """Every image config builds as shipped (full size; the data are mocked)."""
    config = config_files.load(path, {"training.batch_size": 16})
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        experiment = build_experiment(config)
    assert experiment.training.n_iters % experiment.training.n_jitted_steps == 0
