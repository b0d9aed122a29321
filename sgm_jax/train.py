"""Training: ``TrainState``, the optimiser, the data-parallel step, ``train(config, workdir)``.

    state = train(config, workdir)          # resumes from workdir/checkpoints when present
    state = load_latest(config, workdir)    # for evaluation / sampling

Randomness comes from ``config.seed`` only. ``jax.random.PRNGKey(seed)`` is split into four keys:
the toy training set (:func:`train_data`), the batch order, the parameter initialisation and the
training key ``TrainState.key``. Step k uses

  * the batch k: epoch e = k // (N // B) is the permutation of the N points drawn from
    ``fold_in(batch_key, e)`` (as ``datasets.toy_batches``), and batch k is its
    (k mod N // B)-th block of B rows; so a resumed run sees exactly the batches it would have;
  * the loss key ``fold_in(state.key, k)`` (noise levels, perturbations, probes).

A run with a given seed is therefore reproducible bit for bit on CPU for a fixed device count,
including across a kill and resume. Checkpoints (orbax ``CheckpointManager``: atomic, the last
``training.keep_checkpoints`` kept, pre-empted temporaries cleaned up) hold the whole
``TrainState`` at ``training.snapshot_freq`` steps and at the end. A non-finite loss raises
``FloatingPointError`` naming the step, before the bad state can be saved.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from sgm_jax import datasets, parallel
from sgm_jax.config_validation import model_from_config, sde_from_config, validate_config
from sgm_jax.models.parameterisation import make_score_fn
from sgm_jax.sde_loss import get_sde_loss_fn

Array = jax.Array
ScoreModel = Callable[[Array, Array], Array]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: ``step`` (int32 scalar, updates done), ``params``,
    ``opt_state`` (optax), ``ema_params`` (exponential moving average of ``params``) and
    ``key`` (raw uint32 PRNG key; step k's loss key is ``fold_in(key, k)``)."""

    step: Array
    params: Any
    opt_state: Any
    ema_params: Any
    key: Array


def _keys(config) -> dict[str, Array]:
    names = ("data", "batches", "init", "train")
    return dict(zip(names, jax.random.split(jax.random.PRNGKey(config.seed), len(names))))


def train_data(config) -> np.ndarray:
    """The fixed toy training set ``[data.num_points, 2]`` of ``config`` (from ``config.seed``)."""
    key = _keys(config)["data"]
    return np.asarray(datasets.make_toy_dataset(config.data.dataset, key, config.data.num_points))


def make_optimizer(config) -> optax.GradientTransformation:
    """Global-norm gradient clipping (``optim.grad_clip``; 0 disables it), then Adam
    (``optim.lr``, ``beta1``, ``beta2``, ``eps``), with decoupled weight decay (AdamW) when
    ``optim.weight_decay`` > 0 and a linear warm-up lr·min(step/warmup, 1) when ``optim.warmup``
    > 0 (score_sde's schedule). Note: PyTorch's ``Adam(weight_decay=…)`` adds an L2 term to the
    gradient instead; the official runs use 0."""
    o = config.optim
    lr = optax.linear_schedule(0.0, o.lr, o.warmup) if o.warmup > 0 else o.lr
    if o.weight_decay > 0:
        adam = optax.adamw(lr, b1=o.beta1, b2=o.beta2, eps=o.eps, weight_decay=o.weight_decay)
    else:
        adam = optax.adam(lr, b1=o.beta1, b2=o.beta2, eps=o.eps)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip), adam) if o.grad_clip > 0 else adam


def build_score_model(config, model, sde) -> Callable[[Any], ScoreModel]:
    """``params -> score_model(x, t)`` with ``config.model.parameterisation`` (QCSGM Eq. 12) and
    ``config.model.condition``: "t" feeds the network t, "sigma" feeds it σ_t = sde.marginal_std(t)
    (the official toy network)."""
    sigma_fn = sde.marginal_std
    if config.model.condition == "sigma":
        def apply_fn(params, x, t):
            return model.apply(params, x, sigma_fn(t))
    else:
        apply_fn = model.apply
    parameterisation = config.model.parameterisation
    return lambda params: make_score_fn(apply_fn, params, parameterisation, sigma_fn)


