"""Evaluation, sampling and reference statistics of a trained run (``main.py --mode=eval |
sample | stats``): one dispatch over the four suites, each writing
``<run folder>/eval/ckpt_<step>.json`` through :mod:`sgm_jax.evaluate.results`.

================================  ======================  ==================================
run                               2-D toy data            images
================================  ======================  ==================================
score model (``Experiment``)      :mod:`.toy` (QCSGM's    :mod:`.images` (score_sde / QCSGM /
                                  toy protocol)           LCSS: FID / IS / KID / PRDC, BPD,
                                                          Asym over t)
DLSM classifier                   :mod:`.conditional_toy` :mod:`.conditional_images`
(``ClassifierExperiment``)        (poster Fig. 1)         (class-wise PRDC, CAS)
================================  ======================  ==================================

``--mode=sample`` with a conditional task (``sampling.task``: inpainting, colorization, DPS;
images only) runs :mod:`.tasks` instead of the suite's unconditional samples.

    results = evaluate(experiment, workdir)     # the JSON's contents; a table is printed
    path = sample(experiment, workdir)          # WORKDIR/samples/samples_step_<step>.{npz,png}
                                                # (a task: WORKDIR/samples/<task>_step_<step>.*)

Resumable units of work (:mod:`.store`) make a killed evaluation restart where it stopped.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from sgm_jax.classifier_experiment import ClassifierExperiment
from sgm_jax.evaluate import conditional_images, conditional_toy, images, tasks, toy

if TYPE_CHECKING:
    from sgm_jax.experiment import Experiment


def suite(experiment: Experiment | ClassifierExperiment) -> ModuleType:
    """The evaluation suite of ``experiment`` (module docstring's table)."""
    if isinstance(experiment, ClassifierExperiment):
        return conditional_toy if experiment.is_toy else conditional_images
    return toy if experiment.is_toy else images


def check_ready(experiment: Experiment | ClassifierExperiment) -> None:
    """Fail now when the evaluation of ``experiment`` could not run (a missing weights or
    reference file), so that ``--mode=train`` fails before its first step, not after it."""
    conditional = isinstance(experiment, ClassifierExperiment)
    score = experiment.score if conditional else experiment
    if not score.is_toy:
        images.check_ready(score, conditional=conditional)


def evaluate(experiment: Experiment | ClassifierExperiment, workdir: str) -> dict[str, Any]:
    """Evaluate the configured checkpoint of the run in ``workdir``; ``ValueError`` when it has
    none. Returns the results that are also written as JSON."""
    return suite(experiment).evaluate(experiment, workdir)


def sample(experiment: Experiment | ClassifierExperiment, workdir: str) -> str:
    """Draw samples of the configured checkpoint, or run the score model's conditional task
    (``sampling.task``, :mod:`.tasks`); returns the ``.npz`` written."""
    if not isinstance(experiment, ClassifierExperiment) and experiment.task is not None:
        return tasks.sample(experiment, workdir)
    return suite(experiment).sample(experiment, workdir)


def statistics(experiment: Experiment) -> str:
    """The training split's Inception statistics (images only), cached; returns their file."""
    if experiment.is_toy:
        raise ValueError(f"--mode=stats computes Inception statistics of an image data set; "
                         f"{experiment.dataset!r} is a 2-D toy set.")
    return images.compute_statistics(experiment)
