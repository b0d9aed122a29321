"""Training-step cost of the objectives of ``get_sde_loss_fn`` and of the QC schedules, timed
interleaved.

Every step is the library's own train step (``benchmarks.timing.TrainStepRunner``:
``sgm_jax.train.make_train_step`` over ``make_update_fn`` of the experiment that
``build_experiment`` makes of a config), so what is timed is what ``main.py --mode=train`` runs:
the gradient of the experiment's loss (``sgm_jax.sde_loss.get_sde_loss_fn``), the optimiser
(clipping, Adam) and the EMA. Steps are compared round by round (``benchmarks/timing.py``): each
row gives the median time and the median, min and max of its per-round ratio to DSM. Two set-ups,
only ``config.training`` differs between the rows of one set-up:

* ``conv``: ``small_conv`` (nf 32, ch_mult (1, 2, 2)) on 32×32×3 images, batch 64, the QCSGM
  CIFAR-10 settings otherwise (``configs/default_cifar10.py``: VE σ ∈ [0.01, 50], U
  parameterisation s = f/σ_t conditioned on log σ_t, clipping 1, Adam, EMA); tfds mock images
  (the pixel values do not change the cost), QC weight 1e-4 with one Rademacher probe;
* ``toy``: the QCSGM toy set-up (``configs/toy/checkerboard_u.py``: the official toy network,
  2-D, batch 5000, VE σ ∈ [0.1, 3]), QC weight 0.05 with the exact 2×2 Jacobian (as the toy QC
  configs).

Tables:

* ``objectives``: DSM, LCSS (the DSM computation up to a constant, so its ratio shows how far the
  machine's noise reaches), LCSS with σ = g(t) (``training.perturbation = "diffusion"``),
  SSM-VR (one Rademacher probe), FD-SSM (ε = 0.01); on the toy set-up also ISM (exact trace)
  and ESM (the Parzen score of all training points at every step). One step per timed call.
* ``qc``: DSM, DSM + QC, DSM + QC on a quarter of each device's examples
  (``training.qc_fraction = 0.25``) and lazy QC (``training.qc_every = 4``: the QC term with
  weight × 4 on one step of four). Each timed call is 4 consecutive steps (one cycle of the
  lazy schedule) for every row, so the ratio of the lazy row is the amortised one; ``ms/step``
  is the call's time / 4. On the conv set-up also a hand-written reference
  (:func:`reference_qc_loss`): the same experiment whose loss is only DSM + λσ²(‖Jᵀv‖² −
  (Jᵀv)·(Jv)), from one ``jax.linearize`` and its ``jax.linear_transpose``, so that any cost of
  the library's loss beyond the arithmetic shows as a gap between the two rows.

Every row also gives XLA's FLOP count per step against DSM's (``FLOP ×``): where the time ratio
is close to it, the step runs at the speed its arithmetic allows.

    python benchmarks/losses.py [--quick] [--setups conv toy] [--tables objectives qc]
                                [--rounds N] [--out benchmarks/results/losses.json]

A JSON already at ``--out`` keeps the (set-up, table) pairs this run did not measure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import (TrainStepRunner, compare_runners, format_table,  # noqa: E402
                               image_data, write_json)
from configs.default_cifar10 import get_default_configs as cifar10_defaults  # noqa: E402
from configs.toy.checkerboard_u import get_config as toy_u_config  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402

SETUPS = ("conv", "toy")
TABLES = ("objectives", "qc")
QC_CYCLE = 4  # steps per timed call of the qc table: one cycle of qc_every = 4
REFERENCE_ROW = "dsm + qc, hand-written"
QC_WEIGHT = {"conv": 1e-4, "toy": 0.05}  # QCSGM's CIFAR-10 λ; the toy configs' (official λ 0.1)
OBJECTIVES = {  # row: training overrides
    "dsm": {},
    "lcss": {"objective": "lcss"},
    "lcss, σ = g(t)": {"objective": "lcss", "perturbation": "diffusion",
                       "weighting": "likelihood"},
    "ssm": {"objective": "ssm"},
    "fd_ssm": {"objective": "fd_ssm"},
    "ism": {"objective": "ism"},
    "esm": {"objective": "esm"},
}
SKIPPED = {"conv": {"ism": "exact trace: D = 3072 JVPs per example",
                    "esm": "toy data only: the Parzen target sums over the whole training set"},
           "toy": {}}
NOTES = {"ssm": "SSM-VR, one Rademacher probe", "fd_ssm": "ε = 0.01",
         "lcss, σ = g(t)": "perturbation 'diffusion', λ = g(t)²"}


def qc_rows(setup: str) -> dict[str, dict]:
    weight = QC_WEIGHT[setup]
    return {
        "dsm": {},
        "dsm + qc": {"qc_weight": weight},
        "dsm + qc, qc_fraction 0.25": {"qc_weight": weight, "qc_fraction": 0.25},
        "dsm + qc, qc_every 4": {"qc_weight": weight, "qc_every": QC_CYCLE},
    }


def reference_qc_loss(experiment, qc_weight: float):
    """DSM + ``qc_weight``·σ²(‖Jᵀv‖² − (Jᵀv)·(Jv)) written out for the conv set-up (VE, σ² weighting,
    s = f/σ): t, z and one Rademacher probe v per example, one ``jax.linearize`` of the score at
    x̃ for s and Jv, its transpose for Jᵀv; no parameterisation checks, aux terms or probe axis.
    A loss of ``get_sde_loss_fn``'s signature, timed as the library's fused QC step's reference."""
    sde = experiment.sde

    def loss_fn(score_model, x0, key):
        kt, kz, kv = jax.random.split(key, 3)
        t = jax.random.uniform(kt, (x0.shape[0],), x0.dtype, 1e-5, sde.T)
        mean, std = sde.marginal_prob(x0, t)
        sigma = std.reshape((-1,) + (1,) * (x0.ndim - 1))
        z = jax.random.normal(kz, x0.shape, x0.dtype)
        x = mean + sigma * z
        s, jvp_fn = jax.linearize(lambda y: score_model(y, t), x)
        v = jax.random.rademacher(kv, x.shape, x.dtype)
        jv, jtv = jvp_fn(v), jax.linear_transpose(jvp_fn, x)(v)[0]
        axes = tuple(range(1, x0.ndim))
        objective = jnp.mean(0.5 * jnp.sum((sigma * s + z) ** 2, axis=axes))
        qc = jnp.mean(std**2 * jnp.sum(jtv * (jtv - jv), axis=axes))
        loss = objective + qc_weight * qc
        return loss, {"loss": loss, "objective": objective, "qc": qc}

    return loss_fn


