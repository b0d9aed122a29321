"""The FID Inception network, its preprocessing and the .pth → .npz converter.

The fast tests need no torch: they write ``.pth`` files by hand (``tests/pth_writer.py``; the
reader itself is tested in ``tests/test_pth.py``). The slow test compares with
pytorch-fid itself and needs the ``parity`` extra (``pip install -e ".[test,parity]"``).
"""

from __future__ import annotations

import collections
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sgm_jax.metrics import (feature_statistics, frechet_distance, inception_weights_hash,
                             load_inception)
from sgm_jax.metrics.convert_inception import main as convert_main
from sgm_jax.metrics.convert_inception import read_torch_state_dict, torch_to_flax
from sgm_jax.metrics.inception import (FIDInceptionV3, inception_variable_shapes, preprocess,
                                       resize_bilinear)
from pth_writer import write_arrays_pth

# --------------------------------------------------------------------------------------------
# Converter.


def test_torch_to_flax_renames_and_transposes():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(5, 3, 1, 7)).astype(np.float32)  # [O, I, kh, kw]
    fc = rng.normal(size=(4, 6)).astype(np.float32)  # [out, in]
    state = {"Mixed_6b.branch7x7_2.conv.weight": weight,
             "Mixed_6b.branch7x7_2.bn.weight": np.full(5, 2.0, np.float32),
             "Mixed_6b.branch7x7_2.bn.bias": np.full(5, 3.0, np.float32),
             "Mixed_6b.branch7x7_2.bn.running_mean": np.full(5, 4.0, np.float32),
             "Mixed_6b.branch7x7_2.bn.running_var": np.full(5, 5.0, np.float32),
             "Mixed_6b.branch7x7_2.bn.num_batches_tracked": np.array(3, np.int64),
             "fc.weight": fc, "fc.bias": np.arange(4, dtype=np.float32)}
    got = torch_to_flax(state)
    prefix = "Mixed_6b/branch7x7_2"
    assert sorted(got) == sorted([f"params/{prefix}/conv/kernel", f"params/{prefix}/bn/scale",
                                  f"params/{prefix}/bn/bias", f"batch_stats/{prefix}/bn/mean",
                                  f"batch_stats/{prefix}/bn/var", "params/fc/kernel",
                                  "params/fc/bias"])
    kernel = got[f"params/{prefix}/conv/kernel"]
    assert kernel.shape == (1, 7, 3, 5)  # [kh, kw, I, O]
    assert kernel[0, 4, 2, 1] == weight[1, 2, 0, 4]
    assert got[f"batch_stats/{prefix}/bn/var"][0] == 5.0
    assert got[f"params/{prefix}/bn/scale"][0] == 2.0
    np.testing.assert_array_equal(got["params/fc/kernel"], fc.T)
    with pytest.raises(ValueError, match="unexpected state-dict entry 'AuxLogits.fc.weight'"):
        torch_to_flax({"AuxLogits.fc.weight": fc})


# --------------------------------------------------------------------------------------------
# Preprocessing.


def reference_bilinear(image, out_h, out_w):
    """PyTorch's upsample_bilinear2d (align_corners=False) for float32 images, one output pixel
    at a time: scale and weights in float32, the source coordinate a fused multiply-add rounded
    once to float32, as its compiled kernel (scale·(o + ½) − ½ is exact in float64 for these
    sizes: a 24-bit by 10-bit product)."""
    f32 = np.float32
    in_h, in_w = image.shape[:2]

    def source(o, in_size, out_size):
        if in_size == out_size:
            return o, o, f32(0)
        scale = f32(in_size) / f32(out_size)
        s = max(f32(float(scale) * (o + 0.5) - 0.5), f32(0))
        i0 = min(int(math.floor(s)), in_size - 1)
        i1 = i0 + 1 if i0 < in_size - 1 else i0
        return i0, i1, min(max(s - f32(i0), f32(0)), f32(1))

    out = np.zeros((out_h, out_w) + image.shape[2:])
    for oy in range(out_h):
        y0, y1, ly = source(oy, in_h, out_h)
        for ox in range(out_w):
            x0, x1, lx = source(ox, in_w, out_w)
            out[oy, ox] = ((1 - ly) * ((1 - lx) * image[y0, x0] + lx * image[y0, x1])
                           + ly * ((1 - lx) * image[y1, x0] + lx * image[y1, x1]))
    return out


@pytest.mark.parametrize("in_shape,out_shape", [((32, 32), (299, 299)), ((17, 45), (40, 23)),
                                                ((64, 64), (64, 64)), ((341, 7), (299, 3))])
