"""DLSM networks: the toy classifier / score model and the noise-conditional ResNet.

References: hand parameter counts from the layer sizes, NumPy forward passes (float64) of the
stored weights, and exact zeros of cross-example Jacobian blocks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgm_jax import models
from sgm_jax.models import gaussian_fourier_embedding

# float32 forward passes of a few hundred products of O(1) terms against float64 NumPy.
F32_TOL = dict(rtol=1e-4, atol=1e-5)


def n_params(variables) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def dense_count(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def key(seed: int) -> jax.Array:
    """A PRNG key of the "rbg" implementation: its random ops compile far faster on CPU than
    threefry's, which keeps ``init`` of the many-layered networks within seconds."""
    return jax.random.key(seed, impl="rbg")


def numpy_params(net, x, cond, seed: int):
    """Generic parameters of ``net`` without running its ``init``: shapes from ``eval_shape``,
    kernels N(0, 1/fan_in), GroupNorm scales 1 + 0.1·N(0, 1), biases 0.1·N(0, 1) (non-zero, so a
    wrong wiring of any bias or scale shows in the output)."""
    shapes = jax.eval_shape(net.init, key(0), x, cond)["params"]
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        z = rng.standard_normal(leaf.shape).astype(np.float32)
        if name == "kernel":
            return jnp.asarray(z / np.sqrt(math.prod(leaf.shape[:-1])))
        return jnp.asarray((1.0 if name == "scale" else 0.0) + 0.1 * z)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------- toy networks


def np_dense(p, h):
    return h @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_toy_trunk(trunk, x, sigma):
    """x-branch D→16nf→ReLU→8nf→ReLU→4nf, σ-branch 1→4nf→ReLU→2nf→ReLU→nf, [x-feat, σ-feat]."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    s = np.asarray(sigma, np.float64)[:, None]
    h = np_dense(trunk["x_linear_0"], h)
    h = np_dense(trunk["x_linear_1"], np.maximum(h, 0))
    h = np_dense(trunk["x_linear_2"], np.maximum(h, 0))
    s = np_dense(trunk["sigma_linear_0"], s)
    s = np_dense(trunk["sigma_linear_1"], np.maximum(s, 0))
    s = np_dense(trunk["sigma_linear_2"], np.maximum(s, 0))
    return np.concatenate([h, s], axis=-1)


def toy_trunk_count(dim: int, nf: int) -> int:
    x_branch = (
        dense_count(dim, 16 * nf) + dense_count(16 * nf, 8 * nf) + dense_count(8 * nf, 4 * nf)
    )
    s_branch = dense_count(1, 4 * nf) + dense_count(4 * nf, 2 * nf) + dense_count(2 * nf, nf)
    return x_branch + s_branch


def torch_init_bound_holds(params) -> bool:
    """Every Dense kernel [fan_in, out] and bias lies in PyTorch's nn.Linear range ±1/√fan_in."""
    dense = [p for p in jax.tree.leaves(params, is_leaf=lambda d: "kernel" in d)]
    return all(
        np.abs(np.asarray(p[name])).max() <= 1.0 / math.sqrt(p["kernel"].shape[0])
        for p in dense
        for name in ("kernel", "bias")
    )


@pytest.mark.parametrize("dim,num_classes", [(2, 2), (3, 5)])
def test_toy_shapes_parameter_counts_and_init(dim, num_classes):
    x = jnp.ones((4, dim))
    sigma = jnp.linspace(0.1, 2.0, 4)
    clf = models.ToyClassifier(num_classes=num_classes)
    score = models.ToyScoreNet()
    vc = clf.init(key(0), x, sigma)
    vs = score.init(key(0), x, sigma)
    assert clf.apply(vc, x, sigma).shape == (4, num_classes)
    assert score.apply(vs, x, sigma).shape == (4, dim)
    # nf = 16: trunk + Linear(80, K) / Linear(80, D).
    assert n_params(vc) == toy_trunk_count(dim, 16) + dense_count(80, num_classes)
    assert n_params(vs) == toy_trunk_count(dim, 16) + dense_count(80, dim)
    if (dim, num_classes) == (2, 2):
        # 768 + 32896 + 8256 (x) + 128 + 2080 + 528 (σ) + 162 (out), the docstrings' figure.
        assert n_params(vc) == n_params(vs) == 44_818
    assert torch_init_bound_holds(vc["params"]) and torch_init_bound_holds(vs["params"])


