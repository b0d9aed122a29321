"""The QCSGM Table 1 scripts end to end on tiny runs: train, tabulate, report again; the λ-sweep
report from the same runs; the figures of the data law the analysis rests on."""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
import qcsgm_lambda_sweep  # noqa: E402
import qcsgm_table1  # noqa: E402
import report  # noqa: E402
from sgm_jax.checkpoints import restore_score_model  # noqa: E402
from sgm_jax.data import EIGHT_GAUSSIANS_MEANS, EIGHT_GAUSSIANS_STD  # noqa: E402
from sgm_jax.metrics import asym, nasym  # noqa: E402
from sgm_jax.evaluate.toy import training_curves  # noqa: E402

TINY = [
    "training.n_iters=4", "training.batch_size=64", "training.snapshot_freq=4",
    "training.log_freq=2", "data.num_points=512", "eval.num_points=64", "eval.num_levels=2",
    "eval.nll_num_points=32", "sampling.num_samples=64", "eval.num_samples=64",
]
OVERRIDES = qcsgm_table1.parse_overrides(TINY)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    out = root / "table1.md"
    args = ["--seeds", "1", "--datasets", "8gaussians", "--models", "c", "u", "qc",
            "--workdir", str(root / "runs"), "--out", str(out), "--reference", "closed_form",
            "--set", *TINY]
    qcsgm_table1.main(args)
    return root, out, args


def _result(root, model: str) -> dict:
    with open(qcsgm_table1.result_file(str(root / "runs"), "8gaussians", model, 0)) as f:
        return json.load(f)