def test_resize_matches_pytorch_bilinear_formula(in_shape, out_shape):
    image = np.random.default_rng(2).uniform(size=(1,) + in_shape + (3,)).astype(np.float32)
    got = np.asarray(resize_bilinear(image, out_shape))[0]
    # Both round float32 products and sums of values in [0, 1] (~1e-7); source coordinates in
    # float64 instead of PyTorch's float32 would move values by 1.5e-5 here for 341 → 299.
    np.testing.assert_allclose(got, reference_bilinear(image[0], *out_shape), atol=2e-6)


def test_preprocess_maps_uint8_to_minus_one_one_at_299():
    images = np.zeros((2, 20, 30, 3), np.uint8)
    images[1] = 255
    x = np.asarray(preprocess(images))
    assert x.shape == (2, 299, 299, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(x[1], 1.0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# The network with random weights, through the whole .pth → .npz → load_inception path.


def random_torch_state_dict(seed=0):
    """Random weights in PyTorch layout (He-scaled OIHW kernels, non-trivial batch-norm
    statistics), named and shaped after the network's variables (the inverse of the mapping)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in inception_variable_shapes().items():
        collection, *module, leaf = key.split("/")
        name = ".".join(module)
        if leaf == "kernel" and len(shape) == 4:
            kh, kw, cin, cout = shape
            state[f"{name}.weight"] = rng.normal(size=(cout, cin, kh, kw)) * math.sqrt(
                2.0 / (kh * kw * cin))
        elif leaf == "kernel":  # fc
            state[f"{name}.weight"] = rng.normal(size=shape[::-1]) / math.sqrt(shape[0])
        elif leaf == "scale":
            state[f"{name}.weight"] = rng.uniform(0.5, 1.5, shape)
        elif leaf == "bias":
            state[f"{name}.bias"] = 0.1 * rng.normal(size=shape)
        elif leaf == "mean":
            state[f"{name}.running_mean"] = 0.1 * rng.normal(size=shape)
        else:
            assert (collection, leaf) == ("batch_stats", "var")
            state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, shape)
            state[f"{name}.num_batches_tracked"] = np.array(100, np.int64)
    return {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in state.items()}


#: float32's unit roundoff.
UNIT_ROUNDOFF = 2.0 ** -24
#: The network's longest path has 47 convolutions (stem 5, Mixed_5b–5d 3 each, Mixed_6a 3,
#: Mixed_6b–6e 5 each, Mixed_7a 4, Mixed_7b–7c 3 each); the largest is a dot product of
#: 3·3·448 = 4,032 terms (Mixed_7b's branch3x3dbl_2).
DEPTH, MAX_FAN_IN = 47, 4032


def dot_rounding_bound(a, b):
    """Worst-case rounding error of float32 ``a @ b``, in any summation order: γ_n·(|a| @ |b|)
    with γ_n = nu / (1 − nu), n the number of terms (Higham, Accuracy and Stability of Numerical
    Algorithms, §3.1). It scales with the terms, not with the result, which cancels."""
    n = a.shape[-1]
    gamma = n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)
    return gamma * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))


def float64_pool(npz, images):
    """The network's pool features in float64, the reference of the float32 programs."""
    with jax.enable_x64(True):
        with np.load(npz) as data:
            flat = {name: jnp.asarray(data[name], jnp.float64) for name in data.files}
        variables = traverse_util.unflatten_dict(flat, sep="/")
        pool, _ = FIDInceptionV3().apply(variables, preprocess(images).astype(jnp.float64))
        return np.asarray(pool)


def test_convert_and_load_give_pool_and_logits(tmp_path, capsys):
    state = random_torch_state_dict()
    pth, npz = tmp_path / "random_inception.pth", tmp_path / "random_inception.npz"
    write_arrays_pth(pth, collections.OrderedDict(state))
    convert_main([str(pth), str(npz)])
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    assert inception_weights_hash(npz) == digest and f"sha256 {digest}" in capsys.readouterr().out

    fn = load_inception(npz, batch_size=2)
    images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    pool, logits = fn(images)  # two batches, the second zero-padded
    assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
    assert pool.dtype == np.float32 and logits.dtype == np.float32
    assert np.all(np.isfinite(pool)) and np.all(pool >= 0) and np.std(pool) > 0  # after a ReLU
    single_pool, single_logits = fn(images[2:])  # one image: a program of its own batch size

    # Each program's pool against the float64 network. Their rounding differs (the two batch
    # sizes compile to different programs). A dot product of n float32 terms is off by
    # ≲ √n·u times the sum of its terms' magnitudes with high probability (Higham & Mary,
    # SIAM J. Sci. Comput. 2019), and batch norm keeps each layer's output at its input's scale,
    # so after DEPTH layers the features are off by ≲ DEPTH·√MAX_FAN_IN·u ≈ 1.8e-4 of their
    # scale (measured: 4e-7). The row of another image is off by 3e-2 of it (measured), 170
    # times the tolerance.
    reference = float64_pool(npz, images)
    tolerance = DEPTH * math.sqrt(MAX_FAN_IN) * UNIT_ROUNDOFF * np.abs(reference).max()
    np.testing.assert_allclose(pool, reference, rtol=0, atol=tolerance)
    np.testing.assert_allclose(single_pool[0], reference[2], rtol=0, atol=tolerance)

    # The logits are the fc layer of each program's own pool (weights taken from the .pth
    # itself), to the rounding of a 2048-term dot product plus the bias addition.
    weight, bias = state["fc.weight"].T, state["fc.bias"]
    for got_pool, got_logits in ((pool, logits), (single_pool, single_logits)):
        want = got_pool.astype(np.float64) @ weight.astype(np.float64) + bias
        bound = dot_rounding_bound(got_pool, weight) + UNIT_ROUNDOFF * np.abs(want)
        np.testing.assert_array_less(np.abs(got_logits - want), bound)
    empty_pool, empty_logits = fn(images[:0])
    assert empty_pool.shape == (0, 2048) and empty_logits.shape == (0, 1008)
    with pytest.raises(ValueError, match="images must be uint8"):
        fn(images.astype(np.float32))


def test_missing_weights_say_where_to_get_them(tmp_path):
    command = ("python -m sgm_jax.metrics.convert_inception pt_inception-2015-12-05-6726825d.pth "
               "inception_fid.npz")
    url = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
           "pt_inception-2015-12-05-6726825d.pth")
    for missing in (None, ""):
        with pytest.raises(ValueError) as err:
            load_inception(missing)
        assert command in str(err.value) and url in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        load_inception(tmp_path / "absent.npz")
    assert "absent.npz" in str(err.value) and command in str(err.value)
    with pytest.raises(ValueError, match="No Inception weights configured"):
        inception_weights_hash(None)


def test_a_file_of_other_weights_is_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, **{"params/fc/kernel": np.zeros((2048, 10), np.float32)})
    with pytest.raises(ValueError, match="does not hold the FID Inception weights") as err:
        load_inception(path)
    assert "of the wrong shape" in str(err.value) and "convert_inception" in str(err.value)


