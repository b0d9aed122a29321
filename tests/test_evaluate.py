"""main.py end to end on a tiny toy run: train, evaluate (table, JSON, figures), sample, and the
command line's error reporting.

The evaluation's numbers are checked against independent computations on the saved checkpoint:
Asym per noise level from ``jax.jacfwd`` Jacobians of the EMA score model at the documented
points (t_l = l/L, x̃ = c_t x₀ + σ_t z with z from the evaluation key), the NLL from
``log_likelihood`` with the documented solver settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import main as entry
from configs.toy import checkerboard_qc
from sgm_jax.experiment import build_experiment
from sgm_jax.likelihood import log_likelihood
from sgm_jax.checkpoints import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "training.n_iters": 6, "training.batch_size": 64, "training.log_freq": 3,
    "training.snapshot_freq": 3, "data.num_points": 512, "eval.num_points": 64,
    "eval.num_levels": 2, "eval.nll_num_points": 32, "sampling.num_samples": 64,
    "eval.num_samples": 64,
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


def test_train_mode_ends_with_an_evaluation_of_the_ema_model(trained):
    workdir, results = trained
    assert results["step"] == 6
    with open(os.path.join(workdir, "eval", "ckpt_6.json")) as f:
        assert json.load(f)["score_error"] == pytest.approx(results["score_error"])
    for figure in ("samples", "density", "score_field", "training_curves"):
        assert os.path.exists(os.path.join(workdir, "figures", f"{figure}.png"))

    experiment = build_experiment(_tiny_config())
    ema = load_checkpoint(experiment, workdir).ema_params
    score_model = experiment.score_model(ema)
    points = jnp.asarray(experiment.data.points)
    key_levels, _ = jax.random.split(experiment.eval_key())
    x0 = points[:64]
    z = jax.random.normal(key_levels, x0.shape)
    for level, t in enumerate((0.5, 1.0)):
        tb = jnp.full((64,), t)
        x_tilde = x0 + experiment.sde.marginal_std(tb)[:, None] * z  # VE: c_t = 1
        jac = jax.vmap(jax.jacfwd(lambda x, s: score_model(x[None], s[None])[0]))(x_tilde, tb)
        asym = 0.5 * np.sum((np.asarray(jac) - np.swapaxes(np.asarray(jac), 1, 2)) ** 2, (1, 2))
        np.testing.assert_allclose(results["per_level"]["asym"][level], asym.mean(), rtol=1e-4)
    np.testing.assert_allclose(results["asym"], np.mean(results["per_level"]["asym"]), rtol=1e-6)
    logp, _, nfe = jax.jit(lambda x: log_likelihood(
        experiment.sde, score_model, x, rtol=1e-3, atol=1e-5, eps=1e-5))(points[:32])
    np.testing.assert_allclose(results["nll"], -float(np.mean(logp)), rtol=1e-5)
    assert results["nll_nfe"] == int(nfe)
    assert 0.0 <= results["nasym"] <= 1.0 and results["nfe"] > 0


def test_eval_mode_is_reproducible_and_sample_mode_writes_npz(trained, capsys):
    workdir, results = trained
    again = entry.run(_tiny_config(), "eval", workdir)
    assert again["asym"] == results["asym"] and again["precision"] == results["precision"]
    assert "score_error" in capsys.readouterr().out
    path = entry.run(_tiny_config(), "sample", workdir)
    samples = np.load(path)["samples"]
    assert samples.shape == (64, 2) and np.all(np.isfinite(samples))
    assert os.path.exists(path.replace(".npz", ".png"))


def _main(*args):
    command = [sys.executable, "main.py", "--config=configs/toy/checkerboard_qc.py", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_command_line_errors_are_one_line_unless_debug(tmp_path):
    """A library error (no checkpoint to evaluate, a bad field) prints ``error: …`` and exits
    with status 2; ``--debug`` shows the traceback instead."""
    empty = str(tmp_path / "empty")
    plain = _main("--mode=eval", f"--workdir={empty}")
    assert plain.returncode == 2
    last = plain.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no checkpoint in") and "Traceback" not in plain.stderr
    bad = _main("--mode=train", f"--workdir={empty}", "--config.training.objective=magic")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: training.objective must be one of")
    debug = _main("--mode=eval", f"--workdir={empty}", "--debug")
    assert debug.returncode not in (0, 2) and "Traceback" in debug.stderr
    assert "ValueError: no checkpoint in" in debug.stderr


COMPILE_ONE_PROGRAM = """
import sys
import jax, jax.numpy as jnp
import main
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache even a tiny program
print(main.use_compilation_cache(sys.argv[1], sys.argv[2] == "on"))
jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(3)).block_until_ready()
"""


@pytest.mark.parametrize("env_dir, enabled", [(False, True), (True, True), (True, False)])
def test_compiled_programs_are_kept_in_the_workdir_unless_told_otherwise(tmp_path, env_dir,
                                                                          enabled):
    """``main.use_compilation_cache``: the folder is WORKDIR/compilation_cache, or
    JAX_COMPILATION_CACHE_DIR when set, and a compiled program lands there; off, nothing is
    written anywhere."""
    workdir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if env_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = str(elsewhere)
    done = subprocess.run([sys.executable, "-c", COMPILE_ONE_PROGRAM, str(workdir),
                           "on" if enabled else "off"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = None if not enabled else elsewhere if env_dir else workdir / "compilation_cache"
    assert done.stdout.strip().splitlines()[-1] == str(expected)
    for folder in (workdir / "compilation_cache", elsewhere):
        entries = list(folder.glob("jit_*")) if folder.exists() else []
        assert bool(entries) == (folder == expected), (folder, entries)
