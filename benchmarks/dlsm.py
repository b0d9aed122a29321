"""DLSM speed: the classifier's train step under each objective, and the cost of guided
(conditional) sampling over unconditional sampling.

* Classifier step: the library's train step (``benchmarks.timing.TrainStepRunner`` over
  ``build_classifier_experiment``) of the same classifier and batch trained with L_CE, L_DLSM and
  L_Total (``classifier.training.objective``), timed interleaved round by round; the ratio to CE
  is the median of the per-round ratios with its range. DLSM needs, per step, a forward pass of
  the frozen score model and the classifier's input gradient (then differentiated once more for
  the parameters); the target is total ≤ 2.5× CE.
* Sampling: the configured predictor-corrector sampler (``sde.num_scales`` steps, each one
  predictor and one corrector evaluation) with the unconditional score s(x, t) against the
  posterior score s + α ∇ log p(y | x, t) (:mod:`sgm_jax.guidance`), interleaved; the ratio is
  per sampling step, since both run the same steps. Target ≤ 1.5×.

* Full CIFAR-10 size (``--flops``): XLA's FLOP count (``jit(...).lower(...).cost_analysis()``, no
  compilation, no data) of the classifier steps and of one posterior-score evaluation of
  ``configs/dlsm/cifar10_dlsm.py`` (NCSN++ deep and the conditional ResNet-18 at width 64, one
  32×32 image), through the library's loss and guidance functions: the ratios the steps would
  have where the arithmetic dominates (a GPU at full width), which the CPU cannot time.

Setups: ``moons`` (``configs/dlsm/moons_*.py``: the official toy MLPs, batch 4,000) and
``digits`` (``configs/dlsm/digits_*.py``: NCSN++ at nf 16 and the conditional ResNet-18 of the
digits demonstration, 16×16 images). Parameters are the networks' initial ones (the speed does
not depend on training).

    python benchmarks/dlsm.py [--setups moons digits] [--rounds 10] [--quick] [--flops]
                              [--out benchmarks/results/dlsm.json]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import (TrainStepRunner, compare, compare_runners,  # noqa: E402
                               format_table, gflops, write_json)
from sgm_jax import classifier_loss, models  # noqa: E402
from sgm_jax.classifier_experiment import build_classifier_experiment  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402

SETUPS = ("moons", "digits")
OBJECTIVES = {"ce": "base", "dlsm": "dlsm", "total": "dlsm"}  # objective: a guidance it allows
SAMPLING_STEPS = 20


def classifier_config(setup: str, objective: str, quick: bool):
    method = OBJECTIVES[objective]
    config = importlib.import_module(f"configs.dlsm.{setup}_{method}").get_config()
    config.classifier.training.objective = objective
    config.sde.num_scales = SAMPLING_STEPS
    if quick:
        config.classifier.training.batch_size = 64 if setup == "moons" else 8
    return config


def classifier_table(setup: str, rounds: int, quick: bool) -> dict:
    runners = {}
    for objective in OBJECTIVES:
        experiment = build_classifier_experiment(classifier_config(setup, objective, quick))
        frozen = experiment.score.init_params(experiment.score.keys()["init"])
        runners[objective] = TrainStepRunner(experiment, frozen=frozen)
    batch = experiment.training.batch_size
    result = compare_runners(runners, "ce", rounds=rounds, repeats=3)
    print(format_table(result, f"{setup}: classifier train step, batch {batch} (× CE)"))
    return {"batch_size": batch, **result}


def sampling_table(setup: str, rounds: int, quick: bool) -> dict:
    experiment = build_classifier_experiment(classifier_config(setup, "total", quick))
    score = experiment.score
    score_params = score.init_params(score.keys()["init"])
    params = experiment.init_params(experiment.keys()["init"])
    batch = 256 if quick else experiment.evaluation.batch_size
    if setup == "digits":
        batch = 8 if quick else 32
    shape = (batch, *experiment.event_shape)
    labels = jnp.arange(batch, dtype=jnp.int32) % experiment.num_classes
    unconditional = jax.jit(lambda k: score.sampler(score.score_model(score_params), shape, k))
    conditional = jax.jit(lambda k: score.sampler(
        experiment.posterior_score_model(score_params, params, labels), shape, k))
    key = jax.random.PRNGKey(0)
    result = compare({"unconditional": lambda: unconditional(key),
                      "conditional": lambda: conditional(key)}, "unconditional",
                     rounds=rounds, repeats=2)
    print(format_table(result, f"{setup}: PC sampling, {SAMPLING_STEPS} steps of {batch} samples "
                               "(× unconditional)"))
    return {"batch_size": batch, "steps": SAMPLING_STEPS, **result}


def _gflops(fn, *args) -> float:
    return gflops(jax.jit(fn).lower(*args))


def flops_table() -> dict:
    """GFLOP per image of the CIFAR-10 DLSM steps (module docstring), of the networks and losses
    the experiment builders make (nothing is loaded)."""
    config = importlib.import_module("configs.dlsm.cifar10_dlsm").get_config()
    score = build_experiment(config, num_devices=1)
    experiment = build_classifier_experiment(config, score, num_devices=1)
    size, channels = config.data.image_size, config.data.num_channels
    x = jnp.zeros((1, size, size, channels), jnp.float32)
    t, y, key = jnp.full((1,), 0.5), jnp.zeros((1,), jnp.int32), jax.random.PRNGKey(0)
    score_variables = jax.eval_shape(score.init_params, key)
    params, model_state = models.split_variables(
        jax.eval_shape(experiment.init_params, key))
    batch = {"x": x, "label": y}
    options = {k: v for k, v in experiment.loss_settings.items() if k != "objective"}

    def step(objective):
        loss_fn = classifier_loss.get_classifier_loss_fn(score.sde, objective, **options)
        return lambda q, s, p: jax.grad(lambda r: experiment.batch_loss(
            r, batch, key, model_state=s, loss_fn=loss_fn, frozen=p, dropout_key=key)[0])(q)

    steps = {objective: _gflops(step(objective), params, model_state, score_variables)
             for objective in ("ce", "dlsm", "total")}
    evals = {"unconditional": _gflops(lambda p: score.score_model(p)(x, t), score_variables),
             "conditional": _gflops(lambda p, q: experiment.posterior_score_model(p, q, y)(x, t),
                                    score_variables, {**params, **model_state})}
    result = {"classifier_step_gflop": steps, "ratio_total_to_ce": steps["total"] / steps["ce"],
              "score_eval_gflop": evals,
              "ratio_conditional_to_unconditional": evals["conditional"] / evals["unconditional"]}
    print("CIFAR-10 DLSM at full size, GFLOP per image (XLA cost analysis)")
    for name, value in {**steps, **evals}.items():
        print(f"  {name:14s} {value:9.2f}")
    print(f"  total / ce = {result['ratio_total_to_ce']:.2f}; conditional / unconditional = "
          f"{result['ratio_conditional_to_unconditional']:.3f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 rounds, small batches")
    parser.add_argument("--flops", action="store_true",
                        help="also the FLOP counts of the full-size CIFAR-10 steps")
    parser.add_argument("--out", default="benchmarks/results/dlsm.json")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    results = {setup: {"classifier": classifier_table(setup, rounds, args.quick),
                       "sampling": sampling_table(setup, rounds, args.quick)}
               for setup in args.setups}
    if args.flops:
        results["cifar10_flops"] = flops_table()
    write_json(args.out, {"quick": args.quick, **results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
