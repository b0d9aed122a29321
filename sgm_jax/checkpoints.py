"""The training state and its checkpoints: ``TrainState``, its initialisation, and orbax
checkpoint folders (atomic, multi-host; a run's folder is ``WORKDIR/checkpoints``).

    state = load_checkpoint(experiment, workdir)           # the latest, replicated over the mesh
    step, score_model = restore_score_model(experiment, workdir)   # its EMA score model
    variables = eval_variables(state)                      # EMA parameters + running statistics
    score, classifier, step, record = load_models(classifier_experiment, workdir)   # DLSM runs

A network's variables (``init`` of its Flax module) split into the trained ``params``
collection, which the optimiser and the EMA see, and its **model state**: the other
collections, e.g. the BatchNorm running statistics ``batch_stats`` of the DLSM classifier
(:func:`sgm_jax.models.split_variables`). The train step updates the model state, checkpoints
hold it, and evaluation uses it beside the EMA parameters. Score networks have none (their
examples never interact, DESIGN §3.1): their model state is ``{}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

import numpy as np

from sgm_jax import files, parallel
from sgm_jax.models import split_variables

if TYPE_CHECKING:
    from sgm_jax.classifier_experiment import ClassifierExperiment
    from sgm_jax.experiment import Experiment

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: ``step`` (int32 scalar, updates done), ``params``
    (``{"params": ...}``), ``opt_state`` (optax), ``ema_params`` (exponential moving average of
    ``params``), ``key`` (raw uint32 PRNG key; step k's loss key is ``fold_in(key, k)``) and
    ``model_state`` (the network's other collections, e.g. ``{"batch_stats": ...}``, updated by
    every train step and not averaged: running statistics are already averages; ``{}`` for a
    network without)."""

    step: Array
    params: Any
    opt_state: Any
    ema_params: Any
    key: Array
    model_state: Any


def eval_variables(state: TrainState) -> dict:
    """The variables evaluation and sampling use: the EMA parameters with the model state."""
    return {**state.ema_params, **state.model_state}


def init_state(experiment: Experiment) -> TrainState:
    """The state before the first step: variables from the "init" key, EMA = parameters."""
    keys = experiment.keys()
    params, model_state = split_variables(experiment.init_params(keys["init"]))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=experiment.optimizer.init(params),
                      ema_params=jax.tree.map(jnp.copy, params), key=keys["train"],
                      model_state=model_state)


