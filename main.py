"""Command-line entry point (DESIGN §3.4).

    python main.py --config=configs/toy/checkerboard_qc.py --mode=train --workdir=runs/cb_qc \
        [--config.training.n_iters=100 ...]

``train`` trains (resuming from ``WORKDIR/checkpoints`` when a checkpoint exists) and then
evaluates; ``eval`` evaluates the checkpoint of ``config.eval.checkpoint`` (-1: the latest) and
``sample`` draws samples. Multi-host runs initialise ``jax.distributed`` from the environment.
"""

from absl import app, flags
from ml_collections import config_flags

MODES = ("train", "eval", "sample")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).", lock_config=True)
flags.DEFINE_enum("mode", None, MODES, "What to do: train, eval or sample.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, evaluation results.")
flags.mark_flags_as_required(["config", "mode", "workdir"])


def run(config, mode: str, workdir: str):
    """Dispatch ``mode`` (one of ``MODES``); returns what the mode's function returns."""
    from sgm_jax import evaluate, train

    if mode == "train":
        train.train(config, workdir)
        return evaluate.evaluate(config, workdir)
    if mode == "eval":
        return evaluate.evaluate(config, workdir)
    if mode == "sample":
        return evaluate.sample(config, workdir)
    raise ValueError(f"--mode must be one of {MODES}; got {mode!r}.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    from sgm_jax import parallel

    parallel.maybe_initialize_distributed()  # before any JAX computation
    run(FLAGS.config, FLAGS.mode, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
