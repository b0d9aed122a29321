"""QCSGM Table 1, the weight of the QC regulariser: U and QC models at several λ, per data set.

The official toy loss is ‖σs + z‖² + λσ²(tr JJᵀ − tr JJ); this library's is half of it, so the
official λ is ``training.qc_weight = λ/2`` (``configs/default_toy.py``): λ ∈ {0.1, 1, 10} are
``--qc-weights 0.05 0.5 5``. For every data set and seed the script trains (or reuses) the U model
and one QC model per weight through ``qcsgm_table1.run_one`` (``build_experiment``, then
``train(experiment, workdir)`` and ``sgm_jax.evaluate.toy.evaluate(experiment, workdir)``, the code path of
``main.py``), and tabulates the mean ± 95 % Student-t half-width over seeds, the Asym ratio
U / QC, the NLL above the exact-score NLL of the same SDE (``qcsgm_table1.reference_nll``), and
each QC run's regulariser share of the training loss, qc_weight·qc / loss, read from its training
curves (last logged window and mean over them). Then, from ``qcsgm_table1.law_figures`` (cached
in the workdir): the prior mismatch KL(p_T ‖ N(0, σ_max² I)), and per evaluation level E‖J‖²_F of
the exact score next to each setting's NAsym and Asym / (2·NAsym).

``--appendix-iters N`` adds the training of the paper's appendix (QCSGM A.5.2): the MLP
(128, 64, 32) on t (``toy_mlp``), lr 1e-2, σ ∈ [0.01, 10], U and QC at the configs' λ on
8-Gaussians, N iterations, the first seed.

Runs at the configs' weight (and U) live in ``--workdir`` in the layout of
``experiments/qcsgm_table1.py``; other weights in ``<workdir>/qc_weight_<w>``, the appendix runs
in ``<workdir>/appendix_<N>``. Finished runs are reused; ``--report-only`` trains nothing and
lists the runs of the requested settings that are not finished; a "## Distance from the paper"
section already in ``--out`` is kept.

    python experiments/qcsgm_lambda_sweep.py --seeds 3 --workdir runs/table1 --appendix-iters 6000 \
        --out docs/results/qcsgm_table1_lambda_sweep.md
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgm_jax.evaluate.toy import training_curves  # noqa: E402
from qcsgm_table1 import (PAPER, REFERENCES, cached_runs, implied_jacobian_lines,  # noqa: E402
                          law_figures, mean_ci, parse_overrides, per_level_lines, prior_kl_lines,
                          reference_nll, run_dir, run_one, toy_config)
from report import command_line, write_keeping_discussion  # noqa: E402

DATASETS = ("8gaussians", "spirals")
QC_WEIGHTS = (0.05, 0.5, 5.0)  # official λ = 0.1, 1, 10
METRICS = ("asym", "nasym", "nll", "precision", "recall")
HEADERS = ("Asym ↓", "NAsym ↓", "NLL ↓", "Precision ↑", "Recall ↑")
#: The training the QCSGM appendix states (A.5.2) where the released configs differ: the MLP
#: (128, 64, 32) on t in place of the official network on σ (whose ``output_activation`` field
#: the MLP lacks), lr 1e-2, σ ∈ [0.01, 10].
APPENDIX = {"model.name": "toy_mlp", "model.condition": "t", "model.output_activation": None,
            "model.hidden": (128, 64, 32), "optim.lr": 1e-2, "sde.sigma_min": 0.01,
            "sde.sigma_max": 10.0}
APPENDIX_DATASET = "8gaussians"

Rows = list[tuple[str, str, list[dict]]]


def configs_qc_weight(dataset: str) -> float:
    """``training.qc_weight`` of ``configs/toy/<dataset>_qc.py``."""
    return toy_config(dataset, "qc", 0, {}).training.qc_weight


def weight_root(root: str, dataset: str, qc_weight: float) -> str:
    """Where the QC runs of ``qc_weight`` live: ``root`` itself for the weight of
    ``configs/toy/<dataset>_qc.py`` (shared with ``qcsgm_table1.py``), else a subfolder."""
    if qc_weight == configs_qc_weight(dataset):
        return root
    return os.path.join(root, f"qc_weight_{qc_weight:g}")


def training_log(workdir: str, qc_weight: float) -> dict:
    """The regulariser's share of the loss, qc_weight·qc / loss, from the curves that training
    logs (means over each ``training.log_freq`` window): in the last window and averaged over
    all windows. (Computed from the two logged terms rather than from ``qc_share`` =
    (loss − objective) / loss, which loses the digits of a small share to float32 rounding.)"""
    curves = training_curves(workdir)
    share = qc_weight * np.asarray(curves["qc"][1]) / np.asarray(curves["loss"][1])
    return {"share_last": float(share[-1]), "share_mean": float(share.mean())}


def setting_runs(dataset: str, model: str, qc_weight: float, seeds, root: str,
                 overrides: dict, report_only: bool) -> list[dict]:
    """The finished runs of one setting (trained first unless ``report_only``), each with its
    seed and :func:`training_log` (``qc_weight`` = 0 for U)."""
    if model == "qc":
        root = weight_root(root, dataset, qc_weight)
        overrides = {**overrides, "training.qc_weight": qc_weight}
    if report_only:
        runs = cached_runs(dataset, model, seeds, root)
    else:
        runs = [{**run_one(dataset, model, s, root, overrides), "seed": s} for s in seeds]
    return [{**r, **training_log(run_dir(root, dataset, model, r["seed"]), qc_weight)} for r in runs]


def floor_nll(dataset: str, root: str, overrides: dict) -> float:
    """The exact-score NLL of the same SDE: the true mixture for 8-Gaussians, else the Parzen
    law of the other training points (``qcsgm_table1.reference_nll``, cached in ``root``)."""
    kind = "closed_form" if dataset == "8gaussians" else "parzen"
    return reference_nll(dataset, root, overrides, [kind])[kind]["nll"]


def _cell(values, digits: str = ".3g") -> str:
    mean, half = mean_ci(values)
    return f"{mean:{digits}} ± {half:.2g}"


def table(rows: Rows, floors: dict, u_label: str = "U") -> list[str]:
    """Markdown rows: one per (dataset, setting label, runs); Asym ratios against the
    dataset's row labelled ``u_label``: of the means, and per seed (U and this setting trained
    from the same seed share data, initialisation and noise draws), with the NLL per seed."""
    lines = ["| Dataset | Model | Seeds | " + " | ".join(HEADERS)
             + " | Asym U / this | Asym U / this, per seed | NLL − U, per seed | NLL − floor"
               " | Reg. share, end | Reg. share, mean |",
             "|---|---|---|" + "---|" * (len(HEADERS) + 6)]
    u_runs = {d: {r["seed"]: r for r in runs} for d, label, runs in rows if label == u_label}
    for dataset, label, runs in rows:
        cells = [_cell([r[m] for r in runs]) for m in METRICS]
        u = u_runs.get(dataset, {})
        ratio = (f"{np.mean([r['asym'] for r in u.values()]) / np.mean([r['asym'] for r in runs]):.2f}"
                 if u else "—")
        pairs = [(u[r["seed"]], r) for r in runs if r["seed"] in u]
        paired = ([_cell([a["asym"] / b["asym"] for a, b in pairs], ".2f"),
                   _cell([b["nll"] - a["nll"] for a, b in pairs], "+.2f")]
                  if pairs and label != u_label else ["—", "—"])
        gap = _cell([r["nll"] - floors[dataset] for r in runs], ".2f")
        share = ([_cell([100 * r[k] for r in runs], ".2g") + " %" for k in ("share_last", "share_mean")]
                 if label != u_label else ["—", "—"])
        lines.append(f"| {dataset} | {label} | {len(runs)} | " + " | ".join(cells)
                     + f" | {ratio} | " + " | ".join(paired) + f" | {gap} | " + " | ".join(share)
                     + " |")
    return lines


def qc_label(qc_weight: float) -> str:
    """The row label of the QC setting with ``training.qc_weight`` (the official λ = 2·weight)."""
    return f"QC λ = {2 * qc_weight:g}"


def markdown(rows: Rows, floors: dict, appendix_rows: Rows, appendix_floor: float | None,
             appendix_iters: int, missing: list[str], command: str, kl: dict | None = None,
             jacobians: dict | None = None) -> str:
    lines = [
        "# QCSGM Table 1: the weight of the QC regulariser",
        "",
        f"Made by `{command}` (it trains what is missing; with `--report-only` it only tabulates"
        " the finished runs). Each cell: mean ± 95 % Student-t half-width over the seeds."
        " λ is the official weight (loss ‖σs + z‖² + λσ²(tr JJᵀ − tr JJ)), `training.qc_weight`"
        " = λ/2 here. Per seed: the ratio (difference) between the U run and this setting's run"
        " of the same seed, which share data, initialisation and noise draws. NLL − floor: the NLL"
        " above the exact score's NLL of the same SDE (the closed form for 8-Gaussians, the Parzen"
        " law of the training points for Spirals; seed 0's points). Reg. share: qc_weight·qc / loss"
        " in the training log (last `training.log_freq` window, and the mean over all windows).",
        "",
        *table(rows, floors),
    ]
    if appendix_rows:
        u, qc = PAPER[(APPENDIX_DATASET, "u")], PAPER[(APPENDIX_DATASET, "qc")]
        lines += [
            "",
            "The paper's appendix training (A.5.2: `toy_mlp` (128, 64, 32) on t, lr 1e-2,"
            f" σ ∈ [0.01, 10], λ = {2 * configs_qc_weight(APPENDIX_DATASET):g}), {appendix_iters}"
            " iterations, seed 0; NLL − floor against the closed-form exact score of this SDE."
            f" Paper (Table 1, 8-Gaussians): U Asym {u[0]}, NAsym {u[1]}, NLL {u[3]};"
            f" QC Asym {qc[0]}, NAsym {qc[1]}, NLL {qc[3]}.",
            "",
            *table(appendix_rows, {APPENDIX_DATASET: appendix_floor}),
        ]
    if missing:
        lines += ["", "Not finished, hence in no table above: " + "; ".join(missing) + "."]
    if kl:
        lines += prior_kl_lines(kl)
    paper_models = {}
    for dataset in dict.fromkeys(d for d, _, _ in rows):
        paper_models[(dataset, "U")] = "u"
        paper_models[(dataset, qc_label(configs_qc_weight(dataset)))] = "qc"
    lines += implied_jacobian_lines(rows, paper_models)
    if jacobians:
        lines += per_level_lines(rows, jacobians)
    return "\n".join(lines) + "\n"


def _collect(dataset: str, settings, seeds, root: str, overrides: dict, report_only: bool,
             missing: list[str], prefix: str = "") -> Rows:
    """The rows of ``settings`` ((model, qc_weight, label)) with finished runs; the seeds that
    are not finished are added to ``missing``."""
    rows = []
    for model, weight, label in settings:
        runs = setting_runs(dataset, model, weight, seeds, root, overrides, report_only)
        absent = sorted(set(seeds) - {r["seed"] for r in runs})
        if absent:
            missing.append(f"{prefix}{dataset} {label}, seed{'s' * (len(absent) > 1)} "
                           + ", ".join(map(str, absent)))
        if runs:
            rows.append((dataset, label, runs))
            print(f"{prefix}{dataset} {label} ({len(runs)} seeds): " + ", ".join(
                f"{m}={np.mean([r[m] for r in runs]):.4g}" for m in METRICS), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS),
                        choices=("8gaussians", "spirals", "checkerboard"))
    parser.add_argument("--qc-weights", nargs="+", type=float, default=list(QC_WEIGHTS),
                        help="training.qc_weight values (the official λ/2)")
    parser.add_argument("--appendix-iters", type=int, default=0,
                        help="iterations of the appendix-setting runs (0: none)")
    parser.add_argument("--workdir", default="runs/table1")
    parser.add_argument("--out", default="docs/results/qcsgm_table1_lambda_sweep.md")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                        help="config overrides for every run (VALUE in JSON, null removes the "
                             "field), e.g. eval.num_points=2000")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished runs among the seeds")
    parser.add_argument("--reference", nargs="*", default=list(REFERENCES), choices=REFERENCES,
                        help="exact scores of the data law for the prior KL and the per-level "
                             "Jacobians (qcsgm_table1.law_figures; none: skip those tables)")
    args = parser.parse_args(argv)
    command = command_line("experiments/qcsgm_lambda_sweep.py", argv, drop=("--report-only",))
    overrides = parse_overrides(args.set)
    seeds = list(range(args.seeds))
    rows, floors, missing = [], {}, []
    settings = [("u", 0.0, "U")] + [("qc", w, qc_label(w)) for w in args.qc_weights]
    for dataset in args.datasets:
        found = _collect(dataset, settings, seeds, args.workdir, overrides, args.report_only,
                         missing)
        if found:
            rows += found
            floors[dataset] = floor_nll(dataset, args.workdir, overrides)
    appendix_rows, appendix_floor = [], None
    if args.appendix_iters > 0:
        root = os.path.join(args.workdir, f"appendix_{args.appendix_iters}")
        appendix = {**overrides, **APPENDIX, "training.n_iters": args.appendix_iters}
        weight = configs_qc_weight(APPENDIX_DATASET)
        appendix_rows = _collect(APPENDIX_DATASET, [("u", 0.0, "U"), ("qc", weight, qc_label(weight))],
                                 seeds[:1], root, appendix, args.report_only, missing,
                                 prefix="appendix ")
        if appendix_rows:
            appendix_floor = floor_nll(APPENDIX_DATASET, root, appendix)
    kl, jacobians = law_figures([d for d in args.datasets if d in floors], args.reference,
                                args.workdir, overrides)
    write_keeping_discussion(args.out, markdown(rows, floors, appendix_rows, appendix_floor,
                                                args.appendix_iters, missing, command, kl,
                                                jacobians))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
