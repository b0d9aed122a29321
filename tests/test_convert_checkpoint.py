"""Published checkpoints into the library (``sgm_jax.convert_checkpoint``, DESIGN §3.9).

The fast tests need neither torch nor downloads: they write training checkpoints in each
published layout by hand (``tests/pth_writer.py``) from the state-dict layouts of the official
networks (names, shapes, and which entries are trainable parameters, frozen parameters or
buffers), recorded from score_sde_pytorch's own code in ``tests/data/torch_layouts.json``. Random
values make every array distinct, so each check below fails when an array lands in the wrong
place. The slow tests (torch and checkouts of score_sde_pytorch beside this repository:
``tests/official_networks.py``) compare the converted networks' scores with score_sde_pytorch's
``get_score_fn`` on the same inputs.
"""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import serialization, traverse_util

import main as entry
import config_files
import official_networks
from pth_writer import write_arrays_pth
from sgm_jax import convert_checkpoint
from sgm_jax.checkpoints import load_checkpoint, restore_score_model
from sgm_jax.experiment import build_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(official_networks.LAYOUTS) as _f:
    LAYOUTS = json.load(_f)
#: float32's unit roundoff.
UNIT_ROUNDOFF = 2.0 ** -24
#: A tiny evaluation: a few samples from a short PC sampler, no Inception, no likelihood.
TINY_EVAL = {"sde.num_scales": 4, "eval.batch_size": 8, "eval.num_samples": 8,
             "eval.enable_fid": False, "eval.enable_bpd": False, "eval.enable_asym": False,
             "sampling.num_samples": 8}


def _config(case: str, **overrides):
    """The library's config of ``case`` with the case's fields and ``overrides``."""
    _, _, path, fields, _ = official_networks.CASES[case]
    return config_files.load(path, {**fields, **overrides})


def _published(case: str, seed: int = 0, *, data_parallel: bool = True, step: int | None = 26,
               ema: bool = True) -> dict:
    """A training checkpoint of ``case`` in score_sde_pytorch's layout (random values): the model
    state dict, the EMA's ``shadow_params`` (one array per trainable parameter, in order),
    Adam's state and the step."""
    rng = np.random.default_rng(seed)
    model = collections.OrderedDict()
    for name, shape, _ in LAYOUTS[case]:
        model[name if data_parallel else name[len("module."):]] = rng.normal(
            size=shape).astype(np.float32)
    trainable = [shape for _, shape, kind in LAYOUTS[case] if kind == "param"]
    checkpoint = {"optimizer": {"state": {0: {"step": np.array(3.0, np.float32)}},
                                "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999)}]},
                  "model": model}
    if ema:
        checkpoint["ema"] = {"decay": 0.999, "num_updates": 26, "shadow_params": [
            rng.normal(size=shape).astype(np.float32) for shape in trainable]}
    if step is not None:
        checkpoint["step"] = step
    return checkpoint


def _flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(
        jax.device_get(tree), sep="/").items()}


def _expected_places(case: str) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """Where a few entries of each network must land (written from score_sde_pytorch's
    ``NCSNpp.__init__`` / ``DDPM.__init__`` and the library's Flax names, independently of the
    converter): torch name → (Flax path under ``params``, the transposition)."""
    entries = [name for name, _, _ in LAYOUTS[case]]
    last = max(int(n.split(".")[2]) for n in entries if n.startswith("module.all_modules."))
    hwio, io = (2, 3, 1, 0), (1, 0)
    if case == "vp_ddpm_continuous":  # Dense, Dense, conv, ResnetBlockDDPM, ...
        return {"module.all_modules.0.weight": ("Dense_0/kernel", io),
                "module.all_modules.2.weight": ("Conv_0/kernel", hwio),
                "module.all_modules.3.GroupNorm_0.weight": ("ResnetBlockDDPMpp_0/GroupNorm_0/scale",
                                                            None),
                "module.all_modules.3.Dense_0.weight": ("ResnetBlockDDPMpp_0/Dense_0/kernel", io),
                f"module.all_modules.{last}.weight": ("Conv_1/kernel", hwio)}
    first = 1 if case.startswith("ve_") else 0  # the Gaussian Fourier projection comes first
    places = {f"module.all_modules.{first}.weight": ("Dense_0/kernel", io),
              f"module.all_modules.{first + 2}.weight": ("Conv_0/kernel", hwio),
              f"module.all_modules.{first + 3}.GroupNorm_0.weight":
                  ("ResnetBlockBigGANpp_0/GroupNorm_0/scale", None),
              f"module.all_modules.{first + 3}.Conv_1.weight":
                  ("ResnetBlockBigGANpp_0/Conv_1/kernel", hwio),
              f"module.all_modules.{last}.weight": ("Conv_1/kernel", hwio)}
    if first:
        places["module.all_modules.0.W"] = ("GaussianFourierProjection_0/W", None)
    return places


