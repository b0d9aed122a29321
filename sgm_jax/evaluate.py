"""Evaluation, sampling and reference statistics of a trained run (``main.py --mode=eval |
sample | stats``): the QCSGM toy protocol for 2-D data (:mod:`sgm_jax.toy_eval`), the image
protocol of score_sde / QCSGM / LCSS for images (:mod:`sgm_jax.image_eval`).

    experiment = build_experiment(config)
    results = evaluate(experiment, workdir)     # WORKDIR/eval/*.json, a printed table, figures
    path = sample(experiment, workdir)          # WORKDIR/samples/samples_step_<step>.{npz,png}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sgm_jax import image_eval, toy_eval

if TYPE_CHECKING:
    from sgm_jax.experiment import Experiment


def evaluate(experiment: Experiment, workdir: str) -> dict[str, Any]:
    """Evaluate the configured checkpoint of the run in ``workdir``; ``ValueError`` when it has
    none. Returns the results dict that is also written as JSON."""
    suite = toy_eval if experiment.is_toy else image_eval
    return suite.evaluate(experiment, workdir)


def sample(experiment: Experiment, workdir: str) -> str:
    """Draw samples of the configured checkpoint; returns the ``.npz`` written."""
    suite = toy_eval if experiment.is_toy else image_eval
    return suite.sample(experiment, workdir)


def statistics(experiment: Experiment) -> str:
    """The training split's Inception statistics (images only), cached; returns their file."""
    if experiment.is_toy:
        raise ValueError(f"--mode=stats computes Inception statistics of an image data set; "
                         f"{experiment.dataset!r} is a 2-D toy set.")
    return image_eval.compute_statistics(experiment)
