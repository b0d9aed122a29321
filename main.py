"""Command-line entry point (DESIGN §3.4).

    python main.py --config=configs/toy/checkerboard_qc.py --mode=train --workdir=runs/cb_qc \
        [--config.training.n_iters=100 ...] [--debug]

``train`` trains (resuming from ``WORKDIR/checkpoints`` when a checkpoint exists), and evaluates
when ``training.evaluate_after`` is set (the toy configs; image configs keep training and
evaluation apart, as score_sde): everything the run needs (its data, a writable workdir, the
evaluation's weight files) is checked before the first step; ``eval`` evaluates the checkpoint of ``config.eval.checkpoint`` (-1: the latest),
``sample`` draws samples, ``stats`` computes the training split's Inception statistics (image
data; ``eval`` computes them too when they are missing). Multi-host runs initialise
``jax.distributed`` from the environment.

The library's own errors (a bad config field, no checkpoint to evaluate, a data set that is not
prepared, a non-finite loss) are printed as one line, ``error: …``, with exit status 2; any other
exception keeps its traceback. ``--debug`` shows the traceback for every error.

Compiled programs are kept in ``WORKDIR/compilation_cache`` (JAX's persistent compilation
cache; ``JAX_COMPILATION_CACHE_DIR``, when set, names the folder instead), so that a resumed run
or a later evaluation of the same workdir loads its train step instead of compiling it again;
``--nocompilation_cache`` turns this off.

Memory that a compiled program frees stays in the process for its next execution
(:mod:`sgm_jax.host_memory`: no page faults between the steps of a CPU run) where the config's
``keep_freed_host_memory`` says so (every config but the digits ones, whose small programs run
faster with glibc's ``malloc`` at its defaults); ``--keep_freed_host_memory`` /
``--nokeep_freed_host_memory`` override the config. Where the config's ``xla_cpu_ynn_elementwise``
says so (the image configs but digits), XLA:CPU runs elementwise fusions through YNNPACK too
(:mod:`sgm_jax.xla_cpu`); ``--[no]xla_cpu_ynn_elementwise`` overrides the config.
"""

import os
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
flags.DEFINE_bool("compilation_cache", True,
                  "Keep compiled programs in WORKDIR/compilation_cache (or "
                  "JAX_COMPILATION_CACHE_DIR when set) and load them from there in later runs.")
flags.DEFINE_bool("keep_freed_host_memory", None,
                  "Keep the memory that compiled programs free in the process for their next "
                  "execution (sgm_jax.host_memory; glibc only); unset: as the config's "
                  "keep_freed_host_memory says.")
flags.DEFINE_bool("xla_cpu_ynn_elementwise", None,
                  "XLA:CPU runs elementwise fusions through YNNPACK too (sgm_jax.xla_cpu); unset: "
                  "as the config's xla_cpu_ynn_elementwise says.")
flags.mark_flags_as_required(["config", "mode", "workdir"])


def run(config, mode: str, workdir: str):
    """Build the experiment of ``config`` and run ``mode`` (one of ``MODES``) in ``workdir``;
    returns what the mode's function returns."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}; got {mode!r}.")
    from sgm_jax import config_fields, dlsm, evaluate, train
    from sgm_jax.classifier_experiment import build_classifier_experiment
    from sgm_jax.experiment import build_experiment

    experiment = build_experiment(config)
    if mode == "stats":
        return evaluate.statistics(experiment)
    fit = train.train
    if config_fields.has(config, "classifier"):  # DLSM: score model, then classifier (sgm_jax.dlsm)
        experiment, fit = build_classifier_experiment(config, experiment), dlsm.train_pipeline
    if mode == "eval":
        return evaluate.evaluate(experiment, workdir)
    if mode == "sample":
        return evaluate.sample(experiment, workdir)
    if experiment.training.evaluate_after:
        evaluate.check_ready(experiment)
    fit(experiment, workdir, config_json=config.to_json_best_effort(indent=2))
    return evaluate.evaluate(experiment, workdir) if experiment.training.evaluate_after else None


def use_compilation_cache(workdir: str, enabled: bool = True) -> str | None:
    """Point JAX's persistent compilation cache at ``WORKDIR/compilation_cache`` (or leave it at
    ``JAX_COMPILATION_CACHE_DIR`` when that is set), or turn it off (``enabled`` False); returns
    the folder in use, None when off. Call it before anything is compiled.

    Programs that took at least JAX's ``persistent_cache_min_compile_time_secs`` (1 s) to compile
    are written, by process 0 only on several hosts; programs with host callbacks (every diffrax
    solve) are never cached (BUILD.md, "Evaluation")."""
    import jax

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(workdir, "compilation_cache")
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    from sgm_jax import host_memory, parallel, xla_cpu

    try:  # the process settings before JAX starts its threads and backends
        if host_memory.configured(FLAGS.config, FLAGS.keep_freed_host_memory):
            host_memory.keep_freed_host_memory()
        if xla_cpu.configured(FLAGS.config, FLAGS.xla_cpu_ynn_elementwise):
            xla_cpu.use_ynn_elementwise_fusions()
        parallel.maybe_initialize_distributed()  # before any JAX computation
        use_compilation_cache(FLAGS.workdir, FLAGS.compilation_cache)
        run(FLAGS.config, FLAGS.mode, FLAGS.workdir)
    except USER_ERRORS as err:
        if FLAGS.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
