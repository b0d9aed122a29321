"""The two-stage DLSM pipeline of ``main.py`` for a config with a ``classifier`` section (DLSM
poster Fig. 2; ``configs/dlsm/``).

    python main.py --config=configs/dlsm/moons_dlsm.py --mode=train --workdir=runs/moons_dlsm

* stage 1 trains the unconditional score model in ``WORKDIR`` (``sgm_jax.train``, resuming as
  any run), or, with ``classifier.score_workdir`` set, uses the one trained there (it must have a
  checkpoint);
* stage 2 trains the classifier in ``WORKDIR/classifier`` against the frozen EMA parameters of
  the score checkpoint ``classifier.score_checkpoint`` (−1: the latest). The run records that
  checkpoint (folder, step and a SHA-256 of its EMA parameters) in
  ``WORKDIR/classifier/score_source.json`` and refuses, with a ``ValueError``, to resume,
  evaluate or sample with another one;
* evaluation and sampling draw conditional samples with the posterior score of the configured
  guidance (:mod:`sgm_jax.guidance`): :mod:`sgm_jax.conditional_eval` (toy data) or
  :mod:`sgm_jax.conditional_image_eval` (images).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np

from sgm_jax import checkpoints, parallel, train
from sgm_jax.classifier_experiment import ClassifierExperiment

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
    state = checkpoints.load_checkpoint(experiment.score, folder, experiment.score_checkpoint,
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


def write_source(workdir: str, record: dict) -> None:
    path = os.path.join(classifier_workdir(workdir), SOURCE_FILE)
    if jax.process_index() == 0 and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, path)


def train_pipeline(experiment: ClassifierExperiment, workdir: str, *, mesh=None) -> None:
    """Stage 1 (the score model, unless ``classifier.score_workdir`` names a trained one) and
    stage 2 (the classifier against its frozen EMA parameters); see the module docstring."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    if not experiment.score_workdir:
        train.train(experiment.score, workdir, mesh=mesh)
    score_params, record = frozen_score(experiment, workdir, mesh=mesh)
    write_source(workdir, record)
    train.train(experiment, classifier_workdir(workdir), mesh=mesh, frozen=score_params)


def load_models(experiment: ClassifierExperiment, workdir: str, *, mesh=None
                ) -> tuple[Any, Any, int, dict]:
    """``(score EMA params, classifier variables, classifier step, score record)`` of the DLSM
    run in ``workdir``: the classifier checkpoint ``eval.checkpoint`` (−1: the latest), its EMA
    parameters with its running statistics (:func:`sgm_jax.checkpoints.eval_variables`), and
    the score checkpoint it was trained against."""
    score_params, record = frozen_score(experiment, workdir, mesh=mesh)
    state = checkpoints.load_checkpoint(experiment, classifier_workdir(workdir),
                                        experiment.evaluation.checkpoint, mesh=mesh)
    return score_params, checkpoints.eval_variables(state), int(state.step), record


def evaluate(experiment: ClassifierExperiment, workdir: str) -> dict[str, Any]:
    """The conditional evaluation of the DLSM run in ``workdir`` (toy or image protocol)."""
    if experiment.is_toy:
        from sgm_jax import conditional_eval as suite
    else:
        from sgm_jax import conditional_image_eval as suite
    return suite.evaluate(experiment, workdir)


def sample(experiment: ClassifierExperiment, workdir: str) -> str:
    """``eval.samples_per_class`` conditional samples of every class; returns the ``.npz``."""
    if experiment.is_toy:
        from sgm_jax import conditional_eval as suite
    else:
        from sgm_jax import conditional_image_eval as suite
    return suite.sample(experiment, workdir)
