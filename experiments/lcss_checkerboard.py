"""Reproduce the LCSS checkerboard study (Osada et al., NeurIPS 2024, Tables 1–2), with the paper's
time-conditional setting σ = g(t) as a run of its own.

The runs are ``configs/toy/checkerboard_<run>.py`` (the same network and schedule, only the
objective differs; ``lcss_diffusion`` is LCSS with perturbation std g(t) and λ(t) = g(t)², §3.3–§4).

1. Training-step time of every run's config, the library's train step timed interleaved round by
   round (``benchmarks/timing.py``): the median step time and its per-round ratio to DSM (the
   paper's Table 2 order: LCSS ≤ DSM < FD-SSM < SSM).
2. Every run of ``--train`` trained at seed 0, and DSM, LCSS and LCSS σ = g(t) at seeds
   0 … ``--seeds`` − 1, each evaluated with the QCSGM toy protocol (``sgm_jax.evaluate.toy.evaluate``:
   NLL, score error against the Parzen oracle of p_t, Asym / NAsym, precision / recall, sampler
   NFE): the mean ± 95 % Student-t half-width over seeds, and against DSM the mean ± half-width
   of the per-seed (paired) differences.
3. DSM against LCSS at the same seed (their gradients are equal up to rounding,
   ``sgm_jax.sde_loss``): the distance between their parameters after the first step and after
   the last, relative to how far the step, or the whole run, moved DSM's parameters.
4. The seed-0 models' densities (probability-flow ODE on a grid) on one PNG, as the paper's Table 1.

Finished runs and evaluations are cached in ``--workdir`` and reused, and so are the step times;
a "## Distance from the paper" section already in ``--out`` is kept.

    python experiments/lcss_checkerboard.py --seeds 3 --workdir runs/lcss --out docs/results/lcss_checkerboard.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys

import jax
import numpy as np
import optax
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import TrainStepRunner, compare_runners, format_table  # noqa: E402
from benchmarks.toy import train_once  # noqa: E402
from sgm_jax import plots  # noqa: E402
from sgm_jax.evaluate import toy as toy_eval  # noqa: E402
from sgm_jax.checkpoints import init_state, load_checkpoint  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402
from sgm_jax.train import make_update_fn  # noqa: E402
from report import command_line, write_keeping_discussion  # noqa: E402

RUNS = ("ssm", "fd_ssm", "dsm", "lcss", "lcss_diffusion", "esm", "ism")
LABELS = {"ssm": "SSM", "fd_ssm": "FD-SSM", "dsm": "DSM", "lcss": "LCSS",
          "lcss_diffusion": "LCSS, σ = g(t)", "esm": "ESM", "ism": "ISM"}
SEEDED = ("dsm", "lcss", "lcss_diffusion")  # trained at every seed: the comparison with DSM
PAPER_MS = {"ssm": 497, "fd_ssm": 445, "dsm": 430, "lcss": 419}  # LCSS Table 2, checkerboard MLP
METRICS = ("nll", "score_error", "asym", "nasym", "precision", "recall", "nfe")
HEADERS = ("NLL (nats) ↓", "score error ↓", "Asym", "NAsym", "precision ↑", "recall ↑",
           "sampler NFE")


def config_for(run: str, seed: int | None = None, n_iters: int | None = None):
    """``configs/toy/checkerboard_<run>.py``, with ``seed`` and ``training.n_iters`` if given."""
    config = importlib.import_module(f"configs.toy.checkerboard_{run}").get_config()
    if seed is not None:
        config.seed = seed
    if n_iters is not None:
        config.training.n_iters = n_iters
    return config


def step_times(root: str, rounds: int, repeats: int) -> dict:
    """:func:`benchmarks.timing.compare_runners` of every run's train step against DSM, cached in
    ``root/step_times.json`` so that a resumed study reuses it."""
    path = os.path.join(root, "step_times.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    runners = {run: TrainStepRunner(build_experiment(config_for(run))) for run in RUNS}
    result = compare_runners(runners, "dsm", rounds=rounds, repeats=repeats)
    print(format_table(result, "Training step, checkerboard, MLP 2×300, batch 10,000"), flush=True)
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return result


def run_dir(root: str, run: str, seed: int) -> str:
    return os.path.join(root, f"{run}_seed{seed}")


def evaluated(run: str, seed: int, root: str, n_iters: int | None) -> dict:
    """The toy evaluation of the run (trained first if needed), cached in its ``eval`` folder."""
    experiment = build_experiment(config_for(run, seed, n_iters))
    workdir = run_dir(root, run, seed)
    step, _ = train_once(experiment, workdir)
    path = os.path.join(workdir, "eval", f"ckpt_{step}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    results = toy_eval.evaluate(experiment, workdir)
    print(f"  evaluated {run} seed {seed}", flush=True)
    return results


def mean_ci(values) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width of a few values (half-width 0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), 0.0
    half = scipy.stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean()), float(half)


def _distance(a, b) -> float:
    return float(optax.tree.norm(jax.tree.map(lambda x, y: x - y, a, b)))


def first_step_gap(config_a, config_b) -> float:
    """‖θ₁(b) − θ₁(a)‖ / ‖θ₁(a) − θ₀‖ after one library update (``make_update_fn``) of the
    experiment of each config from the same initial state, batch and key (those of ``config_a``)."""
    experiment_a, experiment_b = build_experiment(config_a), build_experiment(config_b)
    start = init_state(experiment_a)
    batch = experiment_a.data.train_batch(0)
    after_a, _ = jax.jit(make_update_fn(experiment_a))(start, batch)
    after_b, _ = jax.jit(make_update_fn(experiment_b))(start, batch)
    return _distance(after_b.params, after_a.params) / _distance(after_a.params, start.params)


def final_gap(run_a: str, run_b: str, seed: int, root: str, n_iters: int | None) -> float:
    """‖θ_T(b) − θ_T(a)‖ / ‖θ_T(a) − θ₀‖ of the two trained runs' last checkpoints."""
    experiment = build_experiment(config_for(run_a, seed, n_iters))
    theta_a = load_checkpoint(experiment, run_dir(root, run_a, seed)).params
    theta_b = load_checkpoint(experiment, run_dir(root, run_b, seed)).params
    theta_0 = experiment.init_params(experiment.keys()["init"])
    return _distance(theta_b, theta_a) / _distance(theta_a, theta_0)


