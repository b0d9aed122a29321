"""Training: the data-parallel train step and the train loop.

    experiment = build_experiment(config)
    state = train(experiment, workdir)          # resumes from workdir/checkpoints when present

One loop trains every experiment, toy MLP or NCSN++ (score_sde's training procedure):

  * step k uses the data source's batch k and the key ``fold_in(state.key, k)`` (noise levels,
    perturbations, probes; its ``fold_in(·, 1)`` drives dropout), so a run with a given seed is
    reproducible bit for bit on CPU for a fixed device count, across a kill and resume too;
  * ``training.n_jitted_steps`` steps run in one compiled ``lax.scan`` per dispatch;
  * the optimiser is ``experiment.optimizer`` (clipping, Adam, warm-up); the EMA of the parameters
    (``optim.ema_rate`` with the warm-up ``optim.ema_warmup``, :func:`sgm_jax.ema.ema_decay`) is
    what evaluation and sampling use;
  * lazy regularisation (``training.qc_every`` = k, a multiple of ``n_jitted_steps``): the QC
    term, with its weight × k, on the steps k divides, none on the others (StyleGAN2's lazy R1).
    Two programs are compiled and picked on the host (``TrainStep``): the call that starts at a
    step k divides runs its QC step and then n − 1 plain steps, every other call n plain steps.
    (Each program holds one kind of step, the QC one only where it runs.)
  * every ``training.eval_freq`` steps the loss of the EMA parameters on a test batch is logged
    as ``eval_loss``; with ``training.snapshot_sampling`` a grid of samples is written at every
    checkpoint;
  * checkpoints (orbax ``CheckpointManager``: atomic, multi-host) hold the whole ``TrainState``
    every ``training.snapshot_freq`` steps and at the end; the last ``keep_checkpoints`` are kept,
    and those at multiples of ``keep_every`` forever;
  * a fresh run with ``training.init_from`` starts from a checkpoint of another run (QCSGM's
    two-stage schedule: stage 2 restores the stage-1 U model with its optimiser state and step,
    as the official code, and continues with the stage-2 loss to ``n_iters``);
  * a non-finite loss, gradient or parameter raises ``FloatingPointError`` naming the step, before
    the bad state can be saved.

Host 0 writes the logs, ``config.json`` and figures; every process feeds its own rows of each
global batch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from sgm_jax import files, parallel, plots
from sgm_jax.checkpoints import (TrainState, abstract_state, checkpoint_dir, init_from_checkpoint,
                                 init_state, manager, restore_state)
from sgm_jax.config_sections import TrainingOptions
from sgm_jax.data import DataSource, Prefetcher
from sgm_jax.ema import ema_decay
from sgm_jax.types import Array

if TYPE_CHECKING:
    from sgm_jax.experiment import Experiment


class Trainable(Protocol):
    """What :func:`train` needs of a run: a score model's
    (:class:`sgm_jax.experiment.Experiment`) and a DLSM classifier's
    (:class:`sgm_jax.classifier_experiment.ClassifierExperiment`) both are.

    ``step_losses()`` holds one loss per kind of train step: one, or with lazy regularisation the
    loss of the QC steps and that of the others. ``batch_loss`` evaluates the network of
    ``params`` and ``model_state`` (training mode with ``dropout_key``, evaluation mode without)
    on a batch with ``loss_fn`` (default: the run's loss) and returns ``(loss, (aux,
    model_state))``; ``frozen`` is the run's frozen parameters (a classifier's score model;
    None for a score model).
    """

    name: str
    data: DataSource
    training: TrainingOptions
    optimizer: optax.GradientTransformation
    ema_rate: float
    ema_warmup: str

    def keys(self) -> dict[str, Array]: ...

    def eval_key(self) -> Array: ...

    def init_params(self, key: Array) -> Any: ...

    def step_losses(self) -> tuple[Callable, ...]: ...

    def batch_loss(self, params: Any, batch: dict, key: Array, *, model_state: Any = None,
                   loss_fn: Callable | None = None, frozen: Any = None,
                   dropout_key: Array | None = None) -> tuple[Array, tuple[dict, Any]]: ...


def make_update_fn(experiment: Trainable, loss_fn: Callable | None = None
                   ) -> Callable[..., tuple[TrainState, dict]]:
    """One optimisation step ``update(state, batch, frozen=None) -> (state, metrics)`` (pure, not
    jitted).

    The gradient is that of the global batch mean of ``experiment.batch_loss`` with ``loss_fn``
    (one of ``experiment.step_losses()``; default the first, the loss of every step without lazy
    regularisation), with ``frozen`` the run's frozen parameters (a classifier's score model). The network runs in
    training mode from ``state.model_state``, and the state it returns (a classifier's updated
    BatchNorm statistics; ``{}`` for score networks) becomes the new ``model_state``. ``metrics``
    holds the loss's ``aux``, ``grad_norm`` and ``param_norm`` (after the update).
    """
    optimizer = experiment.optimizer
    ema_rate, ema_warmup = experiment.ema_rate, experiment.ema_warmup
    loss_fn = experiment.step_losses()[0] if loss_fn is None else loss_fn

    def update(state: TrainState, batch: dict, frozen=None) -> tuple[TrainState, dict]:
        loss_key = jax.random.fold_in(state.key, state.step)
        dropout_key = jax.random.fold_in(loss_key, 1)

        def objective(params):
            return experiment.batch_loss(params, batch, loss_key, model_state=state.model_state,
                                         loss_fn=loss_fn, frozen=frozen, dropout_key=dropout_key)

        grads, (aux, model_state) = jax.grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay(ema_rate, ema_warmup, state.step)
        ema = optax.incremental_update(params, state.ema_params, 1.0 - decay)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                            model_state=model_state)
        norms = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
        return new, {**aux, **norms}

    return update


def make_train_step(update_fn, mesh, steps_per_call: int = 1, first_update_fn=None):
    """A jitted ``step(state, batch, frozen) -> (state, metrics)``, data-parallel over ``mesh``:
    the state replicated (and donated), the batch sharded over ``"data"``, ``frozen`` (the frozen
    score model's parameters of a classifier run, else None) replicated. With ``steps_per_call``
    n > 1 the batch is a group ``[n, B, ...]`` run by one ``lax.scan`` and every metric comes
    back as ``[n]``; with 1 it is ``[B, ...]`` and the metrics are scalars. ``first_update_fn``,
    when given, runs the first of the n steps (a lazy-QC step) and ``update_fn`` the others."""
    repl = parallel.replicated_sharding(mesh)
    shard = parallel.batch_sharding(mesh, 0 if steps_per_call == 1 else 1)
    first = update_fn if first_update_fn is None else first_update_fn

    def step(state, batches, frozen):
        if steps_per_call == 1:
            return first(state, batches, frozen)
        scanned = lambda s, b: update_fn(s, b, frozen)  # noqa: E731
        if first_update_fn is None:
            return jax.lax.scan(scanned, state, batches)
        state, head = first(state, jax.tree.map(lambda b: b[0], batches), frozen)
        state, rest = jax.lax.scan(scanned, state, jax.tree.map(lambda b: b[1:], batches))
        return state, jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), head, rest)

    return jax.jit(step, in_shardings=(repl, shard, repl), out_shardings=(repl, repl),
                   donate_argnums=0)


class TrainStep:
    """The compiled train step of an experiment: ``train_step(step, state, batch, frozen=None)``
    runs
    ``steps_per_call`` (default ``training.n_jitted_steps``) optimisation steps from ``step`` (the
    state's step, known on the host) and returns ``(state, metrics)`` (``make_train_step``).

    With lazy regularisation (``training.qc_every`` = k > 1; k is a multiple of the steps per
    call, so a call holds at most one step that k divides, its first) ``program(step)`` is the
    program of the call that starts at ``step``: the QC step followed by plain steps when k
    divides ``step``, plain steps otherwise. Without it there is one program.
    """

    def __init__(self, experiment: Trainable, mesh,
                 steps_per_call: int | None = None):
        n = experiment.training.n_jitted_steps if steps_per_call is None else steps_per_call
        self.steps_per_call = n
        first, *rest = (make_update_fn(experiment, loss) for loss in experiment.step_losses())
        if not rest:
            self.every, self.programs = 1, (make_train_step(first, mesh, n),)
        else:
            self.every = experiment.training.qc_every
            if self.every % n:
                raise ValueError(f"training.qc_every={self.every} must be a multiple of the steps "
                                 f"per call ({n}).")
            plain, = rest
            self.programs = (make_train_step(plain, mesh, n, first_update_fn=first),
                             make_train_step(plain, mesh, n))

    def program(self, step: int):
        """The jitted program of the call that starts at ``step``."""
        return self.programs[0 if step % self.every == 0 else 1]

    def __call__(self, step: int, state: TrainState, batch: dict,
                 frozen=None) -> tuple[TrainState, dict]:
        return self.program(step)(state, batch, frozen)


def make_eval_step(experiment: Trainable, mesh):
    """A jitted ``eval_loss(ema_params, model_state, batch, key, frozen) -> loss``:
    ``experiment.loss_fn`` of the EMA parameters in evaluation mode (no dropout, running
    statistics) on a sharded batch, as score_sde's evaluation step."""
    repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)

    def eval_loss(params, model_state, batch, key, frozen):
        return experiment.batch_loss(params, batch, key, model_state=model_state,
                                     frozen=frozen)[0]

    return jax.jit(eval_loss, in_shardings=(repl, repl, shard, repl, repl), out_shardings=repl)


# --------------------------------------------------------------------------- the loop


def _check_finite(metrics: list[tuple[int, dict]], ckpt, workdir: str, lr: float) -> None:
    for step, m in metrics:
        bad = [k for k in ("loss", "grad_norm", "param_norm") if not np.isfinite(m[k])]
        if bad:
            last = ckpt.latest_step()
            kept = "none saved yet" if last is None else f"step {last}"
            raise FloatingPointError(
                f"the training {bad[0]} became non-finite ({m[bad[0]]}) at step {step}; the state "
                f"was not saved (last checkpoint: {kept}, in {checkpoint_dir(workdir)}). Try a "
                f"lower learning rate (optim.lr, now {lr}) or gradient clipping (optim.grad_clip).")


def _per_step(first: int, metrics: dict) -> list[tuple[int, dict]]:
    """Host metrics of one call ([n] arrays or scalars) as (step, scalars) pairs."""
    arrays = {k: np.atleast_1d(np.asarray(v)) for k, v in metrics.items()}
    n = len(next(iter(arrays.values())))
    return [(first + i, {k: float(v[i]) for k, v in arrays.items()}) for i in range(n)]


def _log_means(window: list[dict]) -> dict:
    """The mean of every metric over the window; with a QC term also its share of the loss."""
    means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
    if "qc" in means:
        loss = means["loss"]
        means["qc_share"] = (loss - means["objective"]) / loss if loss else 0.0
    return means


class _Evaluator:
    """``eval_loss`` of the EMA parameters on test batch j = (step / eval_freq) mod (number of
    full test batches), with the key ``fold_in(eval key, step)``."""

    def __init__(self, experiment: Trainable, mesh, frozen=None):
        self.experiment, self.mesh, self.frozen = experiment, mesh, frozen
        self.step_fn = make_eval_step(experiment, mesh)
        batch_size = experiment.training.batch_size
        self.num_batches = max(1, experiment.data.num_eval_examples() // batch_size)

    def __call__(self, state: TrainState, step: int) -> float:
        t = self.experiment.training
        index = (step // t.eval_freq) % self.num_batches
        for j, batch in enumerate(self.experiment.data.eval_batches(t.batch_size)):
            if j == index:
                break
        batch = parallel.shard_batch({"x": batch["x"], "label": batch["label"]}, self.mesh)
        key = jax.random.fold_in(self.experiment.eval_key(), step)
        return float(self.step_fn(state.ema_params, state.model_state, batch, key, self.frozen))


class SnapshotSampler:
    """``training.snapshot_num_samples`` samples of the EMA model at a checkpoint, as an image grid
    (images) or a scatter over the data (points), in ``workdir/samples/step_<step>.png``. The
    sampler is compiled once, for all snapshots of a run."""

    def __init__(self, experiment: Experiment, workdir: str):
        self.experiment, self.workdir = experiment, workdir
        shape = (experiment.training.snapshot_num_samples, *experiment.event_shape)
        self.sample = jax.jit(lambda params, key: experiment.sampler(
            experiment.score_model(params), shape, key))

    def __call__(self, state: TrainState) -> str:
        experiment, step = self.experiment, int(state.step)
        samples, nfe = self.sample(state.ema_params,
                                   jax.random.fold_in(experiment.eval_key(), step))
        path = os.path.join(self.workdir, "samples", f"step_{step}.png")
        if jax.process_index() == 0:
            samples = np.asarray(jax.device_get(samples))
            title = f"{experiment.name}: step {step}, NFE {int(nfe)}"
            if experiment.is_toy:
                plots.plot_samples(path, experiment.data.points[:5000], samples, title)
            else:
                plots.save_image_grid(path, np.asarray(experiment.data.inverse_scaler(samples)))
        return path


def _report(progress, first: int, done: int) -> None:
    """clu's progress report wants every step: those of one dispatch, in order."""
    for step in range(first + 1, done + 1):
        progress(step)


def _initial_state(experiment: Trainable, ckpt, workdir: str, mesh) -> TrainState:
    latest = ckpt.latest_step()
    if latest is not None:
        logging.info("Resuming from step %d in %s.", latest, checkpoint_dir(workdir))
        return restore_state(ckpt, latest, abstract_state(experiment, mesh))
    if experiment.training.init_from:
        state = init_from_checkpoint(experiment, mesh)
        logging.info("Starting from step %d of %s.", int(state.step),
                     experiment.training.init_from)
        files.write_json(os.path.join(workdir, "init_from.json"),
                         {"init_from": os.path.abspath(experiment.training.init_from),
                          "step": int(state.step)})
        return state
    return jax.jit(lambda: init_state(experiment),
                   out_shardings=parallel.replicated_sharding(mesh))()


def train(experiment: Trainable, workdir: str, *, mesh=None, writer=None, frozen=None,
          config_json: str | None = None) -> TrainState:
    """Train ``experiment`` in ``workdir`` up to ``training.n_iters`` steps (module docstring)
    and return the final state.

    Logs the loss's ``aux`` (score models: loss / objective / qc / qc_share; classifiers: loss /
    ce / dlsm / accuracy), grad_norm / param_norm (means over the last ``training.log_freq``
    steps), eval_loss and steps/s with an ETA to the console and TensorBoard (``workdir``).
    ``mesh`` defaults to all devices (:func:`parallel.data_mesh`); ``writer`` (a clu
    ``MetricWriter``) replaces the default console + TensorBoard writer. A classifier
    (:class:`~sgm_jax.classifier_experiment.ClassifierExperiment`) trains against the frozen
    score model of the parameters ``frozen``. ``config_json`` (the run's config as JSON) is
    written to ``workdir/config.json`` when given.
    """
    from clu import metric_writers, periodic_actions  # imports TensorFlow: only when training

    mesh = parallel.data_mesh() if mesh is None else mesh
    parallel.check_batch_divisible(experiment.training.batch_size, mesh.size)
    t = experiment.training
    experiment.data.load()  # a data set that is not there fails before anything is written
    os.makedirs(workdir, exist_ok=True)
    if not os.access(workdir, os.W_OK):
        raise ValueError(f"the workdir {os.path.abspath(workdir)} is not writable.")
    ckpt = manager(checkpoint_dir(workdir), keep=t.keep_checkpoints, keep_every=t.keep_every)
    state = _initial_state(experiment, ckpt, workdir, mesh)
    if config_json is not None:
        files.write_json(os.path.join(workdir, "config.json"), config_json)
    train_step = TrainStep(experiment, mesh)
    if frozen is not None:
        frozen = jax.device_put(frozen, parallel.replicated_sharding(mesh))
    evaluator = _Evaluator(experiment, mesh, frozen) if t.eval_freq else None
    snapshot = SnapshotSampler(experiment, workdir) if t.snapshot_sampling else None
    own_writer = writer is None
    if own_writer:
        writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    progress = periodic_actions.ReportProgress(
        num_train_steps=t.n_iters, writer=writer, every_steps=t.log_freq, every_secs=None)
    first = int(state.step)
    if first % t.n_jitted_steps and first < t.n_iters:
        raise ValueError(f"the run is at step {first}, not a multiple of training.n_jitted_steps="
                         f"{t.n_jitted_steps}; resume it with the n_jitted_steps it was saved with.")
    put = lambda batch: parallel.shard_batch(  # noqa: E731
        batch, mesh, 0 if t.n_jitted_steps == 1 else 1)
    pending, window = [], []  # device metrics not yet checked; checked host metrics not yet logged
    try:
        with Prefetcher(experiment.data, first, t.n_jitted_steps, put) as batches:
            for step, batch in batches:
                if step >= t.n_iters:
                    break
                state, metrics = train_step(step, state, batch, frozen)
                pending.append((step, metrics))
                done = step + t.n_jitted_steps
                is_log, is_save = done % t.log_freq == 0, done % t.snapshot_freq == 0
                is_eval = bool(t.eval_freq) and done % t.eval_freq == 0
                if not (is_log or is_save or is_eval or done >= t.n_iters):
                    _report(progress, step, done)
                    continue
                host = [pair for s, m in jax.device_get(pending) for pair in _per_step(s, m)]
                _check_finite(host, ckpt, workdir, t.lr)  # before anything is saved
                window.extend(m for _, m in host)
                pending = []
                if is_log or done >= t.n_iters:
                    writer.write_scalars(done, _log_means(window))
                    window = []
                if is_eval:
                    writer.write_scalars(done, {"eval_loss": evaluator(state, done)})
                if is_save or done >= t.n_iters:
                    ckpt.save(done, args=ocp.args.StandardSave(state))
                    if snapshot is not None:
                        snapshot(state)
                _report(progress, step, done)
        if ckpt.latest_step() != int(state.step):
            ckpt.save(int(state.step), args=ocp.args.StandardSave(state))
    finally:
        ckpt.wait_until_finished()
        ckpt.close()
        if own_writer:
            writer.close()
        else:
            writer.flush()
    return state
