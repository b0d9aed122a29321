"""Reproduce the LCSS checkerboard study (Osada et al., NeurIPS 2024, Tables 1–2).

1. Training-step time of SSM, FD-SSM, DSM, LCSS, ESM and ISM side by side in one run, as ratios
   to DSM (the paper's Table 2 order: LCSS ≤ DSM < FD-SSM < SSM).
2. Each objective trained with ``configs/toy/checkerboard_<objective>.py`` (same network, only
   the objective differs) and its estimated density (probability-flow ODE) on one PNG, as the
   paper's Table 1 figure.

    python experiments/lcss_checkerboard.py --workdir runs/lcss --out docs/results/lcss_checkerboard.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.toy import median_step_seconds  # noqa: E402
from sgm_jax import parallel, plots  # noqa: E402
from sgm_jax.evaluate import density_on_grid  # noqa: E402
from sgm_jax.train import Experiment, load_latest, train  # noqa: E402
from report import write_keeping_discussion  # noqa: E402

TIMED = ("ssm", "fd_ssm", "dsm", "lcss", "esm", "ism")
PAPER_MS = {"ssm": 497, "fd_ssm": 445, "dsm": 430, "lcss": 419}  # LCSS Table 2, checkerboard MLP


def config_for(objective: str):
    return importlib.import_module(f"configs.toy.checkerboard_{objective}").get_config()


def step_times(repeats: int) -> dict[str, float]:
    """Median seconds per train step of each objective, all measured in this process."""
    times = {}
    for objective in TIMED:
        # ESM sums over all 50,000 points at every step: fewer repeats keep the study short
        n = repeats if objective != "esm" else max(2, repeats // 5)
        times[objective] = median_step_seconds(config_for(objective), n, warmup=2)
        print(f"  {objective:7s} {1e3 * times[objective]:9.2f} ms/step", flush=True)
    return times


def cached_step_times(root: str, repeats: int) -> dict[str, float]:
    """:func:`step_times`, kept in ``root/step_times.json`` so a resumed study reuses them."""
    path = os.path.join(root, "step_times.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    times = step_times(repeats)
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        json.dump(times, f)
    return times


def densities(objectives, root: str, n_iters: int | None):
    panels, extent = {}, None
    for objective in objectives:
        config = config_for(objective)
        if n_iters is not None:
            config.training.n_iters = n_iters
        workdir = os.path.join(root, objective)
        train(config, workdir)  # resumes; a finished run only reloads
        experiment = Experiment(config, parallel.data_mesh())
        score_model = experiment.score_model_of_params(load_latest(config, workdir).ema_params)
        xs, ys, log_density = density_on_grid(config, experiment.sde, score_model, experiment.data)
        panels[objective.upper().replace("_", "-")] = log_density
        extent = (xs[0], xs[-1], ys[0], ys[-1])
        print(f"  trained {objective}", flush=True)
    return panels, extent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/lcss")
    parser.add_argument("--out", default="docs/results/lcss_checkerboard.md")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--n-iters", type=int, default=None,
                        help="training steps for the density figure (default: the configs' 1000)")
    parser.add_argument("--train", nargs="*", default=["ssm", "fd_ssm", "dsm", "lcss", "ism"],
                        choices=TIMED, help="objectives to train for the density figure")
    args = parser.parse_args(argv)
    times = cached_step_times(args.workdir, args.repeats)
    panels, extent = densities(args.train, args.workdir, args.n_iters)
    figure = os.path.join(os.path.dirname(os.path.abspath(args.out)), "lcss_checkerboard_densities.png")
    plots.plot_panels(figure, panels, extent)
    dsm = times["dsm"]
    lines = [
        "# LCSS checkerboard reproduction", "",
        f"Made by `python {' '.join(sys.argv)}` on {jax.devices()[0].platform} "
        f"(JAX {jax.__version__}). Network: MLP 2×300 (U parameterisation), batch 10,000; density "
        f"models trained for {args.n_iters or 1000} steps.", "",
        "## Training-step time (median, one run)", "",
        "| objective | ms/step | × DSM | paper ms (Table 2) | paper × DSM |", "|---|---|---|---|---|",
    ]
    for objective in TIMED:
        paper = PAPER_MS.get(objective)
        paper_cells = f"{paper} | {paper / PAPER_MS['dsm']:.2f}" if paper else "— | —"
        lines.append(f"| {objective} | {1e3 * times[objective]:.2f} | {times[objective] / dsm:.2f} | {paper_cells} |")
    order = sorted(("ssm", "fd_ssm", "dsm", "lcss"), key=times.get)
    lines += ["", f"Measured order (fastest first): {' < '.join(order)}; paper: lcss < dsm < fd_ssm < ssm.", "",
              "## Estimated densities", "", f"![densities]({os.path.basename(figure)})", ""]
    if args.n_iters is not None and args.n_iters < 1000:
        lines += [f"The models were trained for {args.n_iters} of the configs' 1000 steps, so these are the "
                  "densities of undertrained models; the same command without `--n-iters` trains them fully.", ""]
    write_keeping_discussion(args.out, "\n".join(lines))
    print(f"wrote {args.out} and {figure}")


if __name__ == "__main__":
    main()