def make_train_step(loss_fn, score_model_of_params, optimizer, ema_rate: float, mesh=None):
    """A jitted ``step(state, batch) -> (state, metrics)``, data-parallel over ``mesh`` (default
    :func:`parallel.data_mesh`): ``batch`` [B, ...] sharded over "data", state replicated; the
    gradient is that of the global batch mean. ``state`` is donated. ``metrics`` holds the loss's
    ``aux`` (loss, objective, qc), ``grad_norm`` and ``param_norm`` (after the update),
    replicated scalars."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)

    def step(state: TrainState, batch):
        key = jax.random.fold_in(state.key, state.step)

        def objective(params):
            return loss_fn(score_model_of_params(params), batch, key)

        (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_rate)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
        norms = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
        return new, {**aux, **norms}

    return jax.jit(step, in_shardings=(repl, shard), out_shardings=(repl, repl), donate_argnums=0)


class Experiment:
    """The static pieces of a run built from a validated config: data, SDE, model, optimiser,
    the score model of the parameters, the initial state and the loss."""

    def __init__(self, config, mesh):
        self.config, self.mesh = config, mesh
        self.keys = _keys(config)
        self.data = train_data(config)
        self.sde = sde_from_config(config)
        self.model = model_from_config(config)
        self.optimizer = make_optimizer(config)
        self.score_model_of_params = build_score_model(config, self.model, self.sde)

    def init_state(self) -> TrainState:
        x = jnp.asarray(self.data[:1])
        params = self.model.init(self.keys["init"], x, jnp.ones((1,), x.dtype))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.optimizer.init(params),
                          ema_params=jax.tree.map(jnp.copy, params),
                          key=self.keys["train"])

    def abstract_state(self) -> TrainState:
        repl = parallel.replicated_sharding(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl),
                            jax.eval_shape(self.init_state))

    def loss_fn(self):
        t = self.config.training
        return get_sde_loss_fn(
            self.sde, t.objective, qc_weight=t.qc_weight, qc_num_vectors=t.qc_num_vectors,
            qc_estimator=t.qc_estimator, weighting=t.weighting, eps=t.eps,
            data=jnp.asarray(self.data) if t.objective == "esm" else None)


class _Batches:
    """Host-local rows of batch k, a function of (seed, k) only (see the module docstring)."""

    def __init__(self, data: np.ndarray, key: Array, batch_size: int):
        self.data, self.key, self.batch_size = data, key, batch_size
        self.steps_per_epoch = data.shape[0] // batch_size
        local = batch_size // jax.process_count()
        self.rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
        self._epoch, self._cached = -1, None

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            key = jax.random.fold_in(self.key, epoch)
            self._cached = np.asarray(jax.random.permutation(key, len(self.data)))
            self._epoch = epoch
        return self._cached

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        index = self._perm(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        return self.data[index[self.rows]]


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _manager(workdir: str, keep: int | None = None, read_only: bool = False):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _restore(manager, setup: Experiment, step: int) -> TrainState:
    return manager.restore(step, args=ocp.args.StandardRestore(setup.abstract_state()))


def load_checkpoint(config, workdir: str, step: int | None = None, *, mesh=None) -> TrainState:
    """The ``TrainState`` saved at ``step`` (default: the latest) in ``workdir/checkpoints``,
    replicated over ``mesh``. Raises ``ValueError`` when there is no (such) checkpoint."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    validate_config(config, num_devices=1)  # the training batch need not divide this mesh
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise ValueError(f"no checkpoint in {directory} (the directory does not exist).")
    manager = _manager(workdir, read_only=True)
    steps = manager.all_steps()
    if not steps:
        raise ValueError(f"no checkpoint in {directory}.")
    step = manager.latest_step() if step is None or step < 0 else step
    if step not in steps:
        raise ValueError(
            f"no checkpoint for step {step} in {directory}; available: {sorted(steps)}.")
    state = _restore(manager, Experiment(config, mesh), step)
    manager.close()
    return state