@pytest.fixture(scope="module")
def toy_nets():
    """(network, variables) for the classifier (3 classes) and the score model, D = 2."""
    x, sigma = jnp.zeros((1, 2)), jnp.ones(1)
    nets = (models.ToyClassifier(num_classes=3), models.ToyScoreNet())
    return [(net, net.init(key(seed), x, sigma)) for seed, net in enumerate(nets)]


def test_toy_networks_match_numpy_forward(toy_nets):
    rng = np.random.default_rng(1)
    x = 5.0 * rng.standard_normal((6, 2)).astype(np.float32)
    sigma = np.exp(rng.uniform(-3.0, 2.0, 6)).astype(np.float32)
    for net, variables in toy_nets:
        params = variables["params"]
        out = net.apply(variables, x, sigma)
        # The raw σ enters the σ-branch; x-features come first in the concatenation.
        ref = np_dense(params["out_linear"], np_toy_trunk(params["trunk"], x, sigma))
        np.testing.assert_allclose(out, ref, **F32_TOL)


def test_toy_networks_take_raw_sigma_per_example(toy_nets):
    x = np.random.default_rng(2).standard_normal((5, 2)).astype(np.float32)
    sigma = jnp.array([1e-3, 0.1, 1.0, 3.0, 10.0])
    for net, variables in toy_nets:
        batched = net.apply(variables, x, sigma)
        one_by_one = jnp.concatenate(
            [net.apply(variables, x[i : i + 1], sigma[i : i + 1]) for i in range(5)]
        )
        np.testing.assert_allclose(batched, one_by_one, rtol=1e-6, atol=1e-6)
        # A scalar σ is broadcast to the batch.
        np.testing.assert_allclose(
            net.apply(variables, x, 3.0), net.apply(variables, x, jnp.full(5, 3.0)), rtol=1e-6
        )
        # Another σ gives another output at the same x, for every example.
        moved = net.apply(variables, x, 2 * sigma)
        assert np.all(np.abs(np.asarray(batched - moved)).max(axis=-1) > 1e-6)


# ----------------------------------------------------------------------------- ResNet


