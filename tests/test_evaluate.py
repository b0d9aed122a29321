"""main.py end to end on a tiny toy run: train, evaluate (table, JSON, figures) and sample."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import main as entry
from configs.toy import checkerboard_qc

TINY = {
    "training.n_iters": 6, "training.batch_size": 64, "training.log_freq": 3,
    "training.snapshot_freq": 3, "data.num_points": 512, "eval.num_points": 64,
    "eval.num_levels": 2, "eval.nll_num_points": 32, "sampling.num_samples": 64,
}


def _tiny_config():
    config = checkerboard_qc.get_config()
    for path, value in TINY.items():
        section, field = path.split(".")
        config[section][field] = value
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    results = entry.run(_tiny_config(), "train", workdir)
    return workdir, results


def test_train_mode_ends_with_an_evaluation(trained, capsys):
    workdir, results = trained
    assert results["step"] == 6
    for name in ("asym", "nasym", "score_error", "nll", "precision", "recall", "density", "coverage"):
        assert np.isfinite(results[name]), name
    assert 0.0 <= results["nasym"] <= 1.0 and results["sampler_nfe"] > 0 and results["nll_nfe"] > 0
    assert len(results["per_level"]["asym"]) == 2
    with open(os.path.join(workdir, "eval", "metrics_step_6.json")) as f:
        assert json.load(f)["score_error"] == pytest.approx(results["score_error"])
    for figure in ("samples", "density", "score_field", "training_curves"):
        assert os.path.getsize(os.path.join(workdir, "figures", f"{figure}.png")) > 1000


def test_eval_mode_is_reproducible_and_sample_mode_writes_npz(trained, capsys):
    workdir, results = trained
    again = entry.run(_tiny_config(), "eval", workdir)
    assert again["asym"] == results["asym"] and again["precision"] == results["precision"]
    assert "score error" in capsys.readouterr().out
    path = entry.run(_tiny_config(), "sample", workdir)
    samples = np.load(path)["samples"]
    assert samples.shape == (64, 2) and np.all(np.isfinite(samples))
    assert os.path.exists(path.replace(".npz", ".png"))