# --------------------------------------------------------------------------------------------
# Parity with pytorch-fid (slow; needs the parity extra).


SIZES = ((32, 32), (64, 64), (341, 320))  # upsampled twice, downsampled (no antialias) once


def _torch_preprocess(torch, images):
    """uint8 [N, H, W, 3] → pytorch-fid's network input: F.interpolate to 299, then 2x − 1."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    resized = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                              align_corners=False)
    return x, 2.0 * resized - 1.0


def _randomised_fid_inception(torch, pfid_inception, monkeypatch, rng):
    """pytorch-fid's fid_inception_v3, built without downloading, with random weights and
    batch-norm statistics measured on random images of the test's sizes (so that activations
    keep about unit scale and an absolute tolerance means something)."""
    import torchvision

    template = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                               init_weights=False).state_dict()
    monkeypatch.setattr(pfid_inception, "load_state_dict_from_url",
                        lambda *args, **kwargs: template)
    torch.manual_seed(0)
    model = pfid_inception.fid_inception_v3()  # strict load: the same names and shapes
    inputs = [_torch_preprocess(torch, rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8))[1]
              for h, w in SIZES]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.reset_running_stats()
                module.momentum = None  # running statistics = the statistics of the pass
            elif isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
                module.bias.normal_(0.0, 0.1)
        model.train()
        model(torch.cat(inputs))
        model.eval()
    return model


@pytest.mark.slow
def test_parity_with_pytorch_fid(tmp_path, monkeypatch):
    reason = 'the parity test needs torch, torchvision and pytorch-fid: pip install -e ".[parity]"'
    torch = pytest.importorskip("torch", reason=reason)
    pytest.importorskip("torchvision", reason=reason)
    pfid_inception = pytest.importorskip("pytorch_fid.inception", reason=reason)
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    model = _randomised_fid_inception(torch, pfid_inception, monkeypatch, rng)
    state = model.state_dict()
    monkeypatch.setattr(pfid_inception, "load_state_dict_from_url", lambda *a, **k: state)
    pool_net = pfid_inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()

    # Both torch.save layouts read back exactly.
    numpy_state = {k: v.numpy() for k, v in state.items()}
    for layout, zip_format in (("zip", True), ("legacy", False)):
        pth = tmp_path / f"{layout}.pth"
        torch.save(state, pth, _use_new_zipfile_serialization=zip_format)
        read = read_torch_state_dict(pth)
        assert list(read) == list(numpy_state)
        for name, value in numpy_state.items():
            np.testing.assert_array_equal(read[name], value, err_msg=name)
    npz = tmp_path / "inception.npz"
    convert_main([str(tmp_path / "legacy.pth"), str(npz)])
    fn = load_inception(npz, batch_size=4)

    pools, torch_pools, report = [], [], {}
    for height, width in SIZES:
        images = rng.integers(0, 256, (4, height, width, 3), dtype=np.uint8)
        pool, logits = fn(images)
        with torch.no_grad():
            x, preprocessed = _torch_preprocess(torch, images)
            want_pool = pool_net(x)[0][:, :, 0, 0].numpy()
            want_logits = model(preprocessed).numpy()
        for name, got, want in (("pool", pool, want_pool), ("logits", logits, want_logits)):
            abs_err = np.max(np.abs(got - want))
            report[f"{name} {height}x{width}"] = (
                f"max abs {abs_err:.2e}, relative to max |torch| {abs_err / np.abs(want).max():.2e}"
                f", max |torch| {np.abs(want).max():.2f}")
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{name} {height}x{width}")
        pools.append(pool)
        torch_pools.append(want_pool)

    # In float64 both networks compute the same function to float64 rounding: the float32
    # differences above are the rounding of different convolution algorithms, amplified by the
    # batch norms (1/√(var + ε) up to ~3 per layer with these statistics).
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
        inputs = 2.0 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                                       align_corners=False) - 1.0
        want_pool = pool_net.double()(x)[0][:, :, 0, 0].numpy()
        want_logits = model.double()(inputs).numpy()
    with jax.enable_x64(True):
        flat = {k: jnp.asarray(v, jnp.float64) for k, v in torch_to_flax(numpy_state).items()}
        variables = traverse_util.unflatten_dict(flat, sep="/")
        pool, logits = jax.jit(FIDInceptionV3().apply)(
            variables, jnp.asarray(inputs.permute(0, 2, 3, 1).numpy()))
        pool, logits = np.asarray(pool), np.asarray(logits)
    for name, got, want in (("pool", pool, want_pool), ("logits", logits, want_logits)):
        report[f"{name} float64"] = f"max abs {np.max(np.abs(got - want)):.2e}"
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=f"{name} float64")
    print("\n".join(f"{k}: {v}" for k, v in report.items()))

    # FID against pytorch-fid's scipy.linalg.sqrtm formula (2048-d statistics), on
    # well-conditioned covariances, and on the network's own features (8 vs 4 points: singular
    # covariances, where sqrtm's error on the ~2040-dimensional null space, of order
    # F·sqrt(ε·λ_max) ~ 1e-4 here, bounds the agreement).
    features = [rng.normal(size=(4096, 2048)) @ rng.normal(size=(2048, 2048)) / 45.0 + shift
                for shift in (0.0, 0.1)]
    network_stats = [*feature_statistics(np.concatenate(pools[:2])), *feature_statistics(pools[2])]
    cases = {"well-conditioned": ([*feature_statistics(features[0]),
                                   *feature_statistics(features[1])], 1e-6),
             "network features": (network_stats, 1e-4)}
    for name, (stats, rel) in cases.items():
        got, want = frechet_distance(*stats), calculate_frechet_distance(*stats)
        print(f"FID, {name}: sgm_jax {got!r}, pytorch-fid {want!r}, relative difference "
              f"{abs(got - want) / want:.2e}")
        assert got == pytest.approx(want, rel=rel), name
    # End to end: sgm_jax on its own features against pytorch-fid on torch's features.
    got = frechet_distance(*network_stats)
    want = calculate_frechet_distance(*feature_statistics(np.concatenate(torch_pools[:2])),
                                      *feature_statistics(torch_pools[2]))
    print(f"FID end to end: sgm_jax {got!r}, pytorch-fid {want!r}, relative difference "
          f"{abs(got - want) / want:.2e}")
    assert got == pytest.approx(want, rel=1e-4)
