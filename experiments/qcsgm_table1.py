"""Reproduce QCSGM Table 1: C, U and QC score models on 8-Gaussians, Spirals and Checkerboard.

Each (dataset, model, seed) is trained and evaluated through the same code path as
``main.py --mode=train`` (``configs/toy/<dataset>_<model>.py`` with ``seed`` overridden); the
table reports the mean ± the 95 % Student-t half-width over seeds next to the paper's numbers,
NAsym also by the paper's stated grid protocol (``grid_nasym``), and the NLL an exact score gets
from the same SDE (``reference_nll``), which separates the prior mismatch from the model's error;
then the figures of the data law that the comparison with the paper needs (``law_figures``): the
prior mismatch KL(p_T ‖ N(0, σ_max² I)) at the runs' σ_max and the appendix's, and E‖J‖²_F of the
exact score at each evaluation level, next to the models' per-level NAsym and Asym / (2·NAsym).
Finished runs are cached in the workdir and reused; ``--report-only`` tabulates them without
training; a "## Distance from the paper" section already in ``--out`` is kept.

    python experiments/qcsgm_table1.py --seeds 3 --workdir runs/table1 --out docs/results/qcsgm_table1.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgm_jax.checkpoints import restore_score_model  # noqa: E402
from sgm_jax.data import (EIGHT_GAUSSIANS_MEANS, EIGHT_GAUSSIANS_STD,  # noqa: E402
                          eight_gaussians_score, make_toy_dataset)
from sgm_jax.experiment import Experiment, build_experiment  # noqa: E402
from sgm_jax.losses import parzen_score  # noqa: E402
from sgm_jax.metrics import nasym  # noqa: E402
from sgm_jax.evaluate.toy import evaluate, nll_nats  # noqa: E402
from sgm_jax.train import train  # noqa: E402
from report import command_line, write_keeping_discussion  # noqa: E402

DATASETS = ("8gaussians", "spirals", "checkerboard")
MODELS = ("c", "u", "qc")
METRICS = ("asym", "nasym", "score_error", "nll", "precision", "recall")
HEADERS = ("Asym ↓", "NAsym ↓", "Score error ↓", "NLL ↓", "Precision ↑", "Recall ↑")

# QCSGM paper, Table 1 (mean ± CI over three runs), in the order of METRICS.
PAPER = {
    ("8gaussians", "c"): ("0.00±0.00e-4", "0.00±0.00e-2", "2.49±0.00e+1", "4.86±0.00e+0", "9.78±0.00e-1", "9.31±0.00e-1"),
    ("8gaussians", "u"): ("9.64±0.00e-3", "3.80±0.03e-1", "2.28±0.00e+1", "4.56±0.00e+0", "9.74±0.00e-1", "9.52±0.00e-1"),
    ("8gaussians", "qc"): ("1.52±0.00e-3", "7.16±0.00e-2", "2.26±0.01e+1", "4.55±0.00e+0", "9.79±0.00e-1", "9.64±0.00e-1"),
    ("spirals", "c"): ("0.00±0.00e-4", "0.00±0.00e-2", "3.88±0.07e+1", "5.40±0.00e+0", "4.48±0.00e-1", "9.96±0.00e-1"),
    ("spirals", "u"): ("2.61±0.00e-2", "9.23±0.01e-1", "3.62±0.01e+1", "5.27±0.01e+0", "4.53±0.00e-1", "9.94±0.00e-1"),
    ("spirals", "qc"): ("6.92±0.00e-4", "8.04±0.00e-2", "3.55±0.01e+1", "5.24±0.00e+0", "4.55±0.00e-1", "9.97±0.00e-1"),
    ("checkerboard", "c"): ("0.00±0.00e-4", "0.00±0.00e-2", "3.38±0.06e+1", "5.15±0.05e+0", "8.87±0.00e-1", "9.98±0.00e-1"),
    ("checkerboard", "u"): ("1.58±0.00e-2", "6.08±0.01e-1", "3.34±0.03e+1", "5.05±0.01e+0", "8.93±0.00e-1", "9.98±0.00e-1"),
    ("checkerboard", "qc"): ("6.14±0.00e-3", "3.83±0.00e-2", "3.32±0.02e+1", "5.03±0.00e+0", "8.96±0.00e-1", "9.99±0.00e-1"),
}
#: σ_max of the paper's appendix (A.5.2), where the prior N(0, σ_max² I) fits p_T.
PAPER_SIGMA_MAX = 10.0
#: Seed of the fresh draws that stand for the data law (``law_of``), apart from any run's data.
LAW_SEED = 20_230_723
LAW_CENTRES = 200_000
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student-t quantiles by degrees of freedom


def mean_ci(values) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (Student t) of a few runs; half-width 0 for one run."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), T_975[values.size - 1] * values.std(ddof=1) / math.sqrt(values.size)


def toy_config(dataset: str, model: str, seed: int, overrides: dict):
    """``configs/toy/<dataset>_<model>.py`` with ``seed`` and the ``SECTION.FIELD`` overrides,
    applied in order; the value None removes the field (a constructor field of one network that
    another lacks, e.g. ``model.output_activation`` when ``model.name`` becomes ``toy_mlp``)."""
    config = importlib.import_module(f"configs.toy.{dataset}_{model}").get_config()
    config.seed = seed
    for path, value in overrides.items():
        section, field = path.split(".")
        if value is None:
            if field not in config[section]:
                raise ValueError(f"{path}=None removes a field, but the config of {dataset} "
                                 f"{model} has no {path}; its {section} fields: "
                                 f"{sorted(config[section].keys())}.")
            del config[section][field]
        else:
            config[section][field] = value
    return config


def toy_experiment(dataset: str, model: str, seed: int, overrides: dict) -> Experiment:
    """The experiment of :func:`toy_config` (validated by ``build_experiment``)."""
    return build_experiment(toy_config(dataset, model, seed, overrides))


def run_dir(root: str, dataset: str, model: str, seed: int) -> str:
    """The work directory of one Table 1 run under ``root``."""
    return os.path.join(root, f"{dataset}_{model}_seed{seed}")


def result_file(root: str, dataset: str, model: str, seed: int) -> str:
    """Where a finished run keeps its evaluation results."""
    return os.path.join(run_dir(root, dataset, model, seed), "table1_result.json")


def run_one(dataset: str, model: str, seed: int, root: str, overrides: dict) -> dict:
    workdir = run_dir(root, dataset, model, seed)
    result_path = result_file(root, dataset, model, seed)
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    experiment = toy_experiment(dataset, model, seed, overrides)
    start = time.perf_counter()
    train(experiment, workdir)
    result = evaluate(experiment, workdir)
    result["wall_seconds"] = time.perf_counter() - start
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
    return result


REFERENCES = ("parzen", "closed_form")


def reference_nll(dataset: str, root: str, overrides: dict, kinds=REFERENCES) -> dict:
    """NLL of the evaluation points when the network is replaced by an exact score, same SDE/solver.

    * ``parzen``: the score of the Parzen density of the other training points (the first
      ``eval.nll_num_points`` points, on which the models' NLL is measured, are left out of the
      kernel centres) at bandwidth σ_t — the exact score of the empirical law perturbed by the SDE.
    * ``closed_form`` (8-Gaussians only): the exact score of the true mixture perturbed to σ_t.

    Either flow transports p_eps exactly onto p_T, so its NLL is H(p_eps) + KL(p_T ‖ N(0, σ_max² I)):
    the prior mismatch is part of the NLL a perfect score model gets from this SDE. Cached in
    ``<root>/reference_nll_<dataset>.json``.
    """
    path = os.path.join(root, f"reference_nll_{dataset}.json")
    result = {}
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
    if dataset != "8gaussians":
        kinds = [name for name in kinds if name != "closed_form"]
    if all(name in result for name in kinds):
        return {name: result[name] for name in kinds}
    experiment = toy_experiment(dataset, "u", 0, overrides)  # the SDE and training set of seed 0
    sde = experiment.sde
    data = jnp.asarray(experiment.data.points)
    n = experiment.evaluation.nll_num_points
    points, centres = data[:n], data[n:]
    score_models = {"parzen": lambda x, t: parzen_score(x, centres, sde.marginal_std(t))}
    if dataset == "8gaussians":
        score_models["closed_form"] = lambda x, t: eight_gaussians_score(x, sde.marginal_std(t))
    for name, score_model in score_models.items():
        if name not in kinds or name in result:
            continue
        nll, nfe = nll_nats(experiment, score_model, points)
        result[name] = {"nll": float(np.mean(nll)), "nfe": nfe,
                        "se": float(np.std(nll, ddof=1) / math.sqrt(len(nll)))}
        print(f"reference NLL {dataset} {name}: {result[name]}", flush=True)
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return {name: result[name] for name in kinds if name in result}


def grid_nasym(dataset: str, model: str, seed: int, root: str, overrides: dict,
               half_width: float = 10.0, side: int = 40) -> float:
    """NAsym by the paper's stated protocol (QCSGM A.5.2, Eq. A9): a ``side``² grid on
    [−half_width, half_width]² (1600 points, the official plotting grid), each point weighted by
    p_σ(x̃) normalised over the grid (p_σ: the Parzen density of the training set at σ_t),
    at the same levels t_l = l/L as ``evaluate``; the mean over levels. The run must be finished.
    """
    workdir = run_dir(root, dataset, model, seed)
    path = os.path.join(workdir, "grid_nasym.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["nasym"]
    experiment = toy_experiment(dataset, model, seed, overrides)
    _, score_model = restore_score_model(experiment, workdir)
    sde, data = experiment.sde, jnp.asarray(experiment.data.points)
    axis = jnp.linspace(-half_width, half_width, side)
    grid = jnp.stack([g.ravel() for g in jnp.meshgrid(axis, axis)], axis=1)

    @jax.jit
    def at_level(t):
        tb = jnp.full((grid.shape[0],), t)
        sigma = sde.marginal_std(tb[:1])[0]
        centres = sde.mean_coeff(tb[:1])[0] * data
        sq = (jnp.sum(grid**2, axis=1)[:, None] + jnp.sum(centres**2, axis=1)[None]
              - 2.0 * grid @ centres.T)
        weights = jax.nn.softmax(jax.scipy.special.logsumexp(-0.5 * sq / sigma**2, axis=1))
        return jnp.sum(weights * nasym(lambda y: score_model(y, tb), grid))

    num_levels = experiment.evaluation.num_levels
    levels = np.arange(1, num_levels + 1) / num_levels
    value = float(np.mean([at_level(t) for t in levels]))
    with open(path, "w") as f:
        json.dump({"nasym": value, "grid": [side, half_width]}, f)
    return value


def law_of(dataset: str, kind: str) -> tuple[jax.Array, float]:
    """The data law as a Gaussian mixture (centres, per-coordinate variance of each component),
    so that the law of c·x₀ + σz is the Parzen density of c·centres at bandwidth √(c²v + σ²):

    * ``closed_form`` (8-Gaussians only): the 8 means and the modes' variance ½, exactly;
    * ``parzen``: ``LAW_CENTRES`` fresh draws of the generator (key ``LAW_SEED``) and 0.
    """
    if kind == "closed_form":
        if dataset != "8gaussians":
            raise ValueError(f"kind='closed_form' exists for 8gaussians only; got dataset={dataset!r}.")
        return jnp.asarray(EIGHT_GAUSSIANS_MEANS), EIGHT_GAUSSIANS_STD**2
    if kind != "parzen":
        raise ValueError(f"kind must be one of {list(REFERENCES)}; got {kind!r}.")
    key = jax.random.fold_in(jax.random.PRNGKey(LAW_SEED), DATASETS.index(dataset))
    return make_toy_dataset(dataset, key, LAW_CENTRES), 0.0


def parzen_log_density(x: jax.Array, centres: jax.Array, bandwidth: float,
                       block: int = 64) -> jax.Array:
    """log (1/M) Σ_i N(x; c_i, h² I) for each row of ``x`` [N, D] (QCSGM Eq. 1 with h = σ): a
    log-sum-exp over the M ``centres``, ``block`` rows at a time."""
    dim = x.shape[1]

    def one(row):
        return jax.scipy.special.logsumexp(-0.5 * jnp.sum((centres - row) ** 2, axis=1) / bandwidth**2)

    lse = jax.lax.map(one, x, batch_size=block)
    return lse - math.log(centres.shape[0]) - 0.5 * dim * jnp.log(2 * math.pi * bandwidth**2)


def _cached(path: str, key: str, compute):
    """``compute()`` stored under ``key`` in the JSON file ``path`` (computed once)."""
    stored = {}
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
    if key not in stored:
        stored[key] = compute()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(stored, f, indent=2)
    return stored[key]


def prior_kl(dataset: str, sde, kind: str, root: str, num_samples: int = 20_000) -> dict:
    """KL(p_T ‖ prior) of ``sde``: p_T the law of c_T·x₀ + σ_T z (x₀ from the data law,
    ``law_of(dataset, kind)``), the prior N(0, prior_std² I) (``sde.prior_logp``).

    Monte Carlo over ``num_samples`` fresh draws x ~ p_T (independent of the ``parzen`` centres):
    the mean of log p_T(x) − log prior(x) and its standard error (std/√n). This is the NLL that
    the prior mismatch adds to the exact score's: that NLL is H(p_eps) + KL (``reference_nll``).
    Cached in ``<root>/prior_kl_<dataset>.json``.
    """
    def compute():
        t_end = jnp.ones((1,))
        c, sigma = float(sde.mean_coeff(t_end)[0]), float(sde.marginal_std(t_end)[0])
        key_data, key_noise = jax.random.split(jax.random.PRNGKey(LAW_SEED + 1))
        x = (c * make_toy_dataset(dataset, key_data, num_samples)
             + sigma * jax.random.normal(key_noise, (num_samples, 2)))
        centres, var = law_of(dataset, kind)
        log_pt = jax.jit(parzen_log_density)(x, c * centres, math.sqrt(c**2 * var + sigma**2))
        ratio = np.asarray(log_pt - sde.prior_logp(x), np.float64)
        return {"kl": float(ratio.mean()), "se": float(ratio.std(ddof=1) / math.sqrt(num_samples)),
                "sigma_T": sigma, "num_samples": num_samples}

    return _cached(os.path.join(root, f"prior_kl_{dataset}.json"),
                   f"{kind}@sigma_max={sde.prior_std:g}", compute)


def exact_jacobian_sq(dataset: str, kind: str, root: str, overrides: dict) -> dict:
    """E‖J‖²_F of the exact score of the data law (``law_of(dataset, kind)``) at each evaluation
    level t_l = l/L, on the points ``evaluate`` uses (the first ``eval.num_points`` training points
    of seed 0, perturbed to σ_t): what a model that fits the law has, level by level.
    ‖J‖²_F = Σ_i ‖J e_i‖², from D forward-mode products (no stored residuals: the Parzen sum
    over many centres stays cheap in memory). Returns ``{"t", "sigma", "jac_sq"}``
    (lists over levels); cached in ``<root>/exact_jacobian_<dataset>.json``."""
    def compute():
        experiment = toy_experiment(dataset, "u", 0, overrides)
        sde, evaluation = experiment.sde, experiment.evaluation
        x0 = jnp.asarray(experiment.data.points[: evaluation.num_points])
        z = jax.random.normal(jax.random.PRNGKey(LAW_SEED + 2), x0.shape)
        centres, var = law_of(dataset, kind)

        @jax.jit
        def at_level(t):
            tb = jnp.full((1,), t)
            c, sigma = sde.mean_coeff(tb)[0], sde.marginal_std(tb)[0]
            x = c * x0 + sigma * z
            score = lambda y: parzen_score(y, c * centres, jnp.sqrt(c**2 * var + sigma**2))  # noqa: E731
            column = lambda e: jax.jvp(score, (x,), (jnp.broadcast_to(e, x.shape),))[1]  # noqa: E731
            return jnp.mean(jnp.sum(jax.vmap(column)(jnp.eye(x.shape[1])) ** 2, axis=(0, 2)))

        levels = np.arange(1, evaluation.num_levels + 1) / evaluation.num_levels
        return {"t": levels.tolist(), "sigma": np.asarray(sde.marginal_std(levels)).tolist(),
                "jac_sq": [float(at_level(t)) for t in levels]}

    return _cached(os.path.join(root, f"exact_jacobian_{dataset}.json"), kind, compute)


def paper_value(cell: str) -> float:
    """The mean of a Table 1 cell written as "m±h e±k": m·10^k."""
    mantissa, rest = cell.split("±")
    return float(mantissa) * 10.0 ** int(rest.split("e")[1])


def markdown(results: dict, references: dict, command: str, kl: dict | None = None,
             jacobians: dict | None = None) -> str:
    lines = [
        "# QCSGM Table 1 reproduction",
        "",
        f"Made by `{command}` (it trains what is missing; with `--report-only` it only"
        " tabulates the finished runs). Each cell: ours (mean ± 95 % Student-t CI over the seeds of the row)"
        " / paper. Our score error evaluates the model and the clean-data Parzen oracle at the same"
        " noise level (the official code does not; docs/methods.md), so it is not comparable number for number."
        " NAsym is not comparable with the paper's either: the paper's Asym/NAsym pairs need Jacobians"
        " far smaller than the data's at almost every noise level (the last two tables below).",
        "",
        "| Dataset | Model | Seeds | " + " | ".join(HEADERS) + " |",
        "|---|---|---|" + "---|" * len(HEADERS),
    ]
    for dataset in DATASETS:
        for model in MODELS:
            runs = results.get((dataset, model))
            if not runs:
                continue
            cells = []
            for i, metric in enumerate(METRICS):
                mean, half = mean_ci([r[metric] for r in runs])
                cells.append(f"{mean:.3g} ± {half:.2g} / {PAPER[(dataset, model)][i]}")
            lines.append(f"| {dataset} | {model.upper()} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "NAsym by the two protocols: perturbed training points (the official code, and the table above)",
        "and the paper's stated A.5.2 protocol (Eq. A9: 1600 grid points on [−10, 10]², weighted by",
        "the perturbed data density; `grid_nasym` in the script). Mean over the same seeds.",
        "",
        "| Dataset | Model | NAsym, data points | NAsym, A9 grid | paper |",
        "|---|---|---|---|---|",
    ]
    for (dataset, model), runs in results.items():
        data_points = np.mean([r["nasym"] for r in runs])
        grid = np.mean([r["nasym_grid"] for r in runs])
        lines.append(f"| {dataset} | {model.upper()} | {data_points:.3g} | {grid:.3g} | "
                     f"{PAPER[(dataset, model)][METRICS.index('nasym')]} |")
    if references:
        lines += [
            "",
            "NLL (nats) of the same evaluation points with the network replaced by an exact score",
            "(same SDE, solver and tolerances; `reference_nll` in the script). Either flow transports",
            "p_eps onto p_T exactly, so this is H(p_eps) + KL(p_T ‖ N(0, σ_max² I)): what a perfect",
            "score model gets from this SDE.",
            "",
            "| Dataset | Exact score of | NLL ± s.e. | NFE |",
            "|---|---|---|---|",
        ]
        for dataset, ref in references.items():
            for name, r in ref.items():
                label = {"parzen": "Parzen law of the other training points",
                         "closed_form": "the true mixture (closed form)"}[name]
                lines.append(f"| {dataset} | {label} | {r['nll']:.3f} ± {r['se']:.3f} | {r['nfe']} |")
        lines += _floor_lines(results, references)
    if kl:
        lines += prior_kl_lines(kl)
    rows = [(dataset, model.upper(), runs) for (dataset, model), runs in results.items()
            if model != "c"]
    lines += implied_jacobian_lines(rows, {(dataset, model.upper()): model
                                           for (dataset, model) in results})
    if jacobians:
        lines += per_level_lines(rows, jacobians)
    return "\n".join(lines) + "\n"


def _floor(reference: dict) -> float:
    """The exact-score NLL a row is compared with: the closed form where there is one."""
    return reference["closed_form" if "closed_form" in reference else "parzen"]["nll"]


def _floor_lines(results: dict, references: dict) -> list[str]:
    lines = [
        "",
        "NLL above the exact-score NLL of the same SDE (the floor: the closed form for 8-Gaussians,",
        "else the Parzen law above, computed on seed 0's points), ours (mean ± 95 % CI) and the",
        "paper's NLL against the same floor: a negative value is below what any score model gets",
        "from this SDE.",
        "",
        "| Dataset | Model | NLL | floor | NLL − floor | paper NLL | paper − floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dataset, model), runs in results.items():
        if dataset not in references:
            continue
        floor = _floor(references[dataset])
        paper = paper_value(PAPER[(dataset, model)][METRICS.index("nll")])
        mean, half = mean_ci([r["nll"] - floor for r in runs])
        lines.append(f"| {dataset} | {model.upper()} | {mean + floor:.3f} | {floor:.3f} | "
                     f"{mean:+.3f} ± {half:.2g} | {paper:.2f} | {paper - floor:+.2f} |")
    return lines


def prior_kl_lines(kl: dict) -> list[str]:
    """Markdown: the table of :func:`prior_kl` results, as :func:`law_figures` returns them."""
    sigmas = sorted({sigma for by_kind in kl.values() for by_sigma in by_kind.values()
                     for sigma in by_sigma})
    lines = [
        "",
        "The prior mismatch KL(p_T ‖ N(0, σ_max² I)), p_T the data law convolved with",
        "N(0, σ_max² I): Monte Carlo over 20,000 draws of p_T ± its standard error (`prior_kl`), with",
        f"log p_T in closed form (8-Gaussians) or as the Parzen density of {LAW_CENTRES:,} fresh draws.",
        "",
        "| Dataset | log p_T | " + " | ".join(f"KL, σ_max = {s:g}" for s in sigmas) + " |",
        "|---|---|" + "---|" * len(sigmas),
    ]
    for dataset, by_kind in kl.items():
        for kind, by_sigma in by_kind.items():
            label = {"parzen": "Parzen, fresh draws", "closed_form": "closed form"}[kind]
            cells = [f"{by_sigma[s]['kl']:.3f} ± {by_sigma[s]['se']:.3f}" if s in by_sigma else "—"
                     for s in sigmas]
            lines.append(f"| {dataset} | {label} | " + " | ".join(cells) + " |")
    return lines


def implied_jacobian_lines(rows: list[tuple[str, str, list[dict]]],
                           paper_models: dict[tuple[str, str], str]) -> list[str]:
    """Markdown: Asym / (2·NAsym) of each of ``rows`` ((dataset, label, runs); the runs' means)
    and of the paper's Table 1 means of model ``paper_models[(dataset, label)]`` ("—" for a row
    not there)."""
    lines = [
        "",
        "Per point, Asym = ½‖J − Jᵀ‖²_F and NAsym = ‖J − Jᵀ‖²_F / (4‖J‖²_F), so Asym / (2·NAsym) is",
        "‖J‖²_F, and the ratio of the two averages is an NAsym-weighted mean of ‖J‖²_F: the size of",
        "the Jacobians that carry the asymmetry. Paper (Table 1 means) and ours (means over seeds);",
        "C is left out (its Asym and NAsym are rounding).",
        "",
        "| Dataset | Model | paper Asym / (2 NAsym) | ours Asym / (2 NAsym) |",
        "|---|---|---|---|",
    ]
    for dataset, label, runs in rows:
        paper = "—"
        if (dataset, label) in paper_models:
            cells = PAPER[(dataset, paper_models[(dataset, label)])]
            asym = paper_value(cells[METRICS.index("asym")])
            paper = f"{asym / (2 * paper_value(cells[METRICS.index('nasym')])):.3g}"
        ours = np.mean([r["asym"] for r in runs]) / (2 * np.mean([r["nasym"] for r in runs]))
        lines.append(f"| {dataset} | {label} | {paper} | {ours:.3g} |")
    return lines


def per_level_lines(rows: list[tuple[str, str, list[dict]]], jacobians: dict) -> list[str]:
    """Markdown: per evaluation level, E‖J‖²_F of the data law's exact score (``jacobians``, as
    :func:`law_figures` returns them) and each row's NAsym and Asym / (2·NAsym) there (means over
    its runs of the ``per_level`` values of their evaluation); a dataset without ``jacobians``
    is left out."""
    labels = list(dict.fromkeys(label for _, label, _ in rows))
    lines = [
        "",
        "Per evaluation level (t_l = l/L, the points of the first table): E‖J‖²_F of the data law's",
        "exact score (`exact_jacobian_sq`), in closed form (8-Gaussians) and from the Parzen law of",
        "fresh draws, whose kernel noise inflates it at the smallest σ (compare the two on",
        "8-Gaussians); and each model's NAsym and Asym / (2·NAsym) at that level (means over seeds",
        "of the `per_level` values each run's evaluation stores).",
        "",
        "| Dataset | t | σ_t | E‖J‖²_F closed form | E‖J‖²_F Parzen | "
        + " | ".join(f"{label} NAsym | {label} Asym / (2 NAsym)" for label in labels) + " |",
        "|---|---|---|---|---|" + "---|---|" * len(labels),
    ]
    for dataset, by_kind in jacobians.items():
        first = next(iter(by_kind.values()))
        by_label = {label: runs for d, label, runs in rows if d == dataset}
        for level, (t, sigma) in enumerate(zip(first["t"], first["sigma"])):
            cells = [f"{by_kind[k]['jac_sq'][level]:.3g}" if k in by_kind else "—"
                     for k in ("closed_form", "parzen")]
            for label in labels:
                runs = by_label.get(label)
                if not runs:
                    cells += ["—", "—"]
                    continue
                asym = np.mean([r["per_level"]["asym"][level] for r in runs])
                nasym = np.mean([r["per_level"]["nasym"][level] for r in runs])
                cells += [f"{nasym:.3g}", f"{asym / (2 * nasym):.3g}"]
            lines.append(f"| {dataset} | {t:.1f} | {sigma:.3g} | " + " | ".join(cells) + " |")
    return lines


def cached_runs(dataset: str, model: str, seeds: list[int], root: str) -> list[dict]:
    """The finished runs among ``seeds`` (no training)."""
    runs = []
    for seed in seeds:
        path = result_file(root, dataset, model, seed)
        if os.path.exists(path):
            with open(path) as f:
                runs.append({**json.load(f), "seed": seed})
    return runs


def law_figures(datasets, kinds, root: str, overrides: dict) -> tuple[dict, dict]:
    """For each dataset and each of ``kinds`` that exists for it: :func:`prior_kl` at the runs'
    σ_max and at the appendix's ``PAPER_SIGMA_MAX`` (``{dataset: {kind: {σ_max: result}}}``), and
    :func:`exact_jacobian_sq` (``{dataset: {kind: result}}``)."""
    kl, jacobians = {}, {}
    for dataset in datasets:
        available = [k for k in kinds if k != "closed_form" or dataset == "8gaussians"]
        sigmas = (toy_experiment(dataset, "u", 0, overrides).sde.prior_std, PAPER_SIGMA_MAX)
        sdes = {s: toy_experiment(dataset, "u", 0, {**overrides, "sde.sigma_max": s}).sde
                for s in sigmas}
        kl[dataset] = {kind: {s: prior_kl(dataset, sde, kind, root) for s, sde in sdes.items()}
                       for kind in available}
        jacobians[dataset] = {kind: exact_jacobian_sq(dataset, kind, root, overrides)
                              for kind in available}
    return {d: v for d, v in kl.items() if v}, {d: v for d, v in jacobians.items() if v}


def parse_overrides(items: list[str]) -> dict:
    """``SECTION.FIELD=VALUE`` strings (VALUE in JSON) as a ``{"SECTION.FIELD": value}`` dict."""
    overrides = {}
    for item in items:
        path, value = item.split("=", 1)
        overrides[path] = json.loads(value)
    return overrides


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--workdir", default="runs/table1")
    parser.add_argument("--out", default="docs/results/qcsgm_table1.md")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                        help="config overrides for every run (VALUE in JSON, null removes the "
                             "field), e.g. eval.num_points=2000")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished runs among the seeds")
    parser.add_argument("--reference", nargs="*", default=list(REFERENCES), choices=REFERENCES,
                        help="exact-score NLL references to compute (none: skip)")
    args = parser.parse_args(argv)
    command = command_line("experiments/qcsgm_table1.py", argv, drop=("--report-only",))
    overrides = parse_overrides(args.set)
    seeds = list(range(args.seeds))
    results = {}
    for dataset in args.datasets:
        for model in args.models:
            if args.report_only:
                runs = cached_runs(dataset, model, seeds, args.workdir)
            else:
                runs = [{**run_one(dataset, model, s, args.workdir, overrides), "seed": s}
                        for s in seeds]
            if not runs:
                continue
            for run in runs:
                run["nasym_grid"] = grid_nasym(dataset, model, run["seed"], args.workdir, overrides)
            results[(dataset, model)] = runs
            print(f"{dataset} {model} ({len(runs)} seeds): " + ", ".join(
                f"{m}={np.mean([r[m] for r in runs]):.4g}" for m in METRICS), flush=True)
    references = {d: reference_nll(d, args.workdir, overrides, args.reference)
                  for d in args.datasets} if args.reference else {}
    kl, jacobians = law_figures(args.datasets, args.reference, args.workdir, overrides)
    write_keeping_discussion(args.out, markdown(results, references, command, kl, jacobians))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
