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
  evaluate or sample with another one (:func:`sgm_jax.checkpoints.frozen_score`).

Evaluation and sampling (the conditional suites of :mod:`sgm_jax.evaluate`) draw conditional
samples with the posterior score of the configured guidance (:mod:`sgm_jax.guidance`).
"""

from __future__ import annotations

from sgm_jax import checkpoints, parallel, train
from sgm_jax.classifier_experiment import ClassifierExperiment


def train_pipeline(experiment: ClassifierExperiment, workdir: str, *, mesh=None,
                   config_json: str | None = None) -> None:
    """Stage 1 (the score model, unless ``classifier.score_workdir`` names a trained one) and
    stage 2 (the classifier against its frozen EMA parameters); see the module docstring.
    ``config_json`` is written beside both stages' checkpoints (``config.json``)."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    if not experiment.score_workdir:
        train.train(experiment.score, workdir, mesh=mesh, config_json=config_json)
    score_params, record = checkpoints.frozen_score(experiment, workdir, mesh=mesh)
    checkpoints.write_score_source(workdir, record)
    train.train(experiment, checkpoints.classifier_workdir(workdir), mesh=mesh,
                frozen=score_params, config_json=config_json)
