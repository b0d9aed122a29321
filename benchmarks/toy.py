"""Toy pipeline speed: training step of U / C / QC models, ODE-sampler NFE, PC samples/s.

* Training: the library's train step (``benchmarks.timing.TrainStepRunner`` over the experiment
  of ``configs/toy/checkerboard_{u,c,qc}.py``, batch 5000) for U, C, QC with the exact 2-D
  Jacobian (the toy configs) and QC with the Hutchinson estimator, timed interleaved round by
  round (``benchmarks/timing.py``): median step time and per-round ratio to U with its range.
* ODE NFE: the probability-flow ODE sampler (diffrax Dopri5 at ``sampling.rtol`` 1e-3 and 1e-5)
  on the trained U and QC models of each dataset (QCSGM reports fewer NFE for QC). The runs are
  the seed-0 runs ``<dataset>_<model>_seed0`` of ``--runs`` (as written by
  ``experiments/qcsgm_table1.py``); a missing or unfinished run is trained (or resumed) first.
* PC: samples/s of the predictor-corrector sampler (reverse diffusion + Langevin, N = 1000) on
  the first dataset's U model.

    python benchmarks/toy.py [--quick] [--runs runs/table1] [--datasets ...] [--rounds N]
                             [--out benchmarks/results/toy.json]

``--quick`` (2 rounds, batch 500, one dataset, 500 samples, missing runs trained for 100 steps
only) checks that the script runs; point its ``--runs`` at a scratch folder.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Callable

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import (TrainStepRunner, compare_runners, format_table,  # noqa: E402
                               write_json)
from sgm_jax.checkpoints import restore_score_model  # noqa: E402
from sgm_jax.experiment import Experiment, build_experiment  # noqa: E402
from sgm_jax.train import train  # noqa: E402

DATASETS = ("8gaussians", "spirals", "checkerboard")
VARIANTS = {  # name: (config module, training overrides)
    "U": ("checkerboard_u", {}),
    "C": ("checkerboard_c", {}),
    "QC (exact)": ("checkerboard_qc", {}),
    "QC (Hutchinson)": ("checkerboard_qc", {"qc_estimator": "hutchinson"}),
}
RTOLS = (1e-3, 1e-5)
QUICK_N_ITERS = 100


def toy_config(module: str, seed: int = 0, **training):
    """``configs/toy/<module>.py`` with ``seed`` and the training overrides."""
    config = importlib.import_module(f"configs.toy.{module}").get_config()
    config.seed = seed
    config.training.update(training)
    return config


def training_table(quick: bool, rounds: int) -> dict:
    runners = {}
    for name, (module, overrides) in VARIANTS.items():
        if quick:
            overrides = {**overrides, "batch_size": 500}
        runners[name] = TrainStepRunner(build_experiment(toy_config(module, **overrides)))
    result = compare_runners(runners, "U", rounds=rounds, repeats=1 if quick else 5)
    batch = 500 if quick else 5000
    print(format_table(result, f"\nToy training step, checkerboard, batch {batch}, "
                               f"{jax.devices()[0].platform} × {jax.device_count()}"), flush=True)
    return result


def train_once(experiment: Experiment, workdir: str) -> tuple[int, Callable]:
    """``(step, score_model)`` of the last checkpoint of the run in ``workdir`` (its EMA score
    model), trained or resumed first when that checkpoint is before ``training.n_iters`` or
    missing. A finished run is only read (``train`` would reload it too, but rewrite its
    ``config.json`` and open new logs)."""
    try:
        step, score_model = restore_score_model(experiment, workdir)
    except ValueError:  # no checkpoint yet
        step = -1
    if step < experiment.training.n_iters:
        train(experiment, workdir)
        step, score_model = restore_score_model(experiment, workdir)
    return step, score_model


def trained(dataset: str, model: str, root: str, quick: bool, **sampling):
    """``(experiment, score_model)`` of the seed-0 run of ``configs/toy/<dataset>_<model>.py``
    in ``root`` (:func:`train_once`; ``QUICK_N_ITERS`` steps when quick), the experiment built
    with the ``sampling`` overrides."""
    config = toy_config(f"{dataset}_{model}", **({"n_iters": QUICK_N_ITERS} if quick else {}))
    config.sampling.update(sampling)
    experiment = build_experiment(config)
    _, score_model = train_once(experiment, os.path.join(root, f"{dataset}_{model}_seed0"))
    return experiment, score_model


def _sample(experiment, score_model, num_samples: int, key):
    shape = (num_samples, *experiment.event_shape)
    return jax.jit(lambda k: experiment.sampler(score_model, shape, k))(key)


def ode_nfe(root: str, datasets, num_samples: int, quick: bool) -> list[dict]:
    rows = []
    for dataset in datasets:
        for model in ("u", "qc"):
            row = dict(dataset=dataset, model=model.upper())
            for rtol in RTOLS:
                experiment, score_model = trained(dataset, model, root, quick, method="ode",
                                                  rtol=rtol)
                _, nfe = _sample(experiment, score_model, num_samples, jax.random.PRNGKey(0))
                row[f"nfe_rtol_{rtol:g}"] = int(nfe)
            print(f"  ode {dataset:12s} {model:2s} {row}", flush=True)
            rows.append(row)
    return rows


def pc_throughput(root: str, dataset: str, num_samples: int, quick: bool) -> dict:
    experiment, score_model = trained(dataset, "u", root, quick, method="pc")
    jax.block_until_ready(_sample(experiment, score_model, num_samples, jax.random.PRNGKey(0)))
    start = time.perf_counter()
    _, nfe = jax.block_until_ready(_sample(experiment, score_model, num_samples,
                                           jax.random.PRNGKey(1)))
    seconds = time.perf_counter() - start
    return dict(num_samples=num_samples, nfe=int(nfe), seconds=seconds,
                samples_per_s=num_samples / seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds, batch 500, one dataset, 500 samples, 100-step runs")
    parser.add_argument("--runs", default="runs/table1",
                        help="trained runs (experiments/qcsgm_table1.py)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                        help="datasets for the NFE table")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 10, quick 2)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "toy.json"))
    args = parser.parse_args(argv)
    datasets = args.datasets[:1] if args.quick else args.datasets
    num_samples = 500 if args.quick else 5000
    training = training_table(args.quick, args.rounds or (2 if args.quick else 10))
    nfe = ode_nfe(args.runs, datasets, num_samples, args.quick)
    pc = pc_throughput(args.runs, datasets[0], num_samples, args.quick)

    print("\nProbability-flow ODE sampler NFE (Dopri5 + final denoise), U vs QC")
    print(f"{'dataset':12s} {'model':5s} " + " ".join(f"{f'rtol {r:g}':>10s}" for r in RTOLS))
    for r in nfe:
        print(f"{r['dataset']:12s} {r['model']:5s} "
              + " ".join(f"{r[f'nfe_rtol_{rtol:g}']:10d}" for rtol in RTOLS))
    print(f"\nPC sampler on {datasets[0]} U (reverse diffusion + Langevin, N = 1000, NFE "
          f"{pc['nfe']}): {pc['samples_per_s']:.0f} samples/s ({pc['num_samples']} in "
          f"{pc['seconds']:.2f} s)")
    write_json(args.out, dict(quick=args.quick, training=training, ode_nfe=nfe, pc=pc))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
