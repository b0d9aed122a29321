"""The LCSS checkerboard study: its σ = g(t) config, and the same-seed DSM/LCSS comparison and
statistics of ``experiments/lcss_checkerboard.py``."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, ROOT)

import lcss_checkerboard  # noqa: E402
from configs.default_lcss_checkerboard import get_lcss_checkerboard_config  # noqa: E402


def _flat(config) -> dict:
    out = {}
    for section, fields in config.to_dict().items():
        for name, value in (fields.items() if isinstance(fields, dict) else [(None, fields)]):
            out[f"{section}.{name}" if name else section] = value
    return out


def test_diffusion_config_differs_from_lcss_only_in_perturbation_and_weighting():
    lcss = _flat(lcss_checkerboard.config_for("lcss"))
    diffusion = _flat(lcss_checkerboard.config_for("lcss_diffusion"))
    assert lcss.keys() == diffusion.keys()
    changed = {k: (lcss[k], diffusion[k]) for k in lcss if lcss[k] != diffusion[k]}
    assert changed == {"training.perturbation": ("marginal", "diffusion"),
                       "training.weighting": ("sigma2", "likelihood")}


def test_unknown_perturbation_is_refused():
    with pytest.raises(ValueError, match="perturbation must be one of"):
        get_lcss_checkerboard_config("lcss", perturbation="g(t)")


def _tiny(run: str):
    config = lcss_checkerboard.config_for(run, seed=3)
    config.data.num_points = 1024
    config.training.batch_size = 256
    config.model.hidden = (32, 32)
    return config


def test_first_update_of_lcss_equals_dsm_up_to_rounding_but_not_with_g_of_t():
    # Same initial state, batch and key: LCSS (Eq. 19 at the marginal std) has DSM's gradient,
    # so the two Adam updates agree to float32 rounding (relative ~1e-7 per element; 1e-5 leaves
    # room for a near-zero gradient entry whose sign rounding flips, which moves that parameter
    # by 2·lr in Adam's first step). With σ = g(t) the perturbed points and weights differ.
    dsm, lcss, diffusion = _tiny("dsm"), _tiny("lcss"), _tiny("lcss_diffusion")
    assert lcss_checkerboard.first_step_gap(dsm, lcss) < 1e-5
    assert lcss_checkerboard.first_step_gap(dsm, diffusion) > 0.1


def test_mean_ci_is_the_student_t_half_width():
    # [1, 2, 3]: mean 2, sample std 1, t_{0.975, 2} = 4.302653 (tables).
    mean, half = lcss_checkerboard.mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
    assert lcss_checkerboard.mean_ci([5.0]) == (5.0, 0.0)