def resnet_count(depth: int, width: int, channels: int, num_classes: int, temb: int = 0,
                 nf: int = 32) -> int:
    """Hand count: bias-free convs, GroupNorm scale + bias (2C) after each conv, 1×1 shortcut
    conv + GN where the stride or width changes, Linear(8 width, K); with temb > 0, the embedding
    Dense(2nf, temb), Dense(temb, temb) and one Dense(temb, C_stage) per stage."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    total = 9 * channels * width + 2 * width
    c_in = width
    for mult, stride, count in zip((1, 2, 4, 8), (1, 2, 2, 2), blocks):
        c = width * mult
        for i in range(count):
            s = stride if i == 0 else 1
            total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            if s != 1 or c_in != c:
                total += c_in * c + 2 * c
            c_in = c
        if temb:
            total += dense_count(temb, c)
    if temb:
        total += dense_count(2 * nf, temb) + dense_count(temb, temb)
    return total + dense_count(8 * width, num_classes)


def test_resnet18_parameter_count_at_full_width():
    net = models.ConditionalResNet(depth=18, width=64, conditional=False)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    cond = jax.ShapeDtypeStruct((1,), jnp.float32)
    count = n_params(jax.eval_shape(net.init, key(0), x, cond))
    # kuangliu's BatchNorm ResNet-18 on CIFAR-10 has 11,173,962 trainable parameters; GN has
    # the same scale + bias per channel.
    assert count == resnet_count(18, 64, 3, 10) == 11_173_962


@pytest.mark.parametrize("depth,num_classes", [(18, 10), (34, 100)])
def test_conditional_resnet_parameter_count(depth, num_classes):
    net = models.ConditionalResNet(depth=depth, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    cond = jax.ShapeDtypeStruct((1,), jnp.float32)
    count = n_params(jax.eval_shape(net.init, key(0), x, cond))
    assert count == resnet_count(depth, 64, 3, num_classes, temb=128, nf=32)


@pytest.mark.parametrize("depth", [18, 34])
def test_resnet_output_shapes(depth):
    net = models.ConditionalResNet(depth=depth, width=8, num_classes=7)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    cond = jax.ShapeDtypeStruct((2,), jnp.float32)
    variables = jax.eval_shape(net.init, key(0), x, cond)
    assert jax.eval_shape(net.apply, variables, x, cond).shape == (2, 7)
    assert n_params(variables) == resnet_count(depth, 8, 3, 7, temb=128, nf=32)


def test_resnet_init():
    """A real ``init`` at width 8: finite logits; GroupNorm at scale 1, bias 0; the embedding
    Dense biases zero (score_sde's init); convolutions, per-stage projections and the output
    Linear within PyTorch's default range ±1/√fan_in."""
    net = models.ConditionalResNet(width=8)
    x, cond = jnp.ones((2, 16, 16, 3)), jnp.zeros(2)
    variables = jax.jit(net.init)(key(0), x, cond)
    assert np.all(np.isfinite(np.asarray(jax.jit(net.apply)(variables, x, cond))))
    modules = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
        names = [entry.key for entry in path]
        modules.setdefault("/".join(names[:-1]), {})[names[-1]] = np.asarray(leaf)
    torch_init = 0
    for name, p in modules.items():
        if "GroupNorm" in name:
            np.testing.assert_array_equal(p["scale"], 1.0)
            np.testing.assert_array_equal(p["bias"], 0.0)
        elif name.startswith("temb_dense"):
            np.testing.assert_array_equal(p["bias"], 0.0)
        else:
            bound = 1.0 / math.sqrt(math.prod(p["kernel"].shape[:-1]))
            for leaf in p.values():
                assert 0.5 * bound < np.abs(leaf).max() <= bound, name
            torch_init += 1
    assert torch_init == 1 + 4 * 2 * 2 + 3 + 4 + 1  # stem, 16 block convs, 3 shortcuts, 4+1 Dense


# NumPy reference of the whole network (float64).


def np_conv(x, kernel, stride):
    """Cross-correlation with PyTorch's zero padding k // 2 and stride, NHWC / HWIO."""
    kernel = np.asarray(kernel, np.float64)
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h_out = (x.shape[1] + 2 * p - k) // stride + 1
    w_out = (x.shape[2] + 2 * p - k) // stride + 1
    out = np.zeros((x.shape[0], h_out, w_out, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + stride * (h_out - 1) + 1 : stride,
                       j : j + stride * (w_out - 1) + 1 : stride]
            out += patch @ kernel[i, j]
    return out


def np_group_norm(x, p, eps=1e-6):
    b, h, w, c = x.shape
    g = min(c // 4, 32)
    xg = x.reshape(b, h, w, g, c // g)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = xg.var(axis=(1, 2, 4), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(b, h, w, c)
    return y * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def np_swish(x):
    return x / (1.0 + np.exp(-x))


def np_basic_block(p, x, stride):
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = relu(np_group_norm(np_conv(x, p["conv1"]["kernel"], stride), p["GroupNorm_0"]))
    h = np_group_norm(np_conv(h, p["conv2"]["kernel"], 1), p["GroupNorm_1"])
    shortcut = x
    if "shortcut" in p:
        shortcut = np_group_norm(np_conv(x, p["shortcut"]["kernel"], stride), p["GroupNorm_2"])
    return relu(h + shortcut)


def np_resnet(params, x, cond, blocks, nf, fourier_scale):
    x = np.asarray(x, np.float64)
    temb = np.asarray(gaussian_fourier_embedding(cond, nf, fourier_scale), np.float64)
    temb = np_dense(params["temb_dense_1"], np_swish(np_dense(params["temb_dense_0"], temb)))
    h = np.maximum(np_group_norm(np_conv(x, params["stem"]["kernel"], 1), params["GroupNorm_0"]),
                   0)
    for stage, (stride, count) in enumerate(zip((1, 2, 2, 2), blocks)):
        for i in range(count):
            h = np_basic_block(params[f"stage{stage}_block{i}"], h, stride if i == 0 else 1)
        h = h + np_dense(params[f"temb_proj_{stage}"], np_swish(temb))[:, None, None, :]
    return np_dense(params["linear"], h.mean(axis=(1, 2)))


def test_resnet_matches_numpy_forward():
    net = models.ConditionalResNet(depth=18, width=4, nf=8, temb_dim=16, num_classes=5)
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 3)).astype(np.float32)
    cond = jnp.array([-2.0, 1.5])
    params = numpy_params(net, x, cond, seed=5)
    out = jax.jit(net.apply)({"params": params}, x, cond)
    ref = np_resnet(params, x, cond, (2, 2, 2, 2), nf=8, fourier_scale=16.0)
    np.testing.assert_allclose(out, ref, **F32_TOL)


def test_resnet_examples_are_independent():
    net = models.ConditionalResNet(depth=18, width=8)
    x = np.random.default_rng(6).standard_normal((3, 16, 16, 3)).astype(np.float32)
    cond = jnp.array([-1.0, 0.0, 2.0])
    variables = {"params": numpy_params(net, x, cond, seed=7)}
    jacobians = jax.jit(jax.jacrev(lambda a, c: net.apply(variables, a, c)[0], argnums=(0, 1)))
    jac_x, jac_c = (np.asarray(j) for j in jacobians(x, cond))
    # jac_x [10, 3, 16, 16, 3]: example 0's logits w.r.t. every example's pixels; jac_c [10, 3].
    assert np.all(jac_x[:, 1:] == 0.0) and np.all(jac_c[:, 1:] == 0.0)
    assert np.abs(jac_x[:, 0]).max() > 0.0 and np.abs(jac_c[:, 0]).max() > 0.0


def test_resnet_conditioning():
    x = np.random.default_rng(8).standard_normal((2, 16, 16, 3)).astype(np.float32)
    cond_a, cond_b = jnp.array([-3.0, -3.0]), jnp.array([1.0, 2.0])
    cond_net = models.ConditionalResNet(width=8)
    variables = {"params": numpy_params(cond_net, x, cond_a, seed=9)}
    apply = jax.jit(cond_net.apply)
    logits_a = apply(variables, x, cond_a)
    assert np.all(np.abs(np.asarray(logits_a - apply(variables, x, cond_b))).max(axis=-1) > 1e-4)
    # A scalar cond is broadcast to the batch.
    np.testing.assert_allclose(apply(variables, x, -3.0), logits_a, rtol=1e-6)

    plain = models.ConditionalResNet(width=8, conditional=False)
    variables = {"params": numpy_params(plain, x, cond_a, seed=9)}
    assert not any("temb" in name for name in variables["params"])
    apply = jax.jit(plain.apply)
    np.testing.assert_array_equal(apply(variables, x, cond_a), apply(variables, x, cond_b))


def test_resnet_field_and_input_errors():
    with pytest.raises(ValueError, match=r"depth must be one of \(18, 34\); got 50"):
        models.ConditionalResNet(depth=50)
    with pytest.raises(ValueError, match="width=36"):
        models.ConditionalResNet(width=36)
    with pytest.raises(ValueError, match="num_classes"):
        models.ConditionalResNet(num_classes=0)
    net = models.ConditionalResNet(width=8)
    with pytest.raises(ValueError, match=r"expected \[B, H, W, C\]"):
        jax.eval_shape(net.init, key(0), jnp.ones((2, 32, 32)), jnp.zeros(2))


def test_registry():
    assert {"dlsm_toy_classifier", "dlsm_toy_score", "resnet_cond"} <= set(
        models.available_models()
    )
    net = models.get_model("resnet_cond", depth=18, width=8)
    assert isinstance(net, models.ConditionalResNet) and (net.depth, net.width) == (18, 8)
    assert isinstance(models.get_model("dlsm_toy_classifier", num_classes=3), models.ToyClassifier)
    assert isinstance(models.get_model("dlsm_toy_score"), models.ToyScoreNet)
    with pytest.raises(ValueError, match=r"no field\(s\) \['blocks'\].*depth"):
        models.get_model("resnet_cond", blocks=(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"no field\(s\) \['hidden'\].*num_classes"):
        models.get_model("dlsm_toy_classifier", hidden=(8,))
