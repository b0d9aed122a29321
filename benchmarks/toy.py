"""Toy pipeline speed: training throughput of U / C / QC models, ODE-sampler NFE, PC samples/s.

* Training: steps/s of the jitted data-parallel train step on the official toy set-up
  (``configs/toy/checkerboard_{u,c,qc}.py``, batch 5000) for U, C, QC with the exact 2-D
  Jacobian and QC with the Hutchinson estimator; ratios to U measured in the same run.
* ODE NFE: the probability-flow ODE sampler (diffrax Dopri5, rtol = 1e-3 and 1e-5) on the
  trained U and QC models of each dataset (QCSGM reports fewer NFE for QC). Runs are taken from
  ``--runs`` (as written by ``experiments/qcsgm_table1.py``); a missing run is trained first.
* PC: samples/s of the predictor-corrector sampler (reverse diffusion + Langevin, N = 1000) on
  the first dataset's U model.

    python benchmarks/toy.py [--quick] [--runs runs/table1] [--datasets ...] [--json benchmarks/results/toy.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgm_jax import parallel  # noqa: E402
from sgm_jax.evaluate import sampler_from_config  # noqa: E402
from sgm_jax.train import Experiment, load_latest, make_train_step, train  # noqa: E402

VARIANTS = {  # name: (config module, overrides)
    "U": ("checkerboard_u", {}),
    "C": ("checkerboard_c", {}),
    "QC (exact)": ("checkerboard_qc", {}),
    "QC (Hutchinson)": ("checkerboard_qc", {"qc_estimator": "hutchinson"}),
}


def _config(module: str, seed: int = 0, **training):
    config = importlib.import_module(f"configs.toy.{module}").get_config()
    config.seed = seed
    for field, value in training.items():
        config.training[field] = value
    return config


def median_step_seconds(config, repeats: int, warmup: int = 3) -> float:
    """Median wall time of the jitted data-parallel train step of ``config`` after ``warmup`` steps."""
    mesh = parallel.data_mesh()
    experiment = Experiment(config, mesh)
    step = make_train_step(experiment.loss_fn(), experiment.score_model_of_params,
                           experiment.optimizer, config.optim.ema_rate, mesh)
    batch = parallel.shard_batch(experiment.data[: config.training.batch_size], mesh)
    state = jax.jit(experiment.init_state)()
    for _ in range(warmup):  # compile and warm up
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_throughput(repeats: int) -> list[dict]:
    rows = []
    for name, (module, overrides) in VARIANTS.items():
        seconds = median_step_seconds(_config(module, **overrides), repeats)
        rows.append(dict(model=name, ms_per_step=1e3 * seconds, steps_per_s=1.0 / seconds))
        print(f"  train {name:16s} {1e3 * seconds:8.2f} ms/step", file=sys.stderr)
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["ratio_to_u"] = r["ms_per_step"] / base
    return rows


def _trained(dataset: str, model: str, root: str):
    config = _config(f"{dataset}_{model}")
    workdir = os.path.join(root, f"{dataset}_{model}_seed0")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        train(config, workdir)
    state = load_latest(config, workdir)
    experiment = Experiment(config, parallel.data_mesh())
    return config, experiment, experiment.score_model_of_params(state.ema_params)


def ode_nfe(root: str, datasets, num_samples: int) -> list[dict]:
    rows = []
    for dataset in datasets:
        for model in ("u", "qc"):
            config, experiment, score_model = _trained(dataset, model, root)
            config.sampling.num_samples = num_samples
            row = dict(dataset=dataset, model=model.upper())
            for rtol in (1e-3, 1e-5):
                config.sampling.rtol = rtol
                sampler = sampler_from_config(config, experiment.sde)
                _, nfe = jax.jit(lambda k: sampler(score_model, (num_samples, 2), k))(jax.random.PRNGKey(0))
                row[f"nfe_rtol_{rtol:g}"] = int(nfe)
            print(f"  ode {dataset:12s} {model:2s} {row}", file=sys.stderr)
            rows.append(row)
    return rows


def pc_throughput(root: str, dataset: str, num_samples: int) -> dict:
    config, experiment, score_model = _trained(dataset, "u", root)
    config.sampling.method, config.sampling.num_samples = "pc", num_samples
    sampler = sampler_from_config(config, experiment.sde)
    run = jax.jit(lambda k: sampler(score_model, (num_samples, 2), k))
    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    start = time.perf_counter()
    samples, nfe = jax.block_until_ready(run(jax.random.PRNGKey(1)))
    seconds = time.perf_counter() - start
    return dict(num_samples=num_samples, nfe=int(nfe), seconds=seconds, samples_per_s=num_samples / seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, one dataset")
    parser.add_argument("--runs", default="runs/table1", help="trained runs (experiments/qcsgm_table1.py)")
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "spirals", "checkerboard"],
                        choices=["8gaussians", "spirals", "checkerboard"], help="datasets for the NFE table")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "toy.json"))
    args = parser.parse_args(argv)
    datasets = args.datasets[:1] if args.quick else args.datasets
    throughput = training_throughput(5 if args.quick else 20)
    nfe = ode_nfe(args.runs, datasets, 1000 if args.quick else 5000)
    pc = pc_throughput(args.runs, datasets[0], 1000 if args.quick else 5000)

    print(f"\nToy training step, checkerboard, batch 5000, {jax.devices()[0].platform} × {jax.device_count()}")
    print(f"{'model':16s} {'ms/step':>9s} {'steps/s':>8s} {'× U':>6s}")
    for r in throughput:
        print(f"{r['model']:16s} {r['ms_per_step']:9.2f} {r['steps_per_s']:8.2f} {r['ratio_to_u']:6.2f}")
    print("\nProbability-flow ODE sampler NFE (Dopri5 + final denoise), U vs QC")
    print(f"{'dataset':12s} {'model':5s} {'rtol 1e-3':>10s} {'rtol 1e-5':>10s}")
    for r in nfe:
        print(f"{r['dataset']:12s} {r['model']:5s} {r['nfe_rtol_0.001']:10d} {r['nfe_rtol_1e-05']:10d}")
    print(f"\nPC sampler on {datasets[0]} U (reverse diffusion + Langevin, N = 1000, NFE {pc['nfe']}): "
          f"{pc['samples_per_s']:.0f} samples/s ({pc['num_samples']} in {pc['seconds']:.2f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(device=str(jax.devices()[0]), jax=jax.__version__, quick=args.quick,
                       training=throughput, ode_nfe=nfe, pc=pc), f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
