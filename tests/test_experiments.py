"""The QCSGM Table 1 reproduction script end to end on tiny runs: train, tabulate, report again."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
import qcsgm_table1  # noqa: E402
import report  # noqa: E402

TINY = [
    "training.n_iters=4", "training.batch_size=64", "training.snapshot_freq=4",
    "training.log_freq=2", "data.num_points=512", "eval.num_points=64", "eval.num_levels=2",
    "eval.nll_num_points=32", "sampling.num_samples=64",
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    out = root / "table1.md"
    args = ["--seeds", "1", "--datasets", "8gaussians", "--models", "c", "u",
            "--workdir", str(root / "runs"), "--out", str(out), "--reference", "closed_form",
            "--set", *TINY]
    qcsgm_table1.main(args)
    return root, out, args


def test_table_has_one_row_per_model_and_the_reference(table):
    root, out, _ = table
    text = out.read_text()
    assert "| 8gaussians | C | 1 |" in text and "| 8gaussians | U | 1 |" in text
    assert "spirals" not in text
    reference = json.loads((root / "runs" / "reference_nll_8gaussians.json").read_text())
    assert set(reference) == {"closed_form"} and reference["closed_form"]["nfe"] > 0
    assert f"{reference['closed_form']['nll']:.3f}" in text


def test_grid_nasym_is_zero_for_the_energy_model_and_a_ratio_for_u(table):
    root, _, _ = table
    overrides = {k: json.loads(v) for k, v in (item.split("=") for item in TINY)}
    c = qcsgm_table1.grid_nasym("8gaussians", "c", 0, str(root / "runs"), overrides)
    u = qcsgm_table1.grid_nasym("8gaussians", "u", 0, str(root / "runs"), overrides)
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