def _transposed(array, axes):
    return array if axes is None else array.transpose(axes)


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_every_published_score_layout_maps_onto_the_library_network(case):
    """The model and its EMA land where score_sde_pytorch's construction order puts them; the
    EMA's list skips the frozen Fourier frequencies (a list that counted them would shift every
    EMA array by one and fail here)."""
    from sgm_jax.models import torch_layout

    experiment = build_experiment(_config(case))
    layout = torch_layout.network_layout(*_network_and_example(experiment))
    checkpoint = _published(case)
    published = convert_checkpoint._from_pytorch(checkpoint, layout, "test", case)
    params, ema = _flat(published.params), _flat(published.ema_params)
    model = checkpoint["model"]
    for name, (path, axes) in _expected_places(case).items():
        np.testing.assert_array_equal(params[path], _transposed(model[name], axes), err_msg=name)
    trainable = [n for n, _, kind in LAYOUTS[case] if kind == "param"]
    shadow = dict(zip(trainable, checkpoint["ema"]["shadow_params"], strict=True))
    for name, (path, axes) in _expected_places(case).items():
        want = model[name] if name.endswith(".W") and name in dict(
            (n, k) for n, _, k in LAYOUTS[case] if k == "frozen") else shadow[name]
        np.testing.assert_array_equal(ema[path], _transposed(want, axes), err_msg=name)
    assert published.step == 26
    assert sum(a.size for a in params.values()) == sum(
        math.prod(s) for _, s, kind in LAYOUTS[case] if kind != "buffer")