def abstract_state(experiment: Experiment, mesh) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the state: what a restore fills in."""
    repl = parallel.replicated_sharding(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl),
                        jax.eval_shape(lambda: init_state(experiment)))


def restore_state(reader: ocp.CheckpointManager, step: int, abstract: TrainState) -> TrainState:
    """The state saved at ``step`` by ``reader``, shaped as ``abstract``. A checkpoint written
    before ``TrainState`` had ``model_state`` restores with ``model_state={}`` when the network
    has no model state (score networks); otherwise the mismatch is raised."""
    try:
        return reader.restore(step, args=ocp.args.StandardRestore(abstract))
    except ValueError:
        if abstract.model_state:
            raise
        fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)
                  if f.name != "model_state"}
        try:
            restored = reader.restore(step, args=ocp.args.StandardRestore(fields))
        except ValueError:
            pass  # not the earlier layout either: report the first error
        else:
            return TrainState(**restored, model_state={})
        raise


def checkpoint_dir(workdir: str) -> str:
    """The checkpoint folder of the run in ``workdir``."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(directory: str, *, keep: int | None = None, keep_every: int = 0,
            read_only: bool = False) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` on ``directory`` keeping the last ``keep`` checkpoints and
    every one at a multiple of ``keep_every`` (0: none); unfinished temporaries are removed."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_every or None, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(directory, options=options)


def restore_step(directory: str, step: int, experiment: Experiment, mesh) -> TrainState:
    """The state saved at ``step`` (−1: the latest) in the checkpoint folder ``directory``."""
    if not os.path.isdir(directory):
        raise ValueError(f"no checkpoint in {directory} (the directory does not exist).")
    reader = manager(directory, read_only=True)
    try:
        steps = reader.all_steps()
        if not steps:
            raise ValueError(f"no checkpoint in {directory}.")
        step = reader.latest_step() if step < 0 else step
        if step not in steps:
            raise ValueError(
                f"no checkpoint for step {step} in {directory}; available: {sorted(steps)}.")
        try:
            return restore_state(reader, step, abstract_state(experiment, mesh))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"the checkpoint of step {step} in {directory} does not fit this experiment's "
                f"network and optimiser ({experiment.name}): {err}") from None
    finally:
        reader.close()


def load_checkpoint(experiment: Experiment, workdir: str, step: int = -1, *,
                    mesh=None) -> TrainState:
    """The ``TrainState`` saved at ``step`` (−1: the latest) in ``workdir/checkpoints``,
    replicated over ``mesh``. ``ValueError`` when there is no (such) checkpoint."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    return restore_step(checkpoint_dir(workdir), step, experiment, mesh)


def init_from_checkpoint(experiment: Experiment, mesh) -> TrainState:
    """The state of ``training.init_from`` (a workdir or its checkpoints folder) at
    ``training.init_step`` (−1: its latest checkpoint), for a run that starts from another run's
    checkpoint (QCSGM's two-stage schedule)."""
    source = experiment.training.init_from
    nested = checkpoint_dir(source)
    directory = nested if os.path.isdir(nested) else os.path.abspath(source)
    return restore_step(directory, experiment.training.init_step, experiment, mesh)


def restore_score_model(experiment: Experiment, workdir: str, step: int = -1):
    """``(step, score_model)`` of the checkpoint ``step`` (−1: the latest) of the run in
    ``workdir``: the score model of its EMA parameters, ``score_model(x, t) -> s``."""
    state = load_checkpoint(experiment, workdir, step)
    return int(state.step), experiment.score_model(state.ema_params)


# --------------------------------------------------------------------------- DLSM runs
# A DLSM run holds its score model in WORKDIR (or classifier.score_workdir) and its classifier in
# WORKDIR/classifier, recorded against the score checkpoint it was trained with.

SOURCE_FILE = "score_source.json"


def classifier_workdir(workdir: str) -> str:
    """The classifier run's folder inside the DLSM run ``workdir``."""
    return os.path.join(workdir, "classifier")


def score_workdir(experiment: ClassifierExperiment, workdir: str) -> str:
    """The folder of the score model's run: ``classifier.score_workdir`` or ``workdir``."""
    return os.path.abspath(experiment.score_workdir or workdir)


def params_digest(params: Any) -> str:
    """SHA-256 of a parameter pytree's leaves (paths, dtypes, shapes and bytes), host order."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        leaf = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def frozen_score(experiment: ClassifierExperiment, workdir: str, *, mesh=None
                 ) -> tuple[Any, dict]:
    """The EMA parameters of the configured score checkpoint and its record (``folder``,
    ``step``, ``digest``), checked against the record of the classifier run in ``workdir`` when
    there is one."""
    folder = score_workdir(experiment, workdir)
    state = load_checkpoint(experiment.score, folder, experiment.score_checkpoint,
                                        mesh=mesh)
    record = {"folder": folder, "step": int(state.step),
              "digest": params_digest(state.ema_params)}
    path = os.path.join(classifier_workdir(workdir), SOURCE_FILE)
    if os.path.exists(path):
        with open(path) as f:
            used = json.load(f)
        if used["digest"] != record["digest"]:
            raise ValueError(
                f"the classifier in {classifier_workdir(workdir)} was trained against the score "
                f"model of step {used['step']} in {used['folder']} (EMA SHA-256 "
                f"{used['digest'][:12]}…), but the configured score checkpoint is step "
                f"{record['step']} in {folder} ({record['digest'][:12]}…). Set "
                f"classifier.score_workdir / classifier.score_checkpoint to the one it was "
                f"trained with, or train the classifier in a new workdir.")
    return state.ema_params, record


def write_score_source(workdir: str, record: dict) -> None:
    """Record the score checkpoint a DLSM classifier trains against (``frozen_score``'s record)
    in ``WORKDIR/classifier/score_source.json``, unless one is there."""
    path = os.path.join(classifier_workdir(workdir), SOURCE_FILE)
    if not os.path.exists(path):
        files.write_json(path, record)


def load_models(experiment: ClassifierExperiment, workdir: str, *, mesh=None
                ) -> tuple[Any, Any, int, dict]:
    """``(score EMA params, classifier variables, classifier step, score record)`` of the DLSM
    run in ``workdir``: the classifier checkpoint ``eval.checkpoint`` (−1: the latest), its EMA
    parameters with its running statistics (:func:`sgm_jax.eval_variables`), and
    the score checkpoint it was trained against."""
    score_params, record = frozen_score(experiment, workdir, mesh=mesh)
    state = load_checkpoint(experiment, classifier_workdir(workdir),
                                        experiment.evaluation.checkpoint, mesh=mesh)
    return score_params, eval_variables(state), int(state.step), record
