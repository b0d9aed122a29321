"""Multi-process data-parallel training: 2 processes × 2 CPU devices on 127.0.0.1.

Run as a script, this file is one training process (:func:`_worker`) of a tiny
``configs/ve/digits_u.py`` run through ``train.train(build_experiment(config), workdir)``;
process 0 passes a writer that keeps the logged scalars in ``WORKDIR/<mode>.json`` (process 1
gets the library's logging-only writer). The two workers of a 2-process launch set the gloo CPU
collectives and join through ``parallel.maybe_initialize_distributed``
(``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); each feeds its own half
of every global batch, and together they evaluate the EMA loss, sample a snapshot grid and save
orbax checkpoints.

The fixture starts

  1. two workers (``fresh``) whose batches from step ``KILL_AFTER`` on never come: they stop
     after the checkpoint (and snapshot grid) of that step, and both are killed (SIGKILL);
  2. two workers (``resume``) in the same directory, which resume from that checkpoint and
     finish, and alongside them the reference: the same config on 1 process × 4 CPU devices.

Both workers of a launch compile every program themselves. (A persistent compilation cache would
serve only process 0, since JAX writes it from process 0 and keys it by process; process 0 would
then reach its first all-reduce long before process 1, and gloo waits only 30 s for every
process at the first collective over a group of devices.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script, only tests/ is on the path
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import FAST_COMPILE  # noqa: E402
from configs.ve.digits_u import get_config  # noqa: E402
from recording_writer import Recorder  # noqa: E402
from sgm_jax import checkpoints, parallel, train  # noqa: E402
from sgm_jax.data import DataSource  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402

NUM_PROCESSES, LOCAL_DEVICES = 2, 2
N_ITERS, KILL_AFTER = 6, 2
LOGGED_STEPS = [2, 4, 6]
TINY = {
    # one resolution without attention: each process compiles in half the time of two
    "model.nf": 8, "model.ch_mult": (1,), "model.num_res_blocks": 1,
    "model.attn_resolutions": (), "sde.num_scales": 10,
    # no warm-up: every update moves the parameters by ~lr, so a wrong gradient shows
    "optim.warmup": 0,
    "training.batch_size": 8, "training.n_iters": N_ITERS, "training.n_jitted_steps": 2,
    "training.log_freq": 2, "training.eval_freq": 2, "training.snapshot_freq": 2,
    "training.snapshot_sampling": False, "training.snapshot_num_samples": 4,
}
#: The first launch also samples a grid at its checkpoint. Snapshots do not change the state,
#: and the sampler, compiled again at every snapshot, costs as much to compile as the network's
#: initialisation, so the other runs leave them out.
SNAPSHOTS = {"training.snapshot_sampling": True}
#: Every process, the reference's included, compiles as the default suite does
#: (``conftest.FAST_COMPILE``): compilation dominates the run time (it halves the train step's),
#: and the numbers stay those of the same computation.
XLA_FLAGS = FAST_COMPILE + " --xla_force_host_platform_device_count="
TIMEOUT_S = 900


def tiny_config(**overrides):
    config = get_config()
    config.update_from_flattened_dict({**TINY, **overrides})
    return config


# --------------------------------------------------------------------------- the worker


def _worker(mode: str, workdir: str) -> None:
    """``reference``: train ``workdir`` on this process's 4 devices. One of 2 processes,
    ``fresh``: train ``workdir`` with snapshots until its checkpoint at step ``KILL_AFTER``,
    then wait to be killed (every later batch blocks); ``resume``: train ``workdir`` to the end,
    resuming from its latest checkpoint."""
    if mode != "reference":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        assert parallel.maybe_initialize_distributed()
        assert (jax.process_count(), jax.local_device_count()) == (NUM_PROCESSES, LOCAL_DEVICES)

    class JsonRecorder(Recorder):
        """Every logged scalar, rewritten to ``path`` after each write."""

        def __init__(self, path):
            super().__init__()
            self.path = path

        def write_scalars(self, step, scalars):
            super().write_scalars(step, scalars)
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.scalars, f)
            os.replace(self.path + ".tmp", self.path)

    writer = None
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        writer = JsonRecorder(os.path.join(workdir, f"{mode}.json"))
    overrides = {}
    if mode == "fresh":
        overrides = SNAPSHOTS
        serve = DataSource.train_batch

        def blocking(self, step):
            if step >= KILL_AFTER:
                threading.Event().wait()
            return serve(self, step)

        DataSource.train_batch = blocking
    train.train(build_experiment(tiny_config(**overrides)), workdir, writer=writer)
    if mode == "fresh":
        raise AssertionError("the run went past its blocked batch")


# --------------------------------------------------------------------------- the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Prefixes of the environment variables that describe a multi-process launch.
LAUNCH_MARKS = ("SLURM_", "OMPI_", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")


def _clean_env() -> dict[str, str]:
    """This environment without anything that describes a multi-process launch."""
    return {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_MARKS)}


class _Launch:
    """The processes of one launch in ``workdir`` (``reference``: one process with 4 devices;
    otherwise two with 2 devices each); their output goes to ``logs/<mode>_<i>.txt``."""

    def __init__(self, tmp, mode: str, workdir):
        logs = tmp / "logs"
        logs.mkdir(exist_ok=True)
        env = {**_clean_env(), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
        if mode == "reference":
            envs = [{**env, "XLA_FLAGS": XLA_FLAGS + str(NUM_PROCESSES * LOCAL_DEVICES)}]
        else:
            env.update({"XLA_FLAGS": XLA_FLAGS + str(LOCAL_DEVICES),
                        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}",
                        "JAX_NUM_PROCESSES": str(NUM_PROCESSES),
                        "JAX_ENABLE_COMPILATION_CACHE": "false"})
            envs = [{**env, "JAX_PROCESS_ID": str(i)} for i in range(NUM_PROCESSES)]
        self.logs = [logs / f"{mode}_{i}.txt" for i in range(len(envs))]
        self.procs = []
        for log, process_env in zip(self.logs, envs):
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), mode, str(workdir)], cwd=ROOT,
                    env=process_env, stdout=out, stderr=subprocess.STDOUT))

    def fail(self, what: str):
        self.kill()
        tails = [f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in self.logs]
        pytest.fail("\n".join([what, *tails]))

    def wait_for(self, paths, deadline: float) -> None:
        """Until every path in ``paths`` exists, with the processes still running."""
        while not all(p.exists() for p in paths):
            if any(p.poll() is not None for p in self.procs):
                self.fail("a worker exited early")
            if time.monotonic() > deadline:
                self.fail(f"{[str(p) for p in paths]} did not appear within {TIMEOUT_S} s")
            time.sleep(0.1)

    def wait(self, deadline: float) -> None:
        for p in self.procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.fail(f"the workers did not finish within {TIMEOUT_S} s")
        if any(p.returncode for p in self.procs):
            self.fail(f"exit codes {[p.returncode for p in self.procs]}")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()


def _scalars(path) -> dict[str, dict[int, float]]:
    stored = json.loads(path.read_text())
    return {k: {int(step): v for step, v in values.items()} for k, values in stored.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Logged scalars and final state of the reference (1 process × 4 devices) and of the
    2-process run (killed after step KILL_AFTER, resumed), with the run's checkpoints and
    snapshot grids when it was killed."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    ref, run = tmp / "reference", tmp / "run"
    deadline = time.monotonic() + TIMEOUT_S
    launches = [_Launch(tmp, "fresh", run)]
    try:
        # orbax renames the checkpoint folder into place once every process has written it
        launches[0].wait_for([run / "checkpoints" / str(KILL_AFTER),
                              run / "samples" / f"step_{KILL_AFTER}.png"], deadline)
        launches[0].kill()
        killed = {"checkpoints": sorted(os.listdir(run / "checkpoints")),
                  "samples": sorted(os.listdir(run / "samples"))}
        launches += [_Launch(tmp, "resume", run), _Launch(tmp, "reference", ref)]
        for launch in launches[1:]:
            launch.wait(deadline)
    finally:
        for launch in launches:
            launch.kill()
    mesh = parallel.data_mesh(jax.devices()[:NUM_PROCESSES * LOCAL_DEVICES])
    experiment = build_experiment(tiny_config(), num_devices=mesh.size)

    def final(workdir):
        return jax.device_get(checkpoints.load_checkpoint(experiment, str(workdir), mesh=mesh))

    return {"reference": (_scalars(ref / "reference.json"), final(ref)),
            "killed": (_scalars(run / "fresh.json"), killed),
            "resumed": (_scalars(run / "resume.json"), final(run))}


def test_two_processes_log_the_values_of_one_process(runs):
    """2 processes × 2 devices against 1 process × 4 devices with the same seed: the same loss,
    evaluation loss, gradient norm and parameter norm at every logged step, before the kill
    and after the resume.

    Both run the same global computation on the same rows; only the sums over the batch
    (per-device partial sums, then an all-reduce: gloo between the processes, in-process on
    one) are associated differently. Reassociating a float32 sum of n terms changes it by at
    most ~log2(n)·2⁻²⁴ relative, about 1e-6 here (measured: at most 1.2e-7); rtol is 1e-5.
    Feeding process 0's rows twice instead of both processes' rows changes the gradient norm
    by 6e-3 to 8e-3 relative and the loss by 6e-6 to 1e-4 (an untrained network's loss is close
    to D/2 for any batch)."""
    ref_scalars, _ = runs["reference"]
    before, _ = runs["killed"]
    after, _ = runs["resumed"]
    assert sorted(before["loss"]) == [s for s in LOGGED_STEPS if s <= KILL_AFTER]
    assert sorted(after["loss"]) == [s for s in LOGGED_STEPS if s > KILL_AFTER]
    for name in ("loss", "eval_loss", "grad_norm", "param_norm"):
        assert sorted(ref_scalars[name]) == LOGGED_STEPS, name
        logged = {**before[name], **after[name]}
        assert sorted(logged) == LOGGED_STEPS, name
        np.testing.assert_allclose([logged[s] for s in LOGGED_STEPS],
                                   [ref_scalars[name][s] for s in LOGGED_STEPS], rtol=1e-5,
                                   err_msg=name)


def test_killed_run_resumes_to_the_uninterrupted_state(runs):
    """Killed after its checkpoint and snapshot grid at step KILL_AFTER (and before any later
    checkpoint), the 2-process run resumes and ends in the state of the uninterrupted reference:
    step and key exactly; parameters, EMA and Adam moments to 1e-6 (absolute and relative).

    The rounding differences of the reassociated sums (previous test) leave the parameters at
    most 3e-8 apart (measured). Without warm-up every Adam update moves each parameter by
    ~lr = 2e-4, so resuming from a wrong state (lost optimiser moments, EMA or step) or with
    wrong batches puts them ~1e-5 to 1e-4 off (process 0's rows fed twice: up to 1e-3)."""
    _, ref_state = runs["reference"]
    _, killed = runs["killed"]
    _, state = runs["resumed"]
    assert killed == {"checkpoints": [str(KILL_AFTER)], "samples": [f"step_{KILL_AFTER}.png"]}
    assert int(state.step) == int(ref_state.step) == N_ITERS
    np.testing.assert_array_equal(state.key, ref_state.key)
    for name in ("params", "ema_params", "opt_state"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                     getattr(state, name), getattr(ref_state, name))


@pytest.mark.parametrize("env, kwargs", [
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": "3"},
     {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}),
    ({"SLURM_NTASKS": "8"}, {}),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, {}),
    ({"JAX_NUM_PROCESSES": "4"}, {}),
])
@pytest.mark.parametrize("collectives, expected", [(None, "gloo"), ("mpi", "mpi")])
def test_initialize_distributed_from_the_environment(monkeypatch, env, kwargs, collectives,
                                                     expected):
    """A multi-process environment calls ``jax.distributed.initialize`` with what it names (the
    cluster's own variables are left to JAX), after giving the CPU backend gloo collectives when
    it has none (and keeping an explicit choice)."""
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in [n for n in os.environ if n.startswith(LAUNCH_MARKS)]:
        monkeypatch.delenv(name)
    original = jax.config.jax_cpu_collectives_implementation
    try:
        jax.config.update("jax_cpu_collectives_implementation", collectives)
        assert parallel.maybe_initialize_distributed() is False
        assert calls == [] and jax.config.jax_cpu_collectives_implementation == collectives
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert parallel.maybe_initialize_distributed() is True
        assert calls == [kwargs]
        assert jax.config.jax_cpu_collectives_implementation == expected
    finally:
        jax.config.update("jax_cpu_collectives_implementation", original)


if __name__ == "__main__":
    _worker(*sys.argv[1:])
