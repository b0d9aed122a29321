"""The digits ablation's command line and table (experiments/digits_ablation.py): override
strings with bracketed lists reach the config as the fields' own types, a sampling-only run
must name an earlier run, and a row without a recorded time prints a dash."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "experiments")]

import digits_ablation as da  # noqa: E402
from digits_demo import load_config  # noqa: E402


def test_overrides_with_lists_keep_the_fields_types():
    config = load_config("configs/ve/digits_u.py:model.attn_resolutions=[8],model.nf=24,"
                         "optim.ema_warmup=none")
    assert config.model.attn_resolutions == (8,) and config.model.nf == 24
    assert config.optim.ema_warmup == "none"


def test_sampling_only_run_needs_an_earlier_base(tmp_path, monkeypatch):
    monkeypatch.setattr(da, "fit_judge", lambda: None)
    with pytest.raises(ValueError, match=r"--run b@a: 'a' must be a run listed before it"):
        da.main(["--workdir", str(tmp_path), "--run", "b@a=sde.num_scales=50"])


def test_table_prints_missing_times_as_dashes():
    row = {"overrides": "", "train_s": None, "train_cpu_s": None, "sample_s": None, "load": 3.0,
           "confident": 0.95, "min_class_count": 80, "max_share": 0.12, "fid": 6.0,
           "fid_ratio": 1.1, "pixel_mean": 0.3, "pixel_std": 0.37, "passed": True,
           "trained_as": "base"}
    text = da.markdown({"x": row}, "python experiments/digits_ablation.py", 0.98)
    line = next(line for line in text.split("\n") if line.startswith("| x |"))
    assert line.startswith("| x | — (sampling only: the checkpoint of base) | — | — | — | 3.0 |")