def _network_and_example(experiment):
    return (experiment.network, jax.ShapeDtypeStruct((1, *experiment.event_shape), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("data_parallel", [True, False])
def test_convert_writes_the_step_and_a_record(tmp_path, layout, data_parallel):
    case = "ve_ncsnpp_deep_one_level"
    source = tmp_path / "checkpoint_26.pth"
    checkpoint = _published(case, 1, data_parallel=data_parallel)
    write_arrays_pth(source, checkpoint, layout)
    config = _config(case)
    workdir = str(tmp_path / "run")
    assert convert_checkpoint.convert(source, config, workdir) == 26
    state = load_checkpoint(build_experiment(config), workdir)
    assert int(state.step) == 26
    prefix = "module." if data_parallel else ""
    np.testing.assert_array_equal(_flat(state.params)["params/Conv_0/kernel"],
                                  checkpoint["model"][f"{prefix}all_modules.3.weight"]
                                  .transpose(2, 3, 1, 0))
    with open(os.path.join(workdir, convert_checkpoint.RECORD)) as f:
        record = json.load(f)
    import hashlib
    assert record == {"source": "checkpoint_26.pth", "step": 26,
                      "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                      "format": convert_checkpoint.PYTORCH_SCORE}
    with pytest.raises(ValueError, match="already holds a checkpoint of step 26"):
        convert_checkpoint.convert(source, config, workdir)


def test_a_file_without_step_or_ema_is_step_zero_with_its_weights_as_ema(tmp_path):
    """QCSBM's released files have no step; a file without EMA uses its weights for both."""
    case = "ve_ncsnpp_deep_one_level"
    source = tmp_path / "checkpoint.pth"
    checkpoint = _published(case, 2, step=None, ema=False)
    write_arrays_pth(source, checkpoint)
    config = _config(case)
    assert convert_checkpoint.convert(source, config, str(tmp_path / "run")) == 0
    state = load_checkpoint(build_experiment(config), str(tmp_path / "run"))
    for key, value in _flat(state.params).items():
        np.testing.assert_array_equal(_flat(state.ema_params)[key], value)
    # QCSGM's second stage starts at the released stage's step: --step records it
    assert convert_checkpoint.convert(source, config, str(tmp_path / "at"), step=600000) == 600000
    assert int(load_checkpoint(build_experiment(config), str(tmp_path / "at")).step) == 600000
    write_arrays_pth(tmp_path / "with_step.pth", _published(case, 2))
    with pytest.raises(ValueError, match="records step 26; --step=5 is only for files without"):
        convert_checkpoint.convert(tmp_path / "with_step.pth", config, str(tmp_path / "b"), step=5)


@pytest.mark.parametrize("overrides, message", [
    ({"model.nf": 16}, r"'module\.all_modules\.0\.W' \(as 'params/GaussianFourierProjection_0/W' "
                       r"\[8\]\) does not fit the config's network, whose "
                       r"'params/GaussianFourierProjection_0/W' is \[16\]"),
    ({"model.num_res_blocks": 2}, r"the file's network has \d+ layers with parameters and the "
                                  r"config's \d+; the first unmatched is nothing in the file"),
])
def test_a_file_of_another_network_is_refused_naming_both_sides(tmp_path, overrides, message):
    source = tmp_path / "checkpoint_26.pth"
    write_arrays_pth(source, _published("ve_ncsnpp_deep_one_level", 3))
    with pytest.raises(ValueError, match=message):
        convert_checkpoint.convert(source, _config("ve_ncsnpp_deep_one_level", **overrides),
                                   str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_ema_list_of_another_length_and_other_files_are_refused(tmp_path):
    config = _config("ve_ncsnpp_deep_one_level")
    short = _published("ve_ncsnpp_deep_one_level", 4)
    short["ema"]["shadow_params"] = short["ema"]["shadow_params"][1:]
    write_arrays_pth(tmp_path / "short.pth", short)
    with pytest.raises(ValueError, match=r"holds \d+ arrays and the network \d+ trainable"):
        convert_checkpoint.convert(tmp_path / "short.pth", config, str(tmp_path / "a"))
    write_arrays_pth(tmp_path / "state.pth", short["model"])
    with pytest.raises(ValueError, match="not a training checkpoint"):
        convert_checkpoint.convert(tmp_path / "state.pth", config, str(tmp_path / "b"))
    (tmp_path / "noise.bin").write_bytes(b"\xc1" * 64)
    with pytest.raises(ValueError, match="neither a torch.save file nor a msgpack"):
        convert_checkpoint.convert(tmp_path / "noise.bin", config, str(tmp_path / "c"))


def test_score_sde_flax_checkpoints_read_with_msgpack(tmp_path):
    """score_sde's Flax state: {step, optimizer: {target, state}, lr, model_state, ema_rate,
    params_ema, rng}, serialised by flax.serialization (its checkpoints' format)."""
    config = _config("ve_ncsnpp_deep_one_level")
    experiment = build_experiment(config)
    shapes = jax.eval_shape(experiment.init_params, jax.random.key(0))["params"]
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    ema = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    state = {"step": 1300, "optimizer": {"target": params, "state": {"step": 1300}},
             "lr": 2e-4, "model_state": {}, "ema_rate": 0.999, "params_ema": ema,
             "rng": np.zeros(2, np.uint32)}
    source = tmp_path / "checkpoint_26"
    source.write_bytes(serialization.msgpack_serialize(state))
    assert convert_checkpoint.convert(source, config, str(tmp_path / "run")) == 1300
    restored = load_checkpoint(experiment, str(tmp_path / "run"))
    for got, want in ((restored.params, params), (restored.ema_params, ema)):
        for key, value in _flat({"params": want}).items():
            np.testing.assert_array_equal(_flat(got)[key], value)
    del state["params_ema"]["Conv_0"]
    source.write_bytes(serialization.msgpack_serialize(state))
    with pytest.raises(ValueError, match=r"has no EMA parameter for the config's 'Conv_0/bias'"):
        convert_checkpoint.convert(source, config, str(tmp_path / "other"))


def test_published_reference_features_replace_the_training_splits(tmp_path):
    """QCSBM's dataset_stat.npz ({pool_3, logit}) and score_sde's stats files ({pool_3, ...})
    serve as the FID / KID / PRDC reference through eval.reference_features."""
    import types

    from sgm_jax.evaluate.images import reference_statistics

    features = np.random.default_rng(7).normal(size=(50, 2048)).astype(np.float32)
    path = tmp_path / "dataset_stat.npz"
    np.savez(path, pool_3=features, logit=np.zeros((50, 1008), np.float32))
    experiment = types.SimpleNamespace(evaluation=types.SimpleNamespace(
        reference_features=str(path)))
    got = reference_statistics(experiment, inception=None)  # the network is not needed
    np.testing.assert_allclose(got["mu"], features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["cov"], np.cov(features.astype(np.float64), rowvar=False),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got["features"], features)
    np.savez(tmp_path / "other.npz", mu=features.mean(0))
    experiment.evaluation.reference_features = str(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"holds \['mu'\]; a reference needs 'pool_3'"):
        reference_statistics(experiment, None)
    experiment.evaluation.reference_features = str(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="is not a readable .npz"):
        reference_statistics(experiment, None)


def test_main_evaluates_and_fine_tunes_a_converted_checkpoint(tmp_path):
    """The converted file is an ordinary run: ``--mode=eval`` evaluates its EMA model, and the
    QC config fine-tunes it through ``training.init_from`` (QCSGM's second stage)."""
    case = "ve_ncsnpp_deep_one_level"
    source = tmp_path / "checkpoint_26.pth"
    checkpoint = _published(case, 6)
    write_arrays_pth(source, checkpoint)
    stage1, stage2 = str(tmp_path / "u"), str(tmp_path / "qc")
    command = [sys.executable, "-m", "sgm_jax.convert_checkpoint", str(source),
               f"--config={ROOT}/configs/ve/cifar10_u.py", f"--workdir={stage1}"] + [
        f"--config.{k}={v}" for k, v in official_networks.CASES[case][3].items()]
    out = subprocess.run([c.replace(" ", "") for c in command], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"as step 26 of {stage1}" in out.stdout
    config = _config(case, **TINY_EVAL)
    experiment = build_experiment(config)
    step, score = restore_score_model(experiment, stage1)
    assert step == 26
    with tfds.testing.mock_data(num_examples=16):
        results = entry.run(_config(case, **TINY_EVAL), "eval", stage1)
        assert results["step"] == 26 and results["nfe"] > 0
        assert os.path.exists(os.path.join(stage1, "eval", "ckpt_26.json"))
        qc = _qc_config(case, stage1)
        entry.run(qc, "train", stage2)
    state = load_checkpoint(build_experiment(qc), stage2)
    assert int(state.step) == 28
    before = _flat(load_checkpoint(experiment, stage1).params)
    after = _flat(state.params)
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # it trained


def _qc_config(case: str, init_from: str):
    return config_files.load("configs/ve/cifar10_qc.py", {
        **official_networks.CASES[case][3], **TINY_EVAL,
        "training.init_from": init_from, "training.init_step": -1, "training.n_iters": 28,
        "training.batch_size": 8, "training.n_jitted_steps": 1,
        "training.log_freq": 1, "training.eval_freq": 0, "training.snapshot_freq": 2,
        "training.keep_every": 0, "training.snapshot_sampling": False,
        "eval.enable_sampling": False})


# ------------------------------------------------------------------------------------- slow


def _tolerance(experiment, reference: np.ndarray) -> float:
    """float32 rounding of the network: each of its L weighted layers (kernels) rounds dot
    products of at most n terms, ≲ √n·u of their scale with high probability (Higham & Mary
    2019), and normalisation keeps every layer's output at its input's scale, so the output is
    off by ≲ L·√n·u of its scale."""
    shapes = jax.eval_shape(experiment.init_params, jax.random.key(0))["params"]
    kernels = [leaf.shape for path, leaf in traverse_util.flatten_dict(shapes, sep="/").items()
               if path.endswith(("kernel", "weight"))]
    fan_in = max(math.prod(shape[:-1]) for shape in kernels)
    return len(kernels) * math.sqrt(fan_in) * UNIT_ROUNDOFF * float(np.abs(reference).max())


@pytest.mark.slow
def test_layouts_are_those_of_the_official_code():
    reason = official_networks.available("score_sde_pytorch")
    if reason:
        pytest.skip(reason)
    for case in official_networks.CASES:
        want = json.loads(subprocess.run(
            [sys.executable, official_networks.__file__, "layout", case], check=True,
            capture_output=True, text=True).stdout.strip().splitlines()[-1])
        assert want == LAYOUTS[case], case


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(official_networks.CASES))
def test_converted_official_checkpoints_give_score_sde_pytorchs_scores(tmp_path, case):
    """score_sde_pytorch's own network, random weights and a different random EMA, saved in its
    checkpoint format by torch.save, converted: the library's score of the EMA weights equals
    ``get_score_fn``'s on the same inputs to float32 rounding."""
    _check_against_official(tmp_path, case, "score_sde_pytorch", "checkpoint", "checkpoint.pth")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ve_ncsnpp_deep_continuous", "vp_ddpmpp_continuous"])
def test_converted_score_sde_flax_checkpoints_give_score_sdes_scores(tmp_path, case):
    """The same with score_sde's own Flax network and its msgpack checkpoint format."""
    _check_against_official(tmp_path, case, "score_sde", "flax_checkpoint", "checkpoint_26")


def _check_against_official(tmp_path, case, repository, command, name):
    reason = official_networks.available(repository)
    if reason:
        pytest.skip(reason)
    subprocess.run([sys.executable, official_networks.__file__, command, case, str(tmp_path)],
                   check=True, capture_output=True)
    config = _config(case)
    workdir = str(tmp_path / "run")
    assert convert_checkpoint.convert(tmp_path / name, config, workdir) == 26
    experiment = build_experiment(config)
    _, score = restore_score_model(experiment, workdir)
    reference = np.load(tmp_path / "reference.npz")
    x = jnp.asarray(reference["x"].transpose(0, 2, 3, 1))
    got = np.asarray(jax.jit(score)(x, jnp.asarray(reference["t"]))).transpose(0, 3, 1, 2)
    error = np.abs(got - reference["out"]).max()
    bound = _tolerance(experiment, reference["out"])
    print(f"{case}: max |Δ| {error:.3g}, relative {error / np.abs(reference['out']).max():.3g}, "
          f"bound {bound:.3g}")
    assert error <= bound


def _dlsm_config(**overrides):
    """configs/dlsm/cifar10_dlsm.py with the one-level NCSN++ as its score half (the classifier is
    the released ResNet-18 at full size)."""
    return config_files.load("configs/dlsm/cifar10_dlsm.py", {
        **official_networks.CASES["ve_ncsnpp_deep_one_level"][3], **overrides})


def test_a_dlsm_run_converts_its_score_model_then_its_released_classifier(tmp_path):
    """Two conversions into one workdir: the score model into WORKDIR/checkpoints, then the
    classifier ({model, optimizer, step}, BatchNorm running statistics, no EMA) into
    WORKDIR/classifier/checkpoints, recorded against that score checkpoint as a trained DLSM run
    records it, so the DLSM evaluation loads the pair."""
    from test_classifiers import official_state_dict

    from sgm_jax import checkpoints
    from sgm_jax.classifier_experiment import build_classifier_experiment

    config = _dlsm_config(**{"training.batch_size": 8})
    config.classifier.training.batch_size = 8  # the 8 test devices divide it
    workdir = str(tmp_path / "run")
    classifier_file = tmp_path / "classifier_checkpoint.pth"
    rng = np.random.default_rng(8)
    model = collections.OrderedDict(
        (name, np.array(7, np.int64) if name.endswith("num_batches_tracked") else
         rng.uniform(0.5, 1.5, shape).astype(np.float32) if name.endswith("running_var") else
         rng.normal(size=shape).astype(np.float32))
        for name, shape in official_state_dict(18, 10).items())
    write_arrays_pth(classifier_file, {"optimizer": {"state": {}, "param_groups": []},
                                       "model": model, "step": 60000})
    with pytest.raises(ValueError, match="no checkpoint"):  # the score model comes first
        convert_checkpoint.convert(classifier_file, config, workdir)
    score_file = tmp_path / "score_checkpoint.pth"
    write_arrays_pth(score_file, _published("ve_ncsnpp_deep_one_level", 9))
    assert convert_checkpoint.convert(score_file, config, workdir) == 26
    assert convert_checkpoint.convert(classifier_file, config, workdir) == 60000

    experiment = build_classifier_experiment(config)
    score_params, classifier, step, record = checkpoints.load_models(experiment, workdir)
    assert step == 60000 and record["step"] == 26
    variables = _flat(classifier)
    prefix = "module.classifier.classifier."
    np.testing.assert_array_equal(variables["params/layer2_0/shortcut_0/kernel"],
                                  model[prefix + "layer2.0.shortcut.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats/layer2_0/shortcut_1/var"],
                                  model[prefix + "layer2.0.shortcut.1.running_var"])
    np.testing.assert_array_equal(variables["params/condition_modules_0/W"],
                                  model["module.classifier.condition_modules.0.W"])
    np.testing.assert_array_equal(variables["params/linear/kernel"],
                                  model[prefix + "linear.weight"].T)
    with open(os.path.join(workdir, "classifier", convert_checkpoint.RECORD)) as f:
        assert json.load(f)["format"] == convert_checkpoint.PYTORCH_CLASSIFIER
    not_dlsm = _config("ve_ncsnpp_deep_one_level")
    with pytest.raises(ValueError, match="a DLSM classifier needs a configs/dlsm config"):
        convert_checkpoint.convert(classifier_file, not_dlsm, str(tmp_path / "other"))