def curve_gaps(run_a: str, run_b: str, seed: int, root: str, tag: str = "grad_norm") -> dict:
    """Relative difference |b − a| / |a| of the logged ``tag`` (means over ``log_freq`` steps) of
    the two runs, at every logged step."""
    a = toy_eval.training_curves(run_dir(root, run_a, seed))[tag]
    b = toy_eval.training_curves(run_dir(root, run_b, seed))[tag]
    return {step: abs(vb - va) / abs(va) for step, va, vb in zip(a[0], a[1], b[1])}


def densities(runs, root: str, n_iters: int | None, side: int):
    panels, extent = {}, None
    for run in runs:
        experiment = build_experiment(config_for(run, 0, n_iters))
        _, score_model = train_once(experiment, run_dir(root, run, 0))
        xs, ys, log_density = toy_eval.density_on_grid(experiment, score_model, side)
        panels[LABELS[run]] = log_density
        extent = (xs[0], xs[-1], ys[0], ys[-1])
    return panels, extent


def _cell(metric: str, mean: float, half: float, signed: bool = False) -> str:
    fmt = "+.3g" if signed else ".3g"
    if metric == "nfe" and not signed:
        fmt = ".1f"
    return f"{mean:{fmt}} ± {half:.2g}" if half else f"{mean:{fmt}}"


def timing_lines(times: dict) -> list[str]:
    steps = times["steps"]
    lines = [
        "## Training-step time", "",
        f"The library's train step of each config, {times['rounds']} interleaved rounds × "
        f"{times['repeats']} runs (1-min load average {times['load_average_before'][0]:.1f} "
        f"before, {times['load_average_after'][0]:.1f} after): median ms and the median (range) "
        "of the per-round ratios to DSM, in wall and in process CPU time.", "",
        "| run | ms/step | × DSM (range) | CPU × DSM (range) | paper ms (Table 2) | paper × DSM |",
        "|---|---|---|---|---|---|",
    ]
    for run in RUNS:
        row, paper = steps[run], PAPER_MS.get(run)
        paper_cells = f"{paper} | {paper / PAPER_MS['dsm']:.2f}" if paper else "— | —"
        lines.append(
            f"| {LABELS[run]} | {row['median_ms']:.1f} | {row['ratio_median']:.2f} "
            f"({row['ratio_min']:.2f}–{row['ratio_max']:.2f}) | {row['cpu_ratio_median']:.2f} "
            f"({row['cpu_ratio_min']:.2f}–{row['cpu_ratio_max']:.2f}) | {paper_cells} |")
    order = sorted(("ssm", "fd_ssm", "dsm", "lcss"), key=lambda r: steps[r]["ratio_median"])
    lines += ["", f"Measured order (fastest first): {' < '.join(order)}; paper: lcss < dsm < "
                  "fd_ssm < ssm.", ""]
    return lines


