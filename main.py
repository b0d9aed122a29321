"""Command-line entry point (DESIGN §3.4).

    python main.py --config=configs/toy/checkerboard_qc.py --mode=train --workdir=runs/cb_qc \
        [--config.training.n_iters=100 ...] [--debug]

``train`` trains (resuming from ``WORKDIR/checkpoints`` when a checkpoint exists) and then
evaluates; ``eval`` evaluates the checkpoint of ``config.eval.checkpoint`` (-1: the latest),
``sample`` draws samples, ``stats`` computes the training split's Inception statistics (image
data; ``eval`` computes them too when they are missing). Multi-host runs initialise
``jax.distributed`` from the environment.

The library's own errors (a bad config field, no checkpoint to evaluate, a data set that is not
prepared, a non-finite loss) are printed as one line, ``error: …``, with exit status 2; any other
exception keeps its traceback. ``--debug`` shows the traceback for every error.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

MODES = ("train", "eval", "sample", "stats")
#: Exceptions that carry a complete message for the user: printed without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).", lock_config=True)
flags.DEFINE_enum("mode", None, MODES, "What to do: train, eval, sample or stats.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, evaluation results.")
flags.DEFINE_bool("debug", False, "Show the full traceback of every error.")
flags.mark_flags_as_required(["config", "mode", "workdir"])


def run(config, mode: str, workdir: str):
    """Build the experiment of ``config`` and run ``mode`` (one of ``MODES``) in ``workdir``;
    returns what the mode's function returns."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}; got {mode!r}.")
    from sgm_jax import config_fields, dlsm, evaluate, train
    from sgm_jax.classifier_experiment import build_classifier_experiment
    from sgm_jax.experiment import build_experiment

    score_experiment = build_experiment(config)
    if mode == "stats":
        return evaluate.statistics(score_experiment)
    if config_fields.has(config, "classifier"):  # DLSM: score model, then classifier (sgm_jax.dlsm)
        experiment = build_classifier_experiment(config, score_experiment)
        fit, assess, draw = dlsm.train_pipeline, dlsm.evaluate, dlsm.sample
    else:
        experiment = score_experiment
        fit, assess, draw = train.train, evaluate.evaluate, evaluate.sample
    if mode == "train":
        fit(experiment, workdir)
        return assess(experiment, workdir)
    if mode == "eval":
        return assess(experiment, workdir)
    return draw(experiment, workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    from sgm_jax import parallel

    parallel.maybe_initialize_distributed()  # before any JAX computation
    try:
        run(FLAGS.config, FLAGS.mode, FLAGS.workdir)
    except USER_ERRORS as err:
        if FLAGS.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