def _row(text: str, *first: str) -> list[str]:
    """The cells of the markdown row whose first cells are ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first)] == list(first):
            return cells
    raise AssertionError(f"no row starting with {first} in:\n{text}")


def _shows(cell: str, value: float) -> bool:
    """The number printed first in ``cell`` (before any "±" or "%") is ``value`` rounded to the
    digits it shows: within half a unit of its last digit (independent of the table's format
    strings; a wrong value is off by more than that)."""
    number = cell.split("±")[0].replace("%", "").strip()
    if number in ("—", ""):
        return False
    mantissa, _, exponent = number.lower().partition("e")
    digits = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-digits + (int(exponent) if exponent else 0))
    return abs(float(number) - value) <= 0.5 * unit * (1 + 1e-9)


def test_table_has_one_row_per_model_and_the_reference(table):
    root, out, _ = table
    text = out.read_text()
    for model in ("C", "U", "QC"):
        assert _row(text, "8gaussians", model)[2] == "1"  # seeds
    assert "spirals" not in text
    reference = json.loads((root / "runs" / "reference_nll_8gaussians.json").read_text())
    assert set(reference) == {"closed_form"} and reference["closed_form"]["nfe"] > 0
    assert _shows(_row(text, "8gaussians", "the true mixture (closed form)")[2],
                  reference["closed_form"]["nll"])


def test_nll_above_the_floor_is_each_run_minus_the_exact_score(table):
    root, out, _ = table
    floor = json.loads((root / "runs" / "reference_nll_8gaussians.json").read_text())["closed_form"]["nll"]
    text = out.read_text()
    for model in ("c", "u", "qc"):
        nll = _result(root, model)["nll"]
        paper = qcsgm_table1.paper_value(qcsgm_table1.PAPER[("8gaussians", model)][3])
        cells = _row(text.split("| NLL − floor |")[1], "8gaussians", model.upper())
        expected = (nll, floor, nll - floor, paper, paper - floor)
        assert all(_shows(cell, want) for cell, want in zip(cells[2:7], expected, strict=True))


def test_implied_jacobian_of_the_paper_rows():
    # 8-Gaussians U: Asym 9.64e-3, NAsym 0.380 -> 9.64e-3 / 0.760 = 0.012684...
    rows = [("8gaussians", "U", [{"asym": 0.3, "nasym": 0.05}, {"asym": 0.1, "nasym": 0.15}])]
    lines = qcsgm_table1.implied_jacobian_lines(rows, {("8gaussians", "U"): "u"})
    assert lines[-1] == "| 8gaussians | U | 0.0127 | 1 |"  # ours: 0.2 / (2 * 0.1)


def test_grid_nasym_is_zero_for_the_energy_model_and_a_ratio_for_u(table):
    root, _, _ = table
    c = qcsgm_table1.grid_nasym("8gaussians", "c", 0, str(root / "runs"), OVERRIDES)
    u = qcsgm_table1.grid_nasym("8gaussians", "u", 0, str(root / "runs"), OVERRIDES)
    assert abs(c) < 1e-6
    assert 0.0 < u < 1.0


def test_report_only_reproduces_the_table_and_keeps_the_discussion(table):
    _, out, args = table
    first = out.read_text()
    discussion = f"\n{report.DISCUSSION_HEADING}\n\nWhy the numbers differ.\n"
    out.write_text(first + discussion)
    qcsgm_table1.main(args + ["--report-only"])
    again = out.read_text()
    assert again.endswith(discussion)
    table_rows = lambda text: [line for line in text.splitlines() if line.startswith("| 8gaussians")]  # noqa: E731
    assert table_rows(again) == table_rows(first)


def _eight_gaussians_kl_by_quadrature(sigma_max: float) -> float:
    """KL(p_T ‖ N(0, σ_max² I)) with p_T the 8 modes N(μ_k, (½ + σ_max²) I), by the midpoint
    rule with step h = σ_max/40 over [−12σ_max, 12σ_max]² (beyond, p_T is below e^{-40}; the
    rule's error on such smooth Gaussians is far below the Monte Carlo error)."""
    var, prior_var = EIGHT_GAUSSIANS_STD**2 + sigma_max**2, sigma_max**2
    h = sigma_max / 40
    axis = np.arange(-12 * sigma_max, 12 * sigma_max, h) + h / 2
    gx, gy = np.meshgrid(axis, axis)
    means = np.asarray(EIGHT_GAUSSIANS_MEANS)
    sq = (gx[..., None] - means[:, 0]) ** 2 + (gy[..., None] - means[:, 1]) ** 2
    p = np.mean(np.exp(-0.5 * sq / var), axis=-1) / (2 * math.pi * var)
    log_q = -0.5 * (gx**2 + gy**2) / prior_var - math.log(2 * math.pi * prior_var)
    return float(np.sum(p * (np.log(p) - log_q)) * h**2)


def test_prior_kl_matches_quadrature_within_its_standard_error(table):
    root, _, _ = table
    stored = json.loads((root / "runs" / "prior_kl_8gaussians.json").read_text())
    assert set(stored) == {"closed_form@sigma_max=3", "closed_form@sigma_max=10"}
    for sigma_max in (3, 10):
        estimate = stored[f"closed_form@sigma_max={sigma_max}"]
        exact = _eight_gaussians_kl_by_quadrature(sigma_max)
        assert abs(estimate["kl"] - exact) < 4 * estimate["se"], (sigma_max, estimate, exact)


def test_exact_jacobian_at_the_last_level_matches_the_mixture_formula(table):
    """For equal-weight modes N(μ_k, v I): J = −I/v + Cov_w(μ)/v², w the posterior weights."""
    root, _, _ = table
    stored = json.loads((root / "runs" / "exact_jacobian_8gaussians.json").read_text())["closed_form"]
    experiment = qcsgm_table1.toy_experiment("8gaussians", "u", 0, OVERRIDES)
    x0 = np.asarray(experiment.data.points[:64], np.float64)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(qcsgm_table1.LAW_SEED + 2), x0.shape))
    sigma = stored["sigma"][-1]
    x = x0 + sigma * z
    v, means = EIGHT_GAUSSIANS_STD**2 + sigma**2, np.asarray(EIGHT_GAUSSIANS_MEANS)
    logits = -0.5 * np.sum((x[:, None] - means) ** 2, axis=-1) / v
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    m = w @ means
    cov = np.einsum("bk,ki,kj->bij", w, means, means) - m[:, :, None] * m[:, None, :]
    jac = -np.eye(2) / v + cov / v**2
    assert stored["t"] == [0.5, 1.0]
    np.testing.assert_allclose(stored["jac_sq"][-1], np.mean(np.sum(jac**2, axis=(1, 2))), rtol=1e-4)


