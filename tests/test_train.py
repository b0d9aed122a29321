"""Training loop: kill-and-resume reproducibility, NaN handling, config validation, multi-device,
several steps per dispatch, lazy regularisation, the evaluation loss and two-stage training.

All runs use one tiny config (``_tiny_config``): a 2-layer MLP of width 16 conditioned on t, DSM,
batch 64 from 512 checkerboard points, 12 steps with a checkpoint every 4. The reference run
(module fixture) trains it on the 8 forced CPU devices of ``conftest.py``; the kill/resume test
runs the first part in a subprocess (which inherits the same ``XLA_FLAGS``, hence 8 devices), and
the device-count test builds an explicit 1-device mesh in this process.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from configs.default_toy import get_default_configs  # noqa: E402
import config_files  # noqa: E402
from recording_writer import Recorder  # noqa: E402
from sgm_jax import checkpoints, parallel, train  # noqa: E402
from sgm_jax.data import DataSource  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402

N_ITERS, SNAPSHOT = 12, 4
# JSON so that the subprocess builds exactly the same config.
TINY = json.dumps({
    "data.num_points": 512, "model.name": "toy_mlp", "model.condition": "t",
    "training.batch_size": 64, "training.n_iters": N_ITERS, "training.log_freq": 1,
    "training.snapshot_freq": SNAPSHOT, "training.keep_checkpoints": 2,
})
TOY_MLP = {"hidden": (16, 16), "embedding_size": 4}


def _tiny_config(**overrides):
    config = get_default_configs()
    del config.model.output_activation  # a field of official_toy, not of toy_mlp
    config.model.update(TOY_MLP)
    for path, value in {**json.loads(TINY), **overrides}.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _experiment(**overrides):
    return build_experiment(_tiny_config(**overrides))


def _assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on all (8) devices: (final state, losses by step)."""
    recorder = Recorder()
    state = train.train(_experiment(), str(tmp_path_factory.mktemp("ref")), writer=recorder)
    return jax.device_get(state), recorder.losses


_CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{root!r}, os.path.join({root!r}, "tests")]
    from tests.test_train import _experiment
    from sgm_jax import train
    from sgm_jax.data import DataSource
    slow = DataSource.train_batch
    def throttled(self, step):  # slow steps down so that the parent can kill mid-run
        time.sleep(0.25)
        return slow(self, step)
    DataSource.train_batch = throttled
    train.train(_experiment(**{{"training.n_iters": 10000}}), sys.argv[1])
