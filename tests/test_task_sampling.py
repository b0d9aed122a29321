"""``main.py --mode=sample`` with the fast samplers and the conditional tasks (``sampling.method``
"ddim" / "heun", ``sampling.task`` "inpaint" / "colorize" / "dps"), on the eight forced devices,
and the validation of the new ``config.sampling`` fields.

The checkpoints are untrained networks saved as step 0 (NCSN++ starts with a zero output layer,
so its score is 0): what is under test is the wiring (inputs from the test split, the sharded
program, the files, the NFE, the known pixels), not sample quality. With a zero score the
Langevin corrector's step would divide by ‖s‖ = 0, so the PC tasks run without a corrector.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

import main as entry
from configs.subvp import cifar10_ddpmpp_continuous as subvp_ddpmpp
from configs.ve import cifar10_qc, digits_qc
from sgm_jax import checkpoints
from sgm_jax.experiment import build_experiment
from sgm_jax.sampling import operators

DIGITS = {"data.image_size": 8, "model.nf": 8, "model.ch_mult": (1, 2),
          "model.num_res_blocks": 1, "model.attn_resolutions": (4,), "sde.num_scales": 6,
          "sampling.num_samples": 12, "sampling.corrector": "none", "sampling.ddim_steps": 3,
          "sampling.heun_steps": 3, "sampling.dps_steps": 4}


def _config(module, **overrides):
    config = module.get_config()
    for path, value in {**DIGITS, **overrides}.items():
        section, field = path.split(".")
        config[section][field] = value
    return config


def _save_untrained(config, workdir):
    experiment = build_experiment(config)
    state = jax.jit(lambda: checkpoints.init_state(experiment))()
    with checkpoints.manager(checkpoints.checkpoint_dir(workdir)) as manager:
        manager.save(0, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("digits"))
    _save_untrained(_config(digits_qc), workdir)
    return workdir


def test_inpainting_keeps_the_known_pixels_and_writes_the_triptych(digits_run):
    """12 test digits (batch 16 over 8 devices) with the centre square drawn: the samples equal
    the ground truth outside it (uint8, exactly), the shown inputs are grey inside it, NFE = N;
    the PNG holds input, output and truth per example."""
    config = _config(digits_qc, **{"sampling.task": "inpaint"})
    path = entry.run(config, "sample", digits_run)
    assert path.endswith("samples/inpaint_step_0.npz") and os.path.exists(path[:-3] + "png")
    out = np.load(path)
    mask = operators.inpainting_mask("centre_square", (8, 8, 1)) > 0
    assert out["samples"].shape == out["truth"].shape == out["inputs"].shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(out["samples"][:, mask[..., 0]], out["truth"][:, mask[..., 0]])
    assert np.all(out["inputs"][:, ~mask[..., 0]] == 128) and int(out["nfe"]) == 6
    assert json.loads(str(out["settings"]))["mask"] == "centre_square"
    test = build_experiment(config).data
    first = next(iter(test.eval_batches(16)))
    np.testing.assert_array_equal(out["labels"], first["label"][:12])


def test_dps_super_resolution_measures_and_upsamples(digits_run):
    """DPS with 2 × 2 average pooling: the shown inputs are the measurements y = A(x) + n (4 × 4)
    repeated to 8 × 8, NFE = dps_steps."""
    config = _config(digits_qc, **{"sampling.task": "dps", "sampling.operator": "pool",
                                   "sampling.noise_std": 0.0})
    out = np.load(entry.run(config, "sample", digits_run))
    inputs = out["inputs"].astype(np.float64)
    np.testing.assert_array_equal(inputs[:, ::2, ::2], inputs[:, 1::2, 1::2])
    pooled = out["truth"].astype(np.float64).reshape(12, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    assert np.max(np.abs(inputs[:, ::2, ::2] - pooled)) <= 1.0  # noiseless: rounding only
    assert int(out["nfe"]) == 4


def test_heun_from_the_sample_mode(digits_run):
    """A fast sampler through ``sampling.method`` (the unconditional sample mode): NFE 2N − 1."""
    config = _config(digits_qc, **{"sampling.method": "heun"})
    out = np.load(entry.run(config, "sample", digits_run))
    assert out["images"].shape == (12, 8, 8, 1) and int(out["nfe"]) == 5


@pytest.mark.slow
def test_colorization_keeps_the_grey_level(tmp_path):
    """CIFAR-10 QC at tiny width on mock data: the outputs' grey level (r + g + b)/3 is the
    input's up to uint8 rounding of the three channels (σ_max = 0.05, so that the chroma drawn
    by the zero score stays inside [0, 1] and no channel is clipped)."""
    config = _config(cifar10_qc, **{"sampling.task": "colorize", "data.image_size": 8,
                                    "sde.sigma_max": 0.05,
                                    "training.batch_size": 8, "eval.batch_size": 8,
                                    "sampling.num_samples": 8})
    with tfds.testing.mock_data(num_examples=16):
        _save_untrained(config, str(tmp_path))
        out = np.load(entry.run(config, "sample", str(tmp_path)))
    assert out["samples"].shape == (8, 8, 8, 3) and np.all(out["inputs"][..., :1] ==
                                                           out["inputs"][..., 2:])
    grey = out["samples"].astype(np.float64).mean(-1)
    inside = (out["samples"] > 0).all(-1) & (out["samples"] < 255).all(-1)  # no channel clipped
    assert inside.any()
    np.testing.assert_allclose(grey[inside], out["inputs"][..., 0][inside], atol=1.0)


@pytest.mark.parametrize("overrides,match", [
    ({"sampling.task": "colorize"}, r"sampling.task='colorize' needs RGB images"),
    ({"sampling.task": "paint"}, r"sampling.task must be one of \('generate', 'inpaint', "
                                 r"'colorize', 'dps'\); got 'paint'"),
    ({"sampling.method": "ddpm"}, r"sampling.method must be one of \('ode', 'pc', "
                                  r"'reverse_sde', 'ddim', 'heun'\); got 'ddpm'"),
    ({"sampling.eta": 1.5}, r"sampling.eta must be a finite number >= 0 and <= 1; got 1.5"),
    ({"sampling.s_min": 2.0, "sampling.s_max": 1.0},
     r"sampling.s_max must be a number \(or inf\) >= 2; got 1.0"),
    ({"sampling.heun_steps": 0}, r"sampling.heun_steps must be an integer >= 1; got 0"),
    ({"sampling.task": "inpaint", "sampling.mask": "file"},
     r"sampling.mask='file' needs sampling.mask_file"),
    ({"sampling.task": "inpaint", "sampling.mask": "top"},
     r"mask must be one of \('left_half', 'centre_square', 'random', 'file'\); got 'top'"),
    ({"sampling.task": "dps", "sampling.pool_factor": 3},
     r"sampling.pool_factor=3 must divide the image size \(8, 8\)"),
    ({"sampling.task": "dps", "sampling.zeta": -1.0}, r"sampling.zeta must be a finite number >= 0"),
    ({"sampling.task": "dps", "sampling.operator": "warp"},
     r"operator must be one of \('mask', 'pool', 'blur'\); got 'warp'"),
])
def test_bad_sampling_fields_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_experiment(_config(digits_qc, **overrides))


def test_ancestral_on_subvp_is_refused():
    config = subvp_ddpmpp.get_config()
    config.sampling.predictor = "ancestral"
    with pytest.raises(ValueError, match=r"sampling.predictor='ancestral' needs sde.name 'vesde' "
                                         r"or 'vpsde'.*got 'subvpsde'"):
        build_experiment(config)


def test_a_toy_run_has_no_tasks():
    from configs.toy import checkerboard_qc

    config = checkerboard_qc.get_config()
    config.sampling.task = "inpaint"
    with pytest.raises(ValueError, match=r"sampling.task='inpaint' needs image data"):
        build_experiment(config)
    config.sampling.task = "generate"
    config.sampling.method = "heun"
    assert build_experiment(config).sampler_settings == {
        "method": "heun", "num_steps": 18, "rho": 7.0, "s_churn": 0.0, "s_min": 0.0,
        "s_max": float("inf"), "s_noise": 1.0}
    jax.clear_caches()