def test_official_network_nasym_does_not_depend_on_sigma(table):
    """f(x, σ) = F(x) + c(σ), so the U score's J = (I − ∂F/∂x)/σ: per point NAsym is the same at
    every σ and Asym·σ² too (the premise of the NAsym comparison in the results)."""
    root, _, _ = table
    experiment = qcsgm_table1.toy_experiment("8gaussians", "u", 0, OVERRIDES)
    _, score_model = restore_score_model(experiment, qcsgm_table1.run_dir(str(root / "runs"), "8gaussians", "u", 0))
    x = jnp.asarray(experiment.data.points[:16])

    @jax.jit
    def at_time(t):
        tb = jnp.full((x.shape[0],), t)
        fn = lambda y: score_model(y, tb)  # noqa: E731
        return nasym(fn, x), asym(fn, x) * experiment.sde.marginal_std(tb)[:1] ** 2

    values = [jax.device_get(at_time(t)) for t in (0.1, 0.5, 1.0)]
    assert np.all(values[0][0] > 1e-8)
    for nasym_t, scaled_asym_t in values[1:]:
        np.testing.assert_allclose(nasym_t, values[0][0], rtol=1e-4)
        np.testing.assert_allclose(scaled_asym_t, values[0][1], rtol=1e-4)


def test_lambda_sweep_report_from_the_same_runs(table, tmp_path):
    root, _, _ = table
    out = tmp_path / "sweep.md"
    qcsgm_lambda_sweep.main(["--report-only", "--seeds", "1", "--datasets", "8gaussians",
                             "--qc-weights", "0.05", "0.5", "--workdir", str(root / "runs"),
                             "--out", str(out), "--reference", "closed_form", "--set", *TINY])
    text = out.read_text()
    u, qc = _result(root, "u"), _result(root, "qc")
    floor = json.loads((root / "runs" / "reference_nll_8gaussians.json").read_text())["closed_form"]["nll"]
    curves = training_curves(qcsgm_table1.run_dir(str(root / "runs"), "8gaussians", "qc", 0))
    share = 0.05 * np.asarray(curves["qc"][1]) / np.asarray(curves["loss"][1])
    # train logs qc_share = (loss − objective) / loss: the same share computed the other way, up
    # to the float32 rounding of the two logged terms (a few 2⁻²⁴ of the loss)
    np.testing.assert_allclose(share, curves["qc_share"][1], rtol=0, atol=4 * 2.0**-24)
    assert np.all(share > 4 * 2.0**-24)
    cells = _row(text, "8gaussians", "QC λ = 0.1", "1")
    expected = (qc["asym"], qc["nasym"], qc["nll"], qc["precision"], qc["recall"],
                u["asym"] / qc["asym"], u["asym"] / qc["asym"], qc["nll"] - u["nll"],
                qc["nll"] - floor, 100 * share[-1], 100 * share.mean())
    assert all(_shows(cell, want) for cell, want in zip(cells[3:], expected, strict=True))
    assert _shows(_row(text, "8gaussians", "U", "1")[3], u["asym"])
    assert "Not finished, hence in no table above: 8gaussians QC λ = 1, seed 0." in text
    assert "| 8gaussians | closed form | " in text  # the prior KL, from the cache of the fixture
    level = _row(text, "8gaussians", "1.0", "3")  # per-level NAsym of U at the last level
    assert any(_shows(cell, u["per_level"]["nasym"][-1]) for cell in level[3:])


def test_appendix_overrides_build_the_papers_network():
    experiment = qcsgm_table1.toy_experiment("8gaussians", "qc", 0, qcsgm_lambda_sweep.APPENDIX)
    assert type(experiment.network).__name__ == "ToyMLP"
    assert tuple(experiment.network.hidden) == (128, 64, 32)
    assert experiment.condition == "t" and experiment.parameterisation == "u"
    assert (experiment.sde.sigma_min, experiment.sde.sigma_max) == (0.01, 10.0)
    assert experiment.training.lr == 1e-2
    config = qcsgm_table1.toy_config("8gaussians", "qc", 0, qcsgm_lambda_sweep.APPENDIX)
    assert "output_activation" not in config.model


def test_removing_a_field_the_config_lacks_names_it():
    with pytest.raises(ValueError, match="has no model.hidden"):
        qcsgm_table1.toy_config("8gaussians", "u", 0, {"model.hidden": None})