def conv_config(batch: int, nf: int) -> ml_collections.ConfigDict:
    """``configs/default_cifar10.py`` with ``small_conv`` as the network."""
    config = cifar10_defaults()
    config.model = ml_collections.ConfigDict(dict(
        name="small_conv", parameterisation="scale_by_sigma", condition="log_sigma", nf=nf,
        ch_mult=(1, 2, 2)))
    config.training.batch_size = batch
    config.training.n_jitted_steps = 1
    return config


def toy_config(batch: int, num_points: int) -> ml_collections.ConfigDict:
    config = toy_u_config()
    config.training.batch_size = batch
    config.data.num_points = num_points
    return config


def base_config(setup: str, quick: bool) -> ml_collections.ConfigDict:
    if setup == "conv":
        return conv_config(batch=8 if quick else 64, nf=16 if quick else 32)
    return toy_config(batch=500 if quick else 5000, num_points=5000 if quick else 50_000)


def runners(setup: str, rows: dict[str, dict], quick: bool, calls: int) -> dict:
    """One :class:`TrainStepRunner` per row: the set-up's config with the row's training
    overrides, ``calls`` steps per timed call."""
    built = {}
    for name, overrides in rows.items():
        config = base_config(setup, quick)
        config.training.update(overrides)
        with image_data(setup == "conv", config.training.batch_size):
            built[name] = TrainStepRunner(build_experiment(config), calls=calls)
        print(f"  {setup} {name}: compiled in {built[name].compile_seconds:.1f} s", flush=True)
    return built


def _title(setup: str, quick: bool, what: str) -> str:
    config = base_config(setup, quick)
    shape = "32×32×3" if setup == "conv" else "2-D"
    network = f"small_conv nf {config.model.nf}" if setup == "conv" else config.model.name
    return f"\n{setup}: {what}, {network}, {shape}, batch {config.training.batch_size}"


def objective_table(setup: str, quick: bool, rounds: int, repeats: int) -> dict:
    rows = {k: v for k, v in OBJECTIVES.items() if k not in SKIPPED[setup]}
    result = compare_runners(runners(setup, rows, quick, calls=1), "dsm", rounds=rounds,
                             repeats=repeats)
    result["skipped"] = SKIPPED[setup]
    skipped = "".join(f"\n{name:26s} skipped: {why}" for name, why in SKIPPED[setup].items())
    print(format_table(result, _title(setup, quick, "training step per objective"), NOTES)
          + skipped, flush=True)
    return result


def qc_table(setup: str, quick: bool, rounds: int, repeats: int) -> dict:
    built = runners(setup, qc_rows(setup), quick, calls=QC_CYCLE)
    if setup == "conv":
        config = base_config(setup, quick)
        with image_data(setup == "conv", config.training.batch_size):
            dsm = build_experiment(config)
        reference = dataclasses.replace(dsm, qc_loss_fn=reference_qc_loss(dsm, QC_WEIGHT[setup]))
        built[REFERENCE_ROW] = TrainStepRunner(reference, calls=QC_CYCLE)
    result = compare_runners(built, "dsm", rounds=rounds, repeats=repeats, warmup=1)
    notes = {name: f"{row['ms_per_step']:.1f} ms/step" for name, row in result["steps"].items()}
    title = _title(setup, quick, f"QC schedules, {QC_CYCLE} steps per timed call, "
                                 f"QC weight {QC_WEIGHT[setup]:g}")
    print(format_table(result, title, notes), flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (conv: batch 8, nf 16; toy: batch 500) and 2 rounds")
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--rounds", type=int,
                        help="interleaved rounds (default: conv 5, toy 10; quick 2)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "losses.json"))
    args = parser.parse_args(argv)
    results = {}
    for setup in args.setups:
        rounds = args.rounds or (2 if args.quick else {"conv": 5, "toy": 10}[setup])
        repeats = 1 if args.quick or setup == "conv" else 3
        tables = {}
        if "objectives" in args.tables:
            tables["objectives"] = objective_table(setup, args.quick, rounds, repeats)
        if "qc" in args.tables:
            tables["qc"] = qc_table(setup, args.quick, rounds, repeats)
        results[setup] = {name: {**table, "quick": args.quick} for name, table in tables.items()}
    if os.path.exists(args.out):  # keep what this run did not measure
        with open(args.out) as f:
            previous = json.load(f)
        for setup in SETUPS:
            if isinstance(previous.get(setup), dict):
                results[setup] = {**previous[setup], **results.get(setup, {})}
    write_json(args.out, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