def load_latest(config, workdir: str, *, mesh=None) -> TrainState:
    """The latest ``TrainState`` in ``workdir/checkpoints``; ``ValueError`` "no checkpoint in …"
    when there is none."""
    return load_checkpoint(config, workdir, None, mesh=mesh)


def _write_config(config, workdir: str) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def train(config, workdir: str, *, mesh=None, writer=None) -> TrainState:
    """Train ``config`` in ``workdir`` up to ``training.n_iters`` steps and return the final state.

    Validates the config first (``ValueError`` naming the field), resumes from the latest
    checkpoint in ``workdir/checkpoints`` when one exists, logs loss / objective / qc /
    grad_norm / param_norm (means over the last ``training.log_freq`` steps) and steps/s with an
    ETA to the console and TensorBoard (``workdir``), and saves every ``training.snapshot_freq``
    steps and at the end. Raises ``FloatingPointError`` naming the step when the loss, the gradient
    or the updated parameters become non-finite (checked for every step); the bad state is not
    saved, so the last checkpoint stays the last good one. ``mesh`` defaults to all devices
    (:func:`parallel.data_mesh`); ``writer`` (a clu ``MetricWriter``) replaces the default
    console + TensorBoard writer.
    """
    mesh = parallel.data_mesh() if mesh is None else mesh
    validate_config(config, mesh.size)
    from clu import metric_writers, periodic_actions  # imports TensorFlow: only when training

    t = config.training
    os.makedirs(workdir, exist_ok=True)
    setup = Experiment(config, mesh)
    manager = _manager(workdir, keep=t.keep_checkpoints)
    latest = manager.latest_step()
    if latest is None:
        repl = parallel.replicated_sharding(mesh)
        state = jax.jit(setup.init_state, out_shardings=repl)()  # one compilation, replicated
    else:
        state = _restore(manager, setup, latest)
        logging.info("Resuming from step %d in %s.", latest, checkpoint_dir(workdir))
    _write_config(config, workdir)
    step_fn = make_train_step(setup.loss_fn(), setup.score_model_of_params, setup.optimizer,
                              config.optim.ema_rate, mesh)
    batches = _Batches(setup.data, setup.keys["batches"], t.batch_size)
    own_writer = writer is None
    if own_writer:
        writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    progress = periodic_actions.ReportProgress(
        num_train_steps=t.n_iters, writer=writer, every_steps=t.log_freq, every_secs=None)

    pending, window = [], []  # device metrics not yet checked; checked host metrics not yet logged
    try:
        for step in range(int(state.step), t.n_iters):
            state, metrics = step_fn(state, parallel.shard_batch(batches(step), mesh))
            pending.append((step, metrics))
            done = step + 1
            is_log, is_save = done % t.log_freq == 0, done % t.snapshot_freq == 0
            if not (is_log or is_save or done == t.n_iters):
                progress(done)
                continue
            for s, m in jax.device_get(pending):  # check every step before anything is saved
                bad = [k for k in ("loss", "grad_norm", "param_norm") if not np.isfinite(m[k])]
                if bad:
                    last = manager.latest_step()
                    kept = "none saved yet" if last is None else f"step {last}"
                    raise FloatingPointError(
                        f"the training {bad[0]} became non-finite ({m[bad[0]]}) at step {s}; the "
                        f"state was not saved (last checkpoint: {kept}, in "
                        f"{checkpoint_dir(workdir)}). Try a lower optim.lr (now "
                        f"{config.optim.lr}) or gradient clipping (optim.grad_clip).")
                window.append(m)
            pending = []
            if is_log or done == t.n_iters:
                means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                writer.write_scalars(done, means)
                window = []
            if is_save or done == t.n_iters:
                manager.save(done, args=ocp.args.StandardSave(state))
            progress(done)
        if manager.latest_step() != int(state.step):
            manager.save(int(state.step), args=ocp.args.StandardSave(state))
    finally:
        manager.wait_until_finished()
        manager.close()
        if own_writer:
            writer.close()
        else:
            writer.flush()
    return state