""")


def test_kill_and_resume_is_bitwise_identical(reference, tmp_path):
    workdir = str(tmp_path / "run")
    first = os.path.join(workdir, "checkpoints", str(SNAPSHOT))
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=ROOT), workdir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while not os.path.isdir(first):  # orbax renames the finished temporary dir to "<step>"
            if child.poll() is not None:
                log = child.stderr.read().decode()[-3000:]
                pytest.fail(f"training subprocess exited early:\n{log}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 240 s")
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    killed_at = checkpoints.manager(checkpoints.checkpoint_dir(workdir), read_only=True).latest_step()
    assert SNAPSHOT <= killed_at < N_ITERS
    state = train.train(_experiment(), workdir)
    assert int(state.step) == N_ITERS
    ref_state, _ = reference
    _assert_trees_equal(jax.device_get(state), ref_state)


def test_non_finite_loss_names_the_step_and_keeps_last_checkpoint(monkeypatch, tmp_path):
    bad_step = SNAPSHOT + 2
    clean = DataSource.train_batch

    def poisoned(self, step):
        batch = clean(self, step)
        return {**batch, "x": batch["x"] * np.nan} if step >= bad_step else batch

    monkeypatch.setattr(DataSource, "train_batch", poisoned)
    experiment = _experiment()
    with pytest.raises(FloatingPointError, match=f"at step {bad_step}"):
        train.train(experiment, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(SNAPSHOT)]
    state = checkpoints.load_checkpoint(experiment, str(tmp_path))
    assert int(state.step) == SNAPSHOT
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(jax.device_get(state.params)))


@pytest.mark.parametrize("path, value, field", [
    ("model.name", "resnet9000", "model.name"),
    ("model.depth", 3, "model.depth"),
    ("training.objective", "magic", "training.objective"),
    ("sampling.method", "teleport", "sampling.method"),
    ("sampling.predictor", "oracle", "sampling.predictor"),
    ("sampling.n_steps", 0, "sampling.n_steps"),
    ("sampling.snr", 1.5, "sampling.snr"),
    ("sde.name", "brownian", "sde.name"),
    ("sde.sigma_min", 5.0, "sde.sigma_min"),
    ("sde.beta_min", 0.1, "sde.beta_min"),  # a VP parameter in a VE config would be ignored
    ("training.batch_size", 60, "training.batch_size"),
    ("training.n_jitted_steps", 5, "training.n_iters"),
    ("training.qc_fraction", 0.0, "training.qc_fraction"),
    ("training.init_step", -2, "training.init_step"),
    ("optim.lr", -1e-3, "optim.lr"),
    ("model.parameterisation", "x", "model.parameterisation"),
    ("model.condition", "index", "model.condition"),
    ("data.dataset", "mnist", "data.dataset"),
    ("optim.ema_warmup", "linear", "optim.ema_warmup"),
])
def test_invalid_config_fails_before_work(path, value, field):
    config = _tiny_config(**{path: value})
    if path in ("sampling.n_steps", "sampling.snr"):
        config.sampling.method = "pc"
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as err:
        build_experiment(config)
    if path != "model.depth":  # an unknown field is named with the model's allowed fields
        assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_unknown_ema_warmup_lists_the_allowed_schedules():
    with pytest.raises(ValueError, match=r"optim\.ema_warmup must be one of \('none', "
                                         r"'num_updates'\); got 'linear'"):
        build_experiment(_tiny_config(**{"optim.ema_warmup": "linear"}))


@pytest.mark.parametrize("rate, warmup", [(0.999, "num_updates"), (0.2, "num_updates"),
                                          (0.9, "none")])
def test_ema_after_three_steps_equals_the_formula(rate, warmup):
    """The EMA the update function keeps, against the average computed here from the
    parameters after each step: e₀ = p₀, e_k = d_k·e_{k−1} + (1 − d_k)·p_k with
    d_k = min(rate, (1 + k)/(10 + k)) (score_sde_pytorch's warm-up; k counts the updates from 1)
    or d_k = rate (no warm-up). Rate 0.999 stays on the warm-up branch (2/11, 3/12, 4/13),
    0.2 leaves it after the first step (2/11, then 0.2, 0.2)."""
    experiment = _experiment(**{"optim.ema_rate": rate, "optim.ema_warmup": warmup})
    update = jax.jit(train.make_update_fn(experiment))
    state = checkpoints.init_state(experiment)
    expected = jax.tree.map(lambda p: np.asarray(p, np.float64), state.params)
    for k in range(1, 4):
        state, _ = update(state, experiment.data.train_batch(k - 1))
        d = min(rate, (1 + k) / (10 + k)) if warmup == "num_updates" else rate
        expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p, np.float64),
                                expected, jax.device_get(state.params))
    assert int(state.step) == 3
    jax.tree.map(lambda e, a: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7),
                 expected, jax.device_get(state.ema_params))


def test_ema_warmup_schedule_values():
    """(1 + n)/(10 + n) with n = step + 1 below the rate, the rate above it; none: the rate."""
    from sgm_jax.ema import ema_decay

    assert ema_decay(0.999, "none", 5) == 0.999
    steps = np.arange(10_000)
    got = np.asarray(ema_decay(0.999, "num_updates", steps))
    n = steps + 1.0
    np.testing.assert_allclose(got, np.minimum(0.999, (1 + n) / (10 + n)), rtol=1e-7)
    assert got[0] == np.float32(2 / 11) and got[-1] == np.float32(0.999)


def test_batch_size_must_divide_the_device_count():
    assert jax.device_count() == 8
    with pytest.raises(ValueError, match=r"training\.batch_size=60 .* 8"):
        build_experiment(_tiny_config(**{"training.batch_size": 60}))
    build_experiment(_tiny_config(**{"training.batch_size": 60}), num_devices=1)
    with pytest.raises(ValueError, match=r"training\.batch_size"):
        parallel.check_batch_divisible(6, 4)


def test_eval_on_empty_workdir_says_no_checkpoint(tmp_path):
    experiment = _experiment()
    with pytest.raises(ValueError, match="no checkpoint in .*checkpoints"):
        checkpoints.load_checkpoint(experiment, str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="no checkpoint in .*checkpoints"):
        checkpoints.load_checkpoint(experiment, str(tmp_path))


def test_one_device_matches_eight_devices(reference, tmp_path):
    """Same losses and parameters on a 1-device mesh as on the 8-device mesh (float tolerance:
    the batch reductions are split differently)."""
    recorder = Recorder()
    one = parallel.data_mesh(jax.devices()[:1])
    state = train.train(build_experiment(_tiny_config(), num_devices=1), str(tmp_path), mesh=one,
                        writer=recorder)
    ref_state, ref_losses = reference
    assert sorted(recorder.losses) == sorted(ref_losses) == list(range(1, N_ITERS + 1))
    np.testing.assert_allclose([recorder.losses[k] for k in sorted(ref_losses)],
                               [ref_losses[k] for k in sorted(ref_losses)], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(state.params), ref_state.params)


def test_several_steps_per_dispatch_match_one(reference, tmp_path):
    """n_jitted_steps = 4 runs the same 12 updates in 3 scans: same per-step losses (each step
    is logged) and parameters, up to the float reassociation of a scanned loop."""
    recorder = Recorder()
    state = train.train(_experiment(**{"training.n_jitted_steps": 4, "training.log_freq": 4}),
                        str(tmp_path), writer=recorder)
    ref_state, ref_losses = reference
    assert int(state.step) == N_ITERS and sorted(recorder.losses) == [4, 8, 12]
    for end in (4, 8, 12):  # a logged value is the mean over the 4 steps of its window
        window = np.mean([ref_losses[s] for s in range(end - 3, end + 1)])
        np.testing.assert_allclose(recorder.losses[end], window, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(state.params), ref_state.params)


def test_lazy_regularisation_alternates_the_qc_term(tmp_path):
    """qc_every = 2: the QC term with weight 2λ on even steps, none on odd steps. The logged
    aux of each step shows it: qc > 0 and loss = objective + 2λ·qc on even steps, qc = 0 and
    loss = objective on odd ones; the share of the regulariser is logged too."""
    recorder = Recorder()
    weight = 0.05
    train.train(_experiment(**{"training.qc_weight": weight, "training.qc_every": 2,
                               "training.qc_estimator": "hutchinson"}),
                str(tmp_path), writer=recorder)
    s = recorder.scalars
    for step in range(1, N_ITERS + 1):  # logged after step `step` − 1 (0-based) ran
        ran = step - 1
        if ran % 2 == 0:
            assert s["qc"][step] > 0
            np.testing.assert_allclose(s["loss"][step], s["objective"][step] + 2 * weight * s["qc"][step],
                                       rtol=1e-5)
            assert 0 < s["qc_share"][step] < 1
        else:
            assert s["qc"][step] == 0 and s["loss"][step] == s["objective"][step]


def test_lazy_regularisation_within_several_steps_per_dispatch(tmp_path):
    """qc_every = 4 with 2 steps per dispatch: the calls starting at steps 0, 4, 8 run their QC
    step first, the others none. Logged every 2 steps, the window ending at step d holds a QC
    step exactly when 4 divides d − 2, and loss = objective + 4λ·qc holds for the window means."""
    recorder = Recorder()
    weight = 0.05
    train.train(_experiment(**{"training.qc_weight": weight, "training.qc_every": 4,
                               "training.n_jitted_steps": 2, "training.log_freq": 2,
                               "training.qc_estimator": "hutchinson"}),
                str(tmp_path), writer=recorder)
    s = recorder.scalars
    assert sorted(s["qc"]) == list(range(2, N_ITERS + 1, 2))
    for done in s["qc"]:
        if (done - 2) % 4 == 0:
            assert s["qc"][done] > 0
            np.testing.assert_allclose(s["loss"][done], s["objective"][done]
                                       + 4 * weight * s["qc"][done], rtol=1e-5)
        else:
            assert s["qc"][done] == 0 and s["loss"][done] == s["objective"][done]


def test_lazy_regularisation_needs_a_multiple_of_the_steps_per_dispatch():
    with pytest.raises(ValueError, match="training.qc_every=3 must be a multiple of "
                                         "training.n_jitted_steps=2"):
        _experiment(**{"training.qc_weight": 0.05, "training.qc_every": 3,
                       "training.n_jitted_steps": 2, "training.log_freq": 2})


def test_eval_loss_two_stage_start_and_snapshot_samples(reference, tmp_path):
    """Stage 2 starts from the reference run's checkpoint at step 8 (its parameters, optimiser
    state and step) and continues to 12 with the QC term; the EMA evaluation loss is logged
    every 2 steps; every checkpoint writes a samples figure."""
    stage1 = tmp_path / "stage1"
    train.train(_experiment(**{"training.n_iters": 8}), str(stage1))
    recorder = Recorder()
    experiment = _experiment(**{"training.init_from": str(stage1), "training.init_step": 8,
                                "training.qc_weight": 0.05, "training.eval_freq": 2,
                                "training.snapshot_sampling": True,
                                "training.snapshot_num_samples": 16, "sampling.rtol": 1e-2})
    stage2 = tmp_path / "stage2"
    state = train.train(experiment, str(stage2), writer=recorder)
    assert int(state.step) == N_ITERS
    assert sorted(recorder.losses) == [9, 10, 11, 12]
    assert sorted(recorder.scalars["eval_loss"]) == [10, 12]
    assert all(np.isfinite(v) and v > 0 for v in recorder.scalars["eval_loss"].values())
    assert json.loads((stage2 / "init_from.json").read_text())["step"] == 8
    assert sorted(os.listdir(stage2 / "samples")) == ["step_12.png"]
    # without QC, stage 2 would have continued the reference run exactly; with it, it differs
    ref_state, ref_losses = reference
    assert recorder.losses[9] != ref_losses[9]
    wrong = _experiment(**{"training.init_from": str(stage1), "training.init_step": 5})
    with pytest.raises(ValueError, match=r"no checkpoint for step 5 .*available: \[4, 8\]"):
        train.train(wrong, str(tmp_path / "wrong"))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "toy", "*.py"))))
def test_toy_configs_load_and_validate(path):
    experiment = build_experiment(config_files.load(path, {}))
    assert experiment.training.n_iters > 0


def test_the_scan_of_several_steps_is_one_rolled_loop():
    """``n_jitted_steps`` steps compile as one rolled loop on every backend (one copy of the
    step, so the compile does not grow with n): the networks' gradient convolutions keep XLA:CPU's
    fast kernels inside a loop body (``sgm_jax.models.convolution``)."""
    mesh = parallel.data_mesh(jax.devices()[:1])

    def update(state, batch, frozen):
        del frozen
        return state + jnp.sum(jnp.sin(batch)), {"loss": jnp.sum(batch)}

    step = train.make_train_step(update, mesh, steps_per_call=3)
    hlo = step.lower(jnp.zeros(()), jnp.ones((3, 1, 4)), None).compile().as_text()
    assert " while(" in hlo
    assert hlo.count("sine(") == 1