def quality_lines(results: dict[str, list[dict]]) -> list[str]:
    lines = [
        "## Density-model quality", "",
        "The QCSGM toy protocol (`sgm_jax.evaluate.toy`) on every run: mean ± 95 % Student-t "
        "half-width over the seeds (one seed: no ±). The score error and Asym compare with the "
        "marginal p_t of the SDE at the model's t.", "",
        "| run | seeds | " + " | ".join(HEADERS) + " |", "|---|---|" + "---|" * len(METRICS),
    ]
    for run, per_seed in results.items():
        cells = [_cell(m, *mean_ci([r[m] for r in per_seed])) for m in METRICS]
        lines.append(f"| {LABELS[run]} | {len(per_seed)} | " + " | ".join(cells) + " |")
    compared = [run for run in results if run != "dsm" and len(results[run]) > 1
                and len(results["dsm"]) > 1]
    if compared:
        lines += ["", "Against DSM at the same seed (same data, initialisation and draws): mean "
                      "± 95 % half-width of the per-seed differences run − DSM.", "",
                  "| run − DSM | seeds | " + " | ".join(HEADERS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for run in compared:
            n = min(len(results[run]), len(results["dsm"]))
            cells = [_cell(m, *mean_ci([results[run][i][m] - results["dsm"][i][m]
                                        for i in range(n)]), signed=True) for m in METRICS]
            lines.append(f"| {LABELS[run]} − DSM | {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def identity_lines(first: dict[int, float], final: dict[int, float],
                   curves: dict[int, dict], early: int = 200) -> list[str]:
    lines = [
        "## DSM and LCSS at the same seed", "",
        "Relative parameter distance between the DSM and the LCSS run of one seed after the first "
        "update (÷ the size of DSM's update) and after the last (÷ how far DSM's parameters moved "
        "from their initialisation), and the largest relative difference of the logged gradient "
        f"norm (means over 50 steps) up to step {early} and over the whole run.", "",
        f"| seed | after step 1 | after the last step | grad-norm log, steps ≤ {early} "
        "| grad-norm log, all steps |",
        "|---|---|---|---|---|",
    ]
    for seed in sorted(final):
        gaps = curves[seed]
        head = max(v for step, v in gaps.items() if step <= early)
        lines.append(f"| {seed} | {first[seed]:.1e} | {final[seed]:.1e} | {head:.1e} | "
                     f"{max(gaps.values()):.1e} |")
    return lines + [""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/lcss")
    parser.add_argument("--out", default="docs/results/lcss_checkerboard.md")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds 0 … N−1 of DSM, LCSS and LCSS σ = g(t)")
    parser.add_argument("--train", nargs="*", default=["ssm", "fd_ssm", "dsm", "lcss",
                                                       "lcss_diffusion", "ism"],
                        choices=RUNS, help="runs trained at seed 0 for the density figure")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per round")
    parser.add_argument("--n-iters", type=int, default=None,
                        help="training steps (default: the configs' 1000)")
    parser.add_argument("--grid", type=int, default=60, help="density grid side")
    args = parser.parse_args(argv)
    times = step_times(args.workdir, args.rounds, args.repeats)
    trained = list(dict.fromkeys(["dsm", *args.train]))
    results = {run: [evaluated(run, seed, args.workdir, args.n_iters)
                     for seed in range(args.seeds if run in SEEDED else 1)] for run in trained}
    same_seed = {}
    if "lcss" in trained:
        seeds = range(args.seeds)
        same_seed = dict(
            first={s: first_step_gap(config_for("dsm", s), config_for("lcss", s)) for s in seeds},
            final={s: final_gap("dsm", "lcss", s, args.workdir, args.n_iters) for s in seeds},
            curves={s: curve_gaps("dsm", "lcss", s, args.workdir) for s in seeds})
    panels, extent = densities(trained, args.workdir, args.n_iters, args.grid)
    figure = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                          "lcss_checkerboard_densities.png")
    plots.plot_panels(figure, panels, extent)
    n_iters = args.n_iters or config_for("dsm").training.n_iters
    lines = [
        "# LCSS checkerboard reproduction", "",
        f"Made by `{command_line('experiments/lcss_checkerboard.py')}` on {jax.devices()[0].platform} (JAX "
        f"{jax.__version__}). Network: MLP 2×300 (U parameterisation, conditioned on t), batch "
        f"10,000, VE SDE σ ∈ [0.1, 3]; density models trained for {n_iters} steps. "
        "`LCSS, σ = g(t)` is `configs/toy/checkerboard_lcss_diffusion.py`: LCSS with the "
        "perturbation std g(t) = σ_t·√(2 ln 30) ≈ 2.61 σ_t and λ(t) = g(t)² (the paper's §3.3–§4).",
        "", *timing_lines(times), *quality_lines(results)]
    if same_seed:
        lines += identity_lines(**same_seed)
    lines += ["## Estimated densities", "", "Seed 0, probability-flow ODE log-density on a "
              f"{args.grid}² grid (exact divergence), each panel normalised to its maximum.", "",
              f"![densities]({os.path.basename(figure)})", ""]
    if args.n_iters is not None and args.n_iters < 1000:
        lines += [f"The models were trained for {args.n_iters} of the configs' 1000 steps: "
                  "undertrained; the same command without `--n-iters` trains them fully.", ""]
    write_keeping_discussion(args.out, "\n".join(lines))
    with open(os.path.join(args.workdir, "study.json"), "w") as f:
        json.dump(dict(step_times=times, results=results,
                       same_seed={k: {str(s): v for s, v in d.items()}
                                  for k, d in same_seed.items()}), f, indent=2)
    print(f"wrote {args.out} and {figure}")


if __name__ == "__main__":
    main()
