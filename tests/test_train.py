"""Training loop: kill-and-resume reproducibility, NaN handling, config validation, multi-device.

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
import numpy as np
import pytest
from clu import metric_writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from configs.default_toy import get_default_configs  # noqa: E402
from sgm_jax import parallel, train  # noqa: E402
from sgm_jax.config_validation import validate_config  # noqa: E402

N_ITERS, SNAPSHOT = 12, 4
# JSON so that the subprocess builds exactly the same config.
TINY = json.dumps({
    "data.num_points": 512, "model.name": "toy_mlp", "model.condition": "t",
    "model.kwargs": {"hidden": [16, 16], "embedding_size": 4},
    "training.batch_size": 64, "training.n_iters": N_ITERS, "training.log_freq": 1,
    "training.snapshot_freq": SNAPSHOT, "training.keep_checkpoints": 2,
})


def _tiny_config(**overrides):
    config = get_default_configs()
    for path, value in {**json.loads(TINY), **overrides}.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


class _Recorder(metric_writers.LoggingWriter):
    """Keeps the logged losses (one per step with log_freq 1)."""

    def __init__(self):
        super().__init__()
        self.losses = {}

    def write_scalars(self, step, scalars):
        if "loss" in scalars:
            self.losses[int(step)] = float(scalars["loss"])


def _assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on all (8) devices: (final state, losses by step)."""
    recorder = _Recorder()
    state = train.train(_tiny_config(), str(tmp_path_factory.mktemp("ref")), writer=recorder)
    return jax.device_get(state), recorder.losses


_CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from tests.test_train import _tiny_config
    from sgm_jax import train
    slow = train._Batches.__call__
    def throttled(self, step):  # slow steps down so that the parent can kill mid-run
        time.sleep(0.25)
        return slow(self, step)
    train._Batches.__call__ = throttled
    train.train(_tiny_config(**{{"training.n_iters": 10000}}), sys.argv[1])
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
    killed_at = train._manager(workdir, read_only=True).latest_step()
    assert SNAPSHOT <= killed_at < N_ITERS
    state = train.train(_tiny_config(), workdir)
    assert int(state.step) == N_ITERS
    ref_state, _ = reference
    _assert_trees_equal(jax.device_get(state), ref_state)


def test_non_finite_loss_names_the_step_and_keeps_last_checkpoint(monkeypatch, tmp_path):
    bad_step = SNAPSHOT + 2
    clean = train._Batches.__call__

    def poisoned(self, step):
        batch = clean(self, step)
        return batch * np.nan if step >= bad_step else batch

    monkeypatch.setattr(train._Batches, "__call__", poisoned)
    with pytest.raises(FloatingPointError, match=f"at step {bad_step}"):
        train.train(_tiny_config(), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(SNAPSHOT)]
    state = train.load_latest(_tiny_config(), str(tmp_path))
    assert int(state.step) == SNAPSHOT
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(jax.device_get(state.params)))


@pytest.mark.parametrize("path, value, field", [
    ("model.name", "resnet9000", "model.name"),
    ("training.objective", "magic", "training.objective"),
    ("sampling.method", "teleport", "sampling.method"),
    ("sampling.predictor", "oracle", "sampling.predictor"),
    ("sde.name", "brownian", "sde.name"),
    ("sde.sigma_min", 5.0, "sde.sigma_min"),
    ("training.batch_size", 60, "training.batch_size"),
    ("optim.lr", -1e-3, "optim.lr"),
    ("model.parameterisation", "x", "model.parameterisation"),
    ("model.condition", "log_sigma", "model.condition"),
    ("data.dataset", "mnist", "data.dataset"),
])
def test_invalid_config_fails_before_work(tmp_path, path, value, field):
    config = _tiny_config(**{path: value})
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as err:
        train.train(config, str(tmp_path / "run"))
    assert repr(value) in str(err.value) or str(value) in str(err.value)
    assert not (tmp_path / "run").exists()


def test_batch_size_must_divide_the_device_count():
    assert jax.device_count() == 8
    with pytest.raises(ValueError, match=r"training\.batch_size=60 .* 8"):
        validate_config(_tiny_config(**{"training.batch_size": 60}))
    validate_config(_tiny_config(**{"training.batch_size": 60}), num_devices=1)
    with pytest.raises(ValueError, match=r"training\.batch_size"):
        parallel.check_batch_divisible(6, 4)


def test_eval_on_empty_workdir_says_no_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint in .*checkpoints"):
        train.load_latest(_tiny_config(), str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="no checkpoint in .*checkpoints"):
        train.load_latest(_tiny_config(), str(tmp_path))


def test_one_device_matches_eight_devices(reference, tmp_path):
    """Same losses and parameters on a 1-device mesh as on the 8-device mesh (float tolerance:
    the batch reductions are split differently)."""
    recorder = _Recorder()
    one = parallel.data_mesh(jax.devices()[:1])
    state = train.train(_tiny_config(), str(tmp_path), mesh=one, writer=recorder)
    ref_state, ref_losses = reference
    assert sorted(recorder.losses) == sorted(ref_losses) == list(range(1, N_ITERS + 1))
    np.testing.assert_allclose([recorder.losses[k] for k in sorted(ref_losses)],
                               [ref_losses[k] for k in sorted(ref_losses)], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(state.params), ref_state.params)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "toy", "*.py"))))
def test_toy_configs_load_and_validate(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    validate_config(config)
    assert config.training.n_iters > 0
