"""Image score networks: FIR resampling, NCSN++ layers, NCSN++ / DDPM++ / DDPM, parameter counts.

References are direct NumPy computations of the definitions (upfirdn, the fused resampling
convolutions as one composite filter, softmax attention, the embeddings) and score_sde's own
parameter counts for its CIFAR-10 configurations.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sgm_jax import config_sections, models
from sgm_jax.models import layerspp
from sgm_jax.models import up_or_down_sampling as updown

# float32 sums of a few hundred products of O(1) terms: relative rounding ~1e-6.
F32_TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- NumPy references


def np_upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    """upfirdn of ``x`` [B, H, W, C] written out pixel by pixel (float64)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    b, h, w, c = x.shape
    u = np.zeros((b, h * up, w * up, c))
    u[:, ::up, ::up, :] = x
    p0, p1 = pad
    u = np.pad(u, [(0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0)), (0, 0)])
    u = u[:, max(-p0, 0) : u.shape[1] - max(-p1, 0), max(-p0, 0) : u.shape[2] - max(-p1, 0)]
    kh, kw = kernel.shape
    out = np.zeros((b, u.shape[1] - kh + 1, u.shape[2] - kw + 1, c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            patch = u[:, i : i + kh, j : j + kw, :]
            # True convolution: the kernel is flipped.
            out[:, i, j, :] = np.einsum("bhwc,hw->bc", patch, kernel[::-1, ::-1])
    return out[:, ::down, ::down, :]


def np_fir_kernel(k, scale):
    k = np.outer(k, k).astype(np.float64)
    return k / k.sum() * scale


def np_full_conv2d(a, b):
    """Full 2-D true convolution of two small kernels."""
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
    for i in range(b.shape[0]):
        for j in range(b.shape[1]):
            out[i : i + a.shape[0], j : j + a.shape[1]] += b[i, j] * a
    return out


def np_fused(x, w, fir, factor, up):
    """A fused resampling conv as ONE composite filter on the once-padded input.

    The conv w (a correlation, i.e. the true convolution with flipped w) and the FIR filter
    combine into K_io = fir * flip(w_io). Up: the composite is placed where FIR upsampling
    followed by a 'SAME' conv would put it (left pad = upsample pad + (k − 1)/2), output H·f.
    Down: pad ((p + 1)//2, p//2) with p = len(fir) − f + k − 1 (StyleGAN2), stride f.
    """
    k = w.shape[0]
    kf = len(fir)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    if up:
        fir2 = np_fir_kernel(fir, factor**2)
        p0 = (kf - factor + 1) // 2 + factor - 1 + (k - 1) // 2
        pad = (p0, kf + k - 2 - p0)
    else:
        fir2 = np_fir_kernel(fir, 1.0)
        p = kf - factor + k - 1
        pad = ((p + 1) // 2, p // 2)
    outs = []
    for o in range(w.shape[3]):
        acc = 0.0
        for i in range(w.shape[2]):
            composite = np_full_conv2d(fir2, w[::-1, ::-1, i, o])
            kwargs = dict(up=factor) if up else dict(down=factor)
            acc = acc + np_upfirdn2d(x[..., i : i + 1], composite, pad=pad, **kwargs)[..., 0]
        outs.append(acc)
    return np.stack(outs, axis=-1)


def np_group_norm(x, groups, scale, bias, eps=1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def randomised(params, seed, scale=0.3):
    """Every parameter plus scale·N(0, 1): zero-initialised layers would hide wrong wiring."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: (np.asarray(p) + scale * rng.standard_normal(p.shape)).astype(p.dtype), params
    )


# ------------------------------------------------------------------------ FIR up/down-sampling


@pytest.mark.parametrize(
    "up, down, pad, size, kshape",
    [
        (1, 1, (0, 0), (7, 5), (4, 3)),
        (2, 1, (2, 1), (5, 6), (4, 4)),
        (1, 2, (1, 1), (8, 7), (4, 4)),
        (3, 2, (-1, 2), (5, 5), (3, 5)),
        (2, 3, (0, 4), (7, 4), (2, 3)),
    ],
)
def test_upfirdn2d_matches_numpy(up, down, pad, size, kshape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3)).astype(np.float32)
    kernel = rng.standard_normal(kshape).astype(np.float32)  # non-symmetric
    got = updown.upfirdn2d(jnp.asarray(x), kernel, up=up, down=down, pad=pad)
    np.testing.assert_allclose(got, np_upfirdn2d(x, kernel, up, down, pad), **F32_TOL)


def test_upfirdn2d_rejects_bad_arguments():
    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="up=0"):
        updown.upfirdn2d(x, np.ones((2, 2)), up=0)
    with pytest.raises(ValueError, match="2-D"):
        updown.upfirdn2d(x, np.ones(3))
    with pytest.raises(ValueError, match="fewer than the kernel size"):
        updown.upfirdn2d(x, np.ones((4, 4)), pad=(-1, 0))


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_fir_resampling_keeps_a_constant_image(gain):
    # Away from the one-pixel border (zero padding), a constant c becomes gain·c.
    x = jnp.full((1, 8, 8, 2), 3.0)
    up = updown.upsample_2d(x, (1, 3, 3, 1), factor=2, gain=gain)
    down = updown.downsample_2d(x, (1, 3, 3, 1), factor=2, gain=gain)
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(up[:, 1:-1, 1:-1], 3.0 * gain, rtol=1e-6)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0 * gain, rtol=1e-6)
    assert not np.allclose(up[:, 0, 0], 3.0 * gain)  # the border does see the padding


@pytest.mark.parametrize("factor", [2, 3])
def test_fir_resampling_matches_numpy(factor):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    fir = (1, 3, 3, 1)
    kf = len(fir)
    p = kf - factor
    got = updown.upsample_2d(jnp.asarray(x), fir, factor=factor)
    ref = np_upfirdn2d(
        x, np_fir_kernel(fir, factor**2), up=factor, pad=((p + 1) // 2 + factor - 1, p // 2)
    )
    np.testing.assert_allclose(got, ref, **F32_TOL)
    got = updown.downsample_2d(jnp.asarray(x), fir, factor=factor)
    ref = np_upfirdn2d(x, np_fir_kernel(fir, 1.0), down=factor, pad=((p + 1) // 2, p // 2))
    np.testing.assert_allclose(got, ref, **F32_TOL)


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("up", [True, False])
def test_fused_resampling_conv_matches_composite_filter(up, factor):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    fn = updown.upsample_conv_2d if up else updown.conv_downsample_2d
    got = fn(jnp.asarray(x), jnp.asarray(w), (1, 3, 3, 1), factor=factor)
    size = 6 * factor if up else 6 // factor
    assert got.shape == (2, size, size, 2)
    np.testing.assert_allclose(got, np_fused(x, w, (1, 3, 3, 1), factor, up), **F32_TOL)


def test_naive_resampling():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(updown.naive_upsample_2d(x)[0, :2, :2, 0], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(
        updown.naive_downsample_2d(x)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]]
    )


# ------------------------------------------------------------------------------ NCSN++ layers


@pytest.mark.parametrize("skip_rescale", [False, True])
def test_attention_block_matches_numpy(skip_rescale):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
    block = layerspp.AttnBlockpp(skip_rescale=skip_rescale)
    params = block.init(jax.random.key(0), jnp.asarray(x))
    params = randomised(params, 1)
    got = block.apply(params, jnp.asarray(x))

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    h = np_group_norm(np.float64(x), 2, p["GroupNorm_0"]["scale"], p["GroupNorm_0"]["bias"])
    q, k, v = (h @ p[f"NIN_{i}"]["W"] + p[f"NIN_{i}"]["b"] for i in range(3))
    b, hh, ww, c = x.shape
    q, k, v = (a.reshape(b, hh * ww, c) for a in (q, k, v))
    logits = q @ k.transpose(0, 2, 1) / math.sqrt(c)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).reshape(x.shape) @ p["NIN_3"]["W"] + p["NIN_3"]["b"]
    ref = (x + out) / (math.sqrt(2) if skip_rescale else 1.0)
    np.testing.assert_allclose(got, ref, **F32_TOL)


def test_gaussian_fourier_projection():
    proj = layerspp.GaussianFourierProjection(embedding_size=4096, scale=16.0)
    s = jnp.asarray([-2.3, 0.0, 1.7])
    params = proj.init(jax.random.key(0), s)
    w = np.asarray(params["params"]["W"], np.float64)
    assert w.shape == (4096,)
    # N(0, 16²): the sample std of 4096 draws is within 16·(1 ± 0.07) (over 6 standard errors).
    assert abs(w.std() / 16.0 - 1.0) < 0.07 and abs(w.mean()) < 16.0 * 6 / 64
    arg = 2 * np.pi * np.float64(s)[:, None] * w[None, :]
    ref = np.concatenate([np.sin(arg), np.cos(arg)], axis=-1)
    # |arg| reaches ~1e3: float32 rounding of the argument is ~1e-4 absolute.
    np.testing.assert_allclose(proj.apply(params, s), ref, atol=5e-4)
    grad = jax.grad(lambda p: jnp.sum(proj.apply(p, s) ** 2))(params)
    np.testing.assert_array_equal(grad["params"]["W"], 0.0)  # W is used through stop_gradient


def test_sinusoidal_embedding_matches_formula():
    t = 999.0 * jnp.asarray([0.0, 1e-3, 0.37, 1.0])
    half = 8
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
    arg = np.float64(t)[:, None] * freqs
    ref = np.concatenate([np.sin(arg), np.cos(arg)], axis=-1)
    # Arguments up to 999: float32 spacing there is 6.1e-5.
    np.testing.assert_allclose(models.sinusoidal_embedding(t, 2 * half), ref, atol=2e-4)


def test_default_init_and_group_norm_errors():
    kernel = layerspp.default_init(0.0)(jax.random.key(0), (3, 3, 16, 16))
    # scale 0 → 1e-10: uniform with limit sqrt(3e-10 / fan_avg), fan_avg = 9·16.
    assert 0 < float(jnp.max(jnp.abs(kernel))) <= math.sqrt(3e-10 / (9 * 16))
    # min(18 // 4, 32) = 4 groups do not divide 18 channels.
    with pytest.raises(ValueError, match="18 channels"):
        _GroupNormProbe().init(jax.random.key(0), jnp.zeros((1, 2, 2, 18)))


class _GroupNormProbe(nn.Module):
    @nn.compact
    def __call__(self, x):
        return layerspp.group_norm(x)


# ---------------------------------------------------------------------------- whole networks

TINY = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.5)

# The option sets of score_sde's configs (CIFAR-10 / CelebA NCSN++, DDPM++, the LSUN / FFHQ /
# CelebA-HQ NCSN++ pyramids), then one network with every remaining value: 'ddpm' blocks with
# FIR resampling without conv, the 'residual' output pyramid, 'input_skip' with 'cat', no skip
# rescaling, unconditional. DDPM covers nearest / stride-2 conv resampling.
NETWORKS = {
    "ncsnpp-cifar10": models.NCSNpp(**TINY),
    "ddpmpp-cifar10": models.NCSNpp(
        **TINY, fir=False, progressive_input="none", embedding_type="positional", centered=True
    ),
    "ncsnpp-lsun": models.NCSNpp(**TINY, progressive="output_skip", progressive_input="input_skip"),
    "ddpm-blocks": models.NCSNpp(
        **TINY, resblock_type="ddpm", resamp_with_conv=False, progressive="residual",
        progressive_input="input_skip", progressive_combine="cat", embedding_type="positional",
        skip_rescale=False, conditional=False, centered=True,
    ),
    "ddpm": models.DDPM(**TINY),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_tiny_network(name):
    net = NETWORKS[name]
    # Rows 2 and 3 repeat the images of rows 0 and 1 with the conditions swapped.
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    x = jnp.concatenate([x, x])
    fourier = getattr(net, "embedding_type", "positional") == "fourier"
    cond = jnp.asarray([-1.2, 2.0, 2.0, -1.2] if fourier else [10.0, 900.0, 900.0, 10.0])
    shapes = jax.eval_shape(net.init, jax.random.key(1), x, cond)
    params = randomised(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), 0, 0.1)

    # XLA's backend optimisations cost ~40% of this compile and change no exact zero or
    # run-to-run equality checked here.
    @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
    def probe(params, x, cond, key):
        out, vjp = jax.vjp(lambda y: net.apply(params, y, cond), x)
        (grad,) = vjp(jnp.zeros_like(out).at[0].set(1.0))
        return out, grad, net.apply(params, x, cond, train=True, rngs={"dropout": key})

    # The 'rbg' key compiles far faster than threefry on CPU; dropout uses it the same way.
    key = jax.random.key(3, impl="rbg")
    out, grad, train = probe(params, x, cond, key)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    # Examples never interact: example 0's output depends on example 0's input only.
    assert bool(jnp.any(grad[0] != 0))
    np.testing.assert_array_equal(grad[1:], 0.0)
    # The condition reaches the output exactly when the network is conditional.
    assert np.allclose(out[0], out[2]) != net.conditional
    # Eval mode is deterministic; train mode applies dropout drawn from the 'dropout' rng.
    assert not np.allclose(train, out)
    again = probe(params, x, cond, key)
    for first, second in zip((out, grad, train), again, strict=True):
        np.testing.assert_array_equal(first, second)
    other_key = probe(params, x, cond, jax.random.key(4, impl="rbg"))
    assert not np.allclose(other_key[2], train)
    np.testing.assert_array_equal(other_key[0], out)


@pytest.mark.parametrize(
    "field, value",
    [
        ("resblock_type", "resnet"),
        ("progressive", "input_skip"),
        ("progressive_input", "output_skip"),
        ("progressive_combine", "avg"),
        ("attention_type", "legacy"),
        ("embedding_type", "learned"),
        ("nonlinearity", "gelu_tanh"),
        ("dropout", 1.0),
        ("conv_size", 2),
        ("nf", 0),
        ("ch_mult", ()),
        ("fourier_scale", -1.0),
    ],
)
def test_ncsnpp_rejects_bad_fields(field, value):
    with pytest.raises(ValueError, match=field):
        models.NCSNpp(**{field: value})


def test_networks_reject_bad_inputs():
    net = models.NCSNpp(**TINY)
    with pytest.raises(ValueError, match="divisible"):
        net.init(jax.random.key(0), jnp.zeros((1, 7, 7, 3)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="cond has shape"):
        net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), jnp.zeros((1,)))


# ------------------------------------------------------------ configs and parameter counts


def _config(name, centered, **model):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(image_size=32, num_channels=3, centered=centered))
    config.model = ml_collections.ConfigDict(
        dict(name=name, parameterisation="u", condition="sigma", **model)
    )
    return config


# score_sde's config.model values (configs/default_cifar10_configs.py and the files below)
# that are network fields; the SDE, EMA and scale_by_sigma keys live elsewhere here.
_NCSNPP_CIFAR10 = dict(
    nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.1,
    resamp_with_conv=True, conditional=True, fir=True, fir_kernel=[1, 3, 3, 1],
    skip_rescale=True, resblock_type="biggan", progressive="none", progressive_input="residual",
    progressive_combine="sum", attention_type="ddpm", init_scale=0.0, embedding_type="fourier",
    fourier_scale=16, conv_size=3, nonlinearity="swish",
)
_DDPMPP_CIFAR10 = dict(
    _NCSNPP_CIFAR10, fir=False, progressive_input="none", embedding_type="positional"
)
_DDPM_CIFAR10 = dict(
    nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
    resamp_with_conv=True, conditional=True, nonlinearity="swish",
)

# Counts from score_sde's own models (jax.eval_shape of NCSNpp / DDPM .init on [1, 32, 32, 3]).
SCORE_SDE_COUNTS = {
    "ve/cifar10_ncsnpp_continuous": (_config("ncsnpp", False, **_NCSNPP_CIFAR10), 62_758_915),
    "ve/cifar10_ncsnpp_deep_continuous": (
        _config("ncsnpp", False, **dict(_NCSNPP_CIFAR10, num_res_blocks=8)), 107_587_075
    ),
    "vp/cifar10_ddpmpp_continuous": (_config("ncsnpp", True, **_DDPMPP_CIFAR10), 61_804_419),
    "subvp/cifar10_ddpmpp_deep_continuous": (
        _config("ncsnpp", True, **dict(_DDPMPP_CIFAR10, num_res_blocks=8)), 106_632_579
    ),
    "vp/ddpm/cifar10_continuous": (_config("ddpm", True, **_DDPM_CIFAR10), 35_218_947),
}


@pytest.mark.parametrize("name", sorted(SCORE_SDE_COUNTS))
def test_param_count_equals_score_sde(name):
    config, expected = SCORE_SDE_COUNTS[name]
    assert models.param_count(config) == expected


def test_the_builder_reads_a_network_section():
    config, _ = SCORE_SDE_COUNTS["vp/cifar10_ddpmpp_continuous"]
    net = config_sections.network(config)
    assert isinstance(net, models.NCSNpp)
    assert net.centered is True and net.fir_kernel == (1, 3, 3, 1) and net.fir is False

    config.model.sigma_max = 50.0
    with pytest.raises(ValueError, match=r"model\.sigma_max .*allowed: \['nf'"):
        config_sections.network(config)
    del config.model["sigma_max"]
    config.model.centered = True
    with pytest.raises(ValueError, match=r"model\.centered .*data\.centered"):
        config_sections.network(config)
