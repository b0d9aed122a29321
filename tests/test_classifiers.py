"""DLSM networks: the toy classifier / score model and the noise-conditional ResNet.

References: hand parameter counts from the layer sizes, the released ResNet's state dict (keys
and shapes written out from the official ``models/resnet_cond.py``) mapped by the naming rule of
``sgm_jax.models.classifiers``, NumPy forward passes (float64) of the stored weights in both
BatchNorm modes, and exact zeros of cross-example Jacobian blocks. The slow test builds the
official PyTorch network itself and compares the two given the same weights.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgm_jax import losses, models
from sgm_jax.models.classifiers import TorchBatchNorm

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


def numpy_variables(net, x, cond, seed: int) -> dict:
    """Generic variables of ``net`` without running its ``init``: shapes from ``eval_shape``,
    kernels N(0, 1/fan_in), BatchNorm scales 1 + 0.1·N(0, 1), biases and running means
    0.1·N(0, 1), running variances U(0.5, 1.5) (so a wrong wiring of any of them shows in the
    output), the Fourier frequencies N(0, 16²)."""
    shapes = jax.eval_shape(net.init, key(0), x, cond)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        z = rng.standard_normal(leaf.shape)
        if name == "kernel":
            value = z / np.sqrt(math.prod(leaf.shape[:-1]))
        elif name == "var":
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif name == "W":
            value = 16.0 * z
        else:
            value = (1.0 if name == "scale" else 0.0) + 0.1 * z
        return jnp.asarray(value, jnp.float32)

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

#: ``sum(p.numel() for p in model.parameters())`` of the released conditional classifiers
#: (ResNet-18 / CIFAR-10, ResNet-34 / CIFAR-100: nf 32, temb 128, width 64, 32×32×3; the
#: Fourier W included) and of kuangliu's plain ResNets with the same classes (the CAS network).
OFFICIAL_COUNTS = {(18, 10, True): 11_322_666, (18, 10, False): 11_173_962,
                   (34, 100, True): 21_476_996, (34, 100, False): 21_328_292}
#: Running mean + variance values of those networks (BatchNorm buffers, num_batches_tracked
#: left out): the same with or without the conditioning.
OFFICIAL_RUNNING_STATS = {18: 9_600, 34: 17_024}


def resnet_count(depth: int, width: int, channels: int, num_classes: int, temb: int = 0,
                 nf: int = 32) -> tuple[int, int]:
    """Hand count ``(params, running statistics)``: bias-free convs with a BatchNorm (scale +
    bias, running mean + variance: 2C each) after each, a 1×1 shortcut conv + BN where the
    stride or width changes, Linear(8 width, K); with temb > 0, the nf Fourier frequencies, the
    embedding Dense(2nf, temb), Dense(temb, temb) and one Dense(temb, C_stage) per stage."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    total, norm = 9 * channels * width, width
    c_in = width
    for mult, stride, count in zip((1, 2, 4, 8), (1, 2, 2, 2), blocks):
        c = width * mult
        for i in range(count):
            s = stride if i == 0 else 1
            total += 9 * c_in * c + 9 * c * c
            norm += 2 * c
            if s != 1 or c_in != c:
                total += c_in * c
                norm += c
            c_in = c
        if temb:
            total += dense_count(temb, c)
    if temb:
        total += nf + dense_count(2 * nf, temb) + dense_count(temb, temb)
    total += 2 * norm + dense_count(8 * width, num_classes)
    return total, 2 * norm


def variable_count(variables, collection: str) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables[collection]))


def resnet_shapes(net, size: int = 32):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    cond = jax.ShapeDtypeStruct((1,), jnp.float32)
    return jax.eval_shape(net.init, key(0), x, cond)


@pytest.mark.parametrize("depth,num_classes,conditional", list(OFFICIAL_COUNTS))
def test_resnet_parameter_counts_equal_the_released_networks(depth, num_classes, conditional):
    """Parameters and running statistics of the full-width networks equal the hand count and
    the released networks' (torch's count; the slow test recounts it). Catches the Fourier W
    kept out of the parameters (32 fewer), a missing or extra BatchNorm or shortcut, a wrong
    embedding width, and GroupNorm in place of BatchNorm (no running statistics)."""
    variables = resnet_shapes(models.ConditionalResNet(depth=depth, num_classes=num_classes,
                                                       conditional=conditional))
    temb = 128 if conditional else 0
    expected = resnet_count(depth, 64, 3, num_classes, temb=temb, nf=32)
    got = (variable_count(variables, "params"), variable_count(variables, "batch_stats"))
    assert got == expected == (OFFICIAL_COUNTS[depth, num_classes, conditional],
                               OFFICIAL_RUNNING_STATS[depth])


# The released state dict and the naming rule of sgm_jax.models.classifiers.


def official_state_dict(depth: int, num_classes: int, nf: int = 32,
                        channels: int = 3) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the released classifier's state dict as the official code saves it
    (``DataParallel(Classifier(config))``: ``module.classifier.`` + ``resnet_cond``'s
    attributes), written out from ``models/resnet_cond.py``: width 64, temb 4 nf."""
    temb, prefix = 4 * nf, "module.classifier."
    body = prefix + "classifier."
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name, fan_out, fan_in):
        shapes[name + ".weight"], shapes[name + ".bias"] = (fan_out, fan_in), (fan_out,)

    def batch_norm(name, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{leaf}"] = (c,)
        shapes[name + ".num_batches_tracked"] = ()

    shapes[prefix + "condition_modules.0.W"] = (nf,)
    linear(prefix + "condition_modules.1", temb, 2 * nf)
    linear(prefix + "condition_modules.2", temb, temb)
    shapes[body + "conv1.weight"] = (64, channels, 3, 3)
    batch_norm(body + "bn1", 64)
    widths = (64, 128, 256, 512)
    for k, c in enumerate(widths, start=1):
        linear(f"{body}dense_{k}", c, temb)
    c_in = 64
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    for stage, (c, stride, count) in enumerate(zip(widths, (1, 2, 2, 2), blocks), start=1):
        for i in range(count):
            block = f"{body}layer{stage}.{i}."
            shapes[block + "conv1.weight"] = (c, c_in, 3, 3)
            batch_norm(block + "bn1", c)
            shapes[block + "conv2.weight"] = (c, c, 3, 3)
            batch_norm(block + "bn2", c)
            if (stride if i == 0 else 1) != 1 or c_in != c:
                shapes[block + "shortcut.0.weight"] = (c, c_in, 1, 1)
                batch_norm(block + "shortcut.1", c)
            c_in = c
    linear(body + "linear", num_classes, 512)
    return shapes


def flax_name(torch_key: str, ndim: int) -> tuple[str, ...] | None:
    """(collection, *module path, leaf) of a state-dict key of ``ndim`` dimensions by the rule of
    the ``sgm_jax.models.classifiers`` docstring; None for ``num_batches_tracked``."""
    *modules, leaf = [p for p in torch_key.split(".") if p not in ("module", "classifier")]
    if leaf == "num_batches_tracked":
        return None
    path: list[str] = []
    for part in modules:
        if part.isdigit():
            path[-1] += f"_{part}"
        else:
            path.append(part)
    if leaf in ("running_mean", "running_var"):
        return ("batch_stats", *path, leaf.removeprefix("running_"))
    if leaf == "weight":
        leaf = "scale" if ndim == 1 else "kernel"
    return ("params", *path, leaf)


def flax_layout(array):
    """A PyTorch weight in Flax's layout: OIHW → HWIO, [out, in] → [in, out]."""
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array.T if array.ndim == 2 else array


def mapped_shapes(state_dict_shapes: dict[str, tuple[int, ...]]) -> dict[tuple, tuple]:
    mapped = {}
    for name, shape in state_dict_shapes.items():
        target = flax_name(name, len(shape))
        if target is not None:
            mapped[target] = flax_layout(np.empty(shape, np.float32)).shape
    return mapped


def variable_shapes(variables) -> dict[tuple, tuple]:
    return {tuple(p.key for p in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}


@pytest.mark.parametrize("depth,num_classes", [(18, 10), (34, 100)])
def test_released_state_dict_maps_onto_the_variables(depth, num_classes):
    """Every key of the released state dict (but ``num_batches_tracked``) maps by the
    docstring's rule onto one variable of the same (transposed) shape, and every variable is
    reached. Catches a renamed submodule (e.g. ``stem`` for ``conv1``, ``shortcut`` for
    ``shortcut_0``, 0-based stages ``layer0_*``), the Fourier W missing from the parameters, a
    BatchNorm without running statistics, and a wrong layer width."""
    variables = resnet_shapes(models.ConditionalResNet(depth=depth, num_classes=num_classes))
    assert variable_shapes(variables) == mapped_shapes(official_state_dict(depth, num_classes))


def test_resnet_output_shapes_and_narrow_counts():
    """A narrow network (width 8, 7 classes) keeps the structure: logits [B, 7] and the hand
    counts at that width, for both depths."""
    for depth in (18, 34):
        net = models.ConditionalResNet(depth=depth, width=8, num_classes=7)
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        cond = jax.ShapeDtypeStruct((2,), jnp.float32)
        variables = jax.eval_shape(net.init, key(0), x, cond)
        assert jax.eval_shape(net.apply, variables, x, cond).shape == (2, 7)
        counts = (variable_count(variables, "params"), variable_count(variables, "batch_stats"))
        assert counts == resnet_count(depth, 8, 3, 7, temb=128, nf=32)


def test_resnet_init():
    """A real ``init`` at width 8: finite logits; BatchNorm at scale 1, bias 0, running mean 0
    and variance 1 (PyTorch's); the embedding Dense biases zero (score_sde's init); the Fourier
    frequencies N(0, 16²); convolutions, per-stage ``dense_k`` and ``linear`` within PyTorch's
    default range ±1/√fan_in. Catches a wrong Fourier scale, BN initial statistics and the
    PyTorch initialisation of any layer."""
    net = models.ConditionalResNet(width=8)
    x, cond = jnp.ones((2, 16, 16, 3)), jnp.zeros(2)
    variables = jax.jit(net.init)(key(0), x, cond)
    assert np.all(np.isfinite(np.asarray(jax.jit(net.apply)(variables, x, cond))))
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]:
        np.testing.assert_array_equal(leaf, 1.0 if path[-1].key == "var" else 0.0)
    w = np.asarray(variables["params"]["condition_modules_0"]["W"])
    assert w.shape == (32,) and 8.0 < w.std() < 24.0
    modules = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
        names = [entry.key for entry in path]
        modules.setdefault("/".join(names[:-1]), {})[names[-1]] = np.asarray(leaf)
    torch_init = 0
    for name, p in modules.items():
        if "scale" in p:
            np.testing.assert_array_equal(p["scale"], 1.0)
            np.testing.assert_array_equal(p["bias"], 0.0)
        elif name in ("condition_modules_1", "condition_modules_2"):
            np.testing.assert_array_equal(p["bias"], 0.0)
        elif "kernel" in p:
            bound = 1.0 / math.sqrt(math.prod(p["kernel"].shape[:-1]))
            for leaf in p.values():
                assert 0.5 * bound < np.abs(leaf).max() <= bound, name
            torch_init += 1
    assert torch_init == 1 + 4 * 2 * 2 + 3 + 4 + 1  # conv1, 16 block convs, 3 shortcuts, 4+1 Dense


def test_batch_norm_is_pytorchs():
    """:class:`TorchBatchNorm` against PyTorch's formulas by hand (float64). Evaluation: running
    statistics with eps 1e-5 (a channel of variance 1e-4 makes eps visible: catches 1e-6 or
    1e-3). Training: the batch mean and biased variance normalise, and the running averages
    become 0.9·old + 0.1·batch with the *unbiased* variance (catches Flax's biased update and
    the momentum taken as PyTorch's 0.1 in Flax's convention). The update carries no gradient."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 2, 4)) * np.array([1.0, 0.01, 3.0, 0.5]) + 0.3
    variables = {"params": {"scale": rng.uniform(0.5, 1.5, 4), "bias": rng.standard_normal(4)},
                 "batch_stats": {"mean": rng.standard_normal(4),
                                 "var": np.array([1.0, 1e-4, 2.0, 0.3])}}
    bn = TorchBatchNorm()
    p, stats = variables["params"], variables["batch_stats"]
    with jax.enable_x64(True):
        as_jax = jax.tree.map(jnp.asarray, variables)
        out = bn.apply(as_jax, jnp.asarray(x))
        out_train, new = bn.apply(as_jax, jnp.asarray(x), train=True, mutable=["batch_stats"])
        grad = jax.grad(lambda v: jnp.sum(bn.apply(v, jnp.asarray(x), train=True,
                                                   mutable=["batch_stats"])[1]["batch_stats"]
                                          ["var"]))(as_jax)
    expected = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(out_train, expected, rtol=1e-10, atol=1e-12)
    n = 3 * 2 * 2
    np.testing.assert_allclose(new["batch_stats"]["mean"], 0.9 * stats["mean"] + 0.1 * mean,
                               rtol=1e-12)
    np.testing.assert_allclose(new["batch_stats"]["var"],
                               0.9 * stats["var"] + 0.1 * var * n / (n - 1), rtol=1e-12)
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grad["params"]))


# NumPy reference of the whole network (float64), both modes.


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


class NumpyBatchNorm:
    """BatchNorm2d in float64 over a name → (params, running statistics) table; in training
    mode it records each layer's new running statistics in ``self.updated``."""

    def __init__(self, variables, train: bool):
        self.params, self.stats, self.train = variables["params"], variables["batch_stats"], train
        self.updated: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, x, *path):
        p, s = self.params, self.stats
        for name in path:
            p, s = p[name], s[name]
        if self.train:
            mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
            n = x.size // x.shape[-1]
            self.updated[path] = (0.9 * np.asarray(s["mean"], np.float64) + 0.1 * mean,
                                  0.9 * np.asarray(s["var"], np.float64) + 0.1 * var * n / (n - 1))
        else:
            mean, var = np.asarray(s["mean"], np.float64), np.asarray(s["var"], np.float64)
        return ((x - mean) / np.sqrt(var + 1e-5) * np.asarray(p["scale"], np.float64)
                + np.asarray(p["bias"], np.float64))


def np_swish(x):
    return x / (1.0 + np.exp(-x))


def np_basic_block(params, bn, name, x, stride):
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    p = params[name]
    h = relu(bn(np_conv(x, p["conv1"]["kernel"], stride), name, "bn1"))
    h = bn(np_conv(h, p["conv2"]["kernel"], 1), name, "bn2")
    shortcut = x
    if "shortcut_0" in p:
        shortcut = bn(np_conv(x, p["shortcut_0"]["kernel"], stride), name, "shortcut_1")
    return relu(h + shortcut)


def np_resnet(variables, x, cond, blocks, train=False):
    """The official forward pass: returns the logits and the BatchNorm table (its ``updated``
    running statistics in training mode)."""
    params, bn = variables["params"], NumpyBatchNorm(variables, train)
    x = np.asarray(x, np.float64)
    w = np.asarray(params["condition_modules_0"]["W"], np.float64)
    proj = np.asarray(cond, np.float64)[:, None] * w[None, :] * 2 * np.pi
    temb = np.concatenate([np.sin(proj), np.cos(proj)], axis=-1)
    temb = np_dense(params["condition_modules_2"],
                    np_swish(np_dense(params["condition_modules_1"], temb)))
    h = np.maximum(bn(np_conv(x, params["conv1"]["kernel"], 1), "bn1"), 0)
    for stage, (stride, count) in enumerate(zip((1, 2, 2, 2), blocks), start=1):
        for i in range(count):
            h = np_basic_block(params, bn, f"layer{stage}_{i}", h, stride if i == 0 else 1)
        h = h + np_dense(params[f"dense_{stage}"], np_swish(temb))[:, None, None, :]
    return np_dense(params["linear"], h.mean(axis=(1, 2))), bn


@pytest.fixture(scope="module")
def narrow_resnet():
    """(network, generic variables, x [3, 8, 8, 3], cond [3]) at width 4."""
    net = models.ConditionalResNet(depth=18, width=4, nf=8, temb_dim=16, num_classes=5)
    x = np.random.default_rng(4).standard_normal((3, 8, 8, 3)).astype(np.float32)
    cond = jnp.array([-2.0, 1.5, 0.3])
    return net, numpy_variables(net, x, cond, seed=5), x, cond


def test_resnet_matches_numpy_forward_in_both_modes(narrow_resnet):
    """Logits in evaluation mode (running statistics) and in training mode (batch statistics),
    and the running statistics after the training pass, against the float64 reference of the
    official forward pass. Catches a temb added before instead of after a stage, the wrong
    activation on temb, a BatchNorm applied in the wrong mode or skipped, a shortcut without
    its BatchNorm, and the Fourier features of the wrong frequencies."""
    net, variables, x, cond = narrow_resnet
    blocks = (2, 2, 2, 2)
    out = jax.jit(net.apply)(variables, x, cond)
    ref, _ = np_resnet(variables, x, cond, blocks)
    np.testing.assert_allclose(out, ref, **F32_TOL)
    train = jax.jit(lambda v, a, c: net.apply(v, a, c, train=True, mutable=["batch_stats"]))
    out, new = train(variables, x, cond)
    ref, bn = np_resnet(variables, x, cond, blocks, train=True)
    np.testing.assert_allclose(out, ref, **F32_TOL)
    assert len(bn.updated) == 1 + 8 * 2 + 3
    for path, (mean, var) in bn.updated.items():
        stats = new["batch_stats"]
        for name in path:
            stats = stats[name]
        np.testing.assert_allclose(stats["mean"], mean, **F32_TOL)
        np.testing.assert_allclose(stats["var"], var, **F32_TOL)


def test_fourier_frequencies_get_no_gradient(narrow_resnet):
    """W is a parameter used through ``stop_gradient`` (stored and counted, never trained, as
    the official ``requires_grad=False``): its gradient is exactly zero while the embedding
    Dense layers' is not. Catches a trainable W."""
    net, variables, x, cond = narrow_resnet
    grads = jax.jit(jax.grad(lambda v: jnp.sum(net.apply(v, x, cond))))(variables)["params"]
    assert not np.any(np.asarray(grads["condition_modules_0"]["W"]))
    assert np.abs(np.asarray(grads["condition_modules_1"]["kernel"])).max() > 0


def test_examples_are_independent_in_evaluation_mode_only(narrow_resnet):
    """Evaluation mode (guidance, evaluation): example 0's logits do not depend on any other
    example's pixels or noise level, so per-example input gradients are exact. Training mode:
    the batch statistics make them depend on the other examples (the released training). A
    network whose evaluation mode used batch statistics fails the first part."""
    net, variables, x, cond = narrow_resnet

    def first_logits(train):
        def logits(a, c):
            if train:
                return net.apply(variables, a, c, train=True, mutable=["batch_stats"])[0][0]
            return net.apply(variables, a, c)[0]
        return jax.jit(jax.jacrev(logits, argnums=(0, 1)))

    jac_x, jac_c = (np.asarray(j) for j in first_logits(False)(x, cond))
    # jac_x [5, 3, 8, 8, 3]: example 0's logits w.r.t. every example's pixels; jac_c [5, 3].
    assert np.all(jac_x[:, 1:] == 0.0) and np.all(jac_c[:, 1:] == 0.0)
    assert np.abs(jac_x[:, 0]).max() > 0.0 and np.abs(jac_c[:, 0]).max() > 0.0
    jac_x, _ = (np.asarray(j) for j in first_logits(True)(x, cond))
    assert np.abs(jac_x[:, 1:]).max() > 1e-4


def test_resnet_conditioning():
    x = np.random.default_rng(8).standard_normal((2, 16, 16, 3)).astype(np.float32)
    cond_a, cond_b = jnp.array([-3.0, -3.0]), jnp.array([1.0, 2.0])
    cond_net = models.ConditionalResNet(width=8)
    variables = numpy_variables(cond_net, x, cond_a, seed=9)
    apply = jax.jit(cond_net.apply)
    logits_a = apply(variables, x, cond_a)
    assert np.all(np.abs(np.asarray(logits_a - apply(variables, x, cond_b))).max(axis=-1) > 1e-4)
    # A scalar cond is broadcast to the batch.
    np.testing.assert_allclose(apply(variables, x, -3.0), logits_a, rtol=1e-6)

    plain = models.ConditionalResNet(width=8, conditional=False)
    variables = numpy_variables(plain, x, cond_a, seed=9)
    assert not any(name.startswith(("condition_modules", "dense_"))
                   for name in variables["params"])
    apply = jax.jit(plain.apply)
    np.testing.assert_array_equal(apply(variables, x, cond_a), apply(variables, x, cond_b))


def test_resnet_field_and_input_errors():
    with pytest.raises(ValueError, match=r"depth must be one of \(18, 34\); got 50"):
        models.ConditionalResNet(depth=50)
    with pytest.raises(ValueError, match="num_classes"):
        models.ConditionalResNet(num_classes=0)
    with pytest.raises(ValueError, match="width"):
        models.ConditionalResNet(width=0)
    net = models.ConditionalResNet(width=8)
    with pytest.raises(ValueError, match=r"expected \[B, H, W, C\]"):
        jax.eval_shape(net.init, key(0), jnp.ones((2, 32, 32)), jnp.zeros(2))
    # Training mode on one 8×8 image leaves one value per channel after the last stride.
    x, cond = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32), jax.ShapeDtypeStruct((1,),
                                                                                    jnp.float32)
    variables = jax.eval_shape(net.init, key(0), x, cond)
    with pytest.raises(ValueError, match=r"layer4_0/bn1 in training mode needs more than one"):
        jax.eval_shape(lambda v, a, c: net.apply(v, a, c, train=True, mutable=["batch_stats"]),
                       variables, x, cond)


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


# ----------------------------------------------------------------------------- the released network


#: A checkout of chen-hao-chao/dlsm, or its git directory (whose HEAD is exported).
DLSM_SOURCE = "DLSM_SOURCE"


def dlsm_source(folder) -> str:
    """The official code's folder: ``$DLSM_SOURCE`` itself when it is a checkout, else its
    ``models``, ``op`` and ``sde_lib.py`` exported from the git directory into ``folder``."""
    source = os.environ.get(DLSM_SOURCE, "")
    if not source:
        pytest.skip(f"the official DLSM source is not given: set {DLSM_SOURCE} to a checkout or "
                    "git directory of chen-hao-chao/dlsm")
    if os.path.isfile(os.path.join(source, "models", "resnet_cond.py")):
        return source
    archive = subprocess.run(["git", "-C", source, "archive", "HEAD", "models", "op",
                              "sde_lib.py"], capture_output=True)
    if archive.returncode:
        pytest.skip(f"{DLSM_SOURCE}={source!r} is neither a checkout nor a git directory of "
                    f"chen-hao-chao/dlsm: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return str(folder)


@pytest.fixture(scope="module")
def official_classifier(tmp_path_factory):
    """``build(depth, num_classes) -> torch module``: the official ``DataParallel(Classifier(
    config))`` of the classifier configs (nf 32, scale 16, swish), from the official source.
    Its modules are imported with the CUDA-kernel build stubbed out (unused by the classifier,
    as benchmarks/score_sde_pytorch.py does) and dropped from ``sys.modules`` afterwards."""
    torch = pytest.importorskip("torch", reason="the parity test needs torch (the parity "
                                                 "extra: pip install -e '.[test,parity]')")
    import ml_collections
    import torch.utils.cpp_extension

    source = dlsm_source(tmp_path_factory.mktemp("dlsm"))
    names = ("models", "op", "sde_lib")
    load, path = torch.utils.cpp_extension.load, list(sys.path)
    torch.utils.cpp_extension.load = lambda *args, **kwargs: None
    sys.path.insert(0, source)
    try:
        classifier = importlib.import_module("models.classifier")
    finally:
        torch.utils.cpp_extension.load, sys.path[:] = load, path
        for name in [n for n in sys.modules if n.split(".")[0] in names]:
            del sys.modules[name]

    def build(depth: int, num_classes: int):
        config = ml_collections.ConfigDict({
            "model": {"nonlinearity": "swish"}, "data": {"num_channels": 3},
            "classifier": {"model": f"resnet{depth}_cond", "nf": 32, "fourier_scale": 16,
                           "classes": num_classes}})
        torch.manual_seed(depth)
        return torch.nn.DataParallel(classifier.Classifier(config))

    return torch, build


def randomise_batch_norms(torch, module, seed: int) -> None:
    """BatchNorm weights 1 + 0.1·N(0, 1), biases, running means 0.1·N(0, 1), running variances
    U(0.5, 1.5), and the embedding biases 0.1·N(0, 1) (their inits are constants)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            z = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator,
                                              dtype=tensor.dtype))
            elif tensor.ndim == 1 and "W" not in name.split(".")[-1]:
                tensor.copy_((1.0 if name.endswith(("bn1.weight", "bn2.weight",
                                                    "shortcut.1.weight")) else 0.0) + 0.1 * z)


def flax_variables(state_dict: dict[str, np.ndarray]) -> dict:
    """The Flax variables of a released state dict by the docstring's naming rule."""
    variables: dict = {}
    for name, array in state_dict.items():
        target = flax_name(name, array.ndim)
        if target is None:
            continue
        node = variables
        for part in target[:-1]:
            node = node.setdefault(part, {})
        node[target[-1]] = jnp.asarray(flax_layout(array))
    return variables


def at(tree, target: tuple[str, ...]):
    for part in target:
        tree = tree[part]
    return np.asarray(tree)


#: Tolerances of the outputs against the official network (logits, log-probabilities and running
#: statistics, all O(1)): float64 agrees to rounding; float32 to float32 rounding through ~40
#: layers (seen: 2.4e-6 on the logits, 5e-7 relative on the running statistics).
FORWARD_TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


def assert_gradients_close(actual, desired, dtype, name: str = "") -> None:
    """float64: element by element to rounding. float32: relative L2 error ≤ 2e-2 — the
    gradients of a ReLU network jump where a pre-activation near 0 rounds to the other side
    (seen: up to 6e-3 on the first stage's gradients, 3e-3 on g, localised), so an element
    comparison would test the rounding of the kinks, not the network."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(actual, desired, rtol=1e-8,
                                   atol=1e-10 * np.abs(desired).max(), err_msg=name)
    else:
        error = np.linalg.norm(actual - desired) / np.linalg.norm(desired)
        assert error <= 2e-2, (name, error)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("depth,num_classes", [(18, 10), (34, 100)])
def test_matches_the_released_network(official_classifier, depth, num_classes, dtype):
    """The official ``resnet_cond`` built by torch from the official source and this network
    given its (randomised) weights by the naming rule: the state dict's keys, shapes and
    parameter count equal :func:`official_state_dict` and :data:`OFFICIAL_COUNTS`; in
    ``eval()`` mode the logits are equal; in ``train()`` mode one step's outputs are equal: the
    logits, the updated running statistics, the likelihood score of the batch sum (the DLSM
    term's g: the official ``autograd.grad`` with one-hot ``grad_outputs``, of log_softmax as
    the library differentiates) and the parameter gradients of mean CE + ½ mean ‖g‖² (a double
    backward pass through the batch statistics, as the DLSM loss). The official network takes
    σ and the library's log σ."""
    torch, build = official_classifier
    torch_dtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    official = build(depth, num_classes).to(torch_dtype)
    randomise_batch_norms(torch, official, seed=depth)
    state = {k: v.numpy().copy() for k, v in official.state_dict().items()}  # before train()
    assert {k: tuple(v.shape) for k, v in state.items()} == official_state_dict(depth, num_classes)
    assert sum(p.numel() for p in official.parameters()) == OFFICIAL_COUNTS[depth, num_classes,
                                                                            True]
    net = models.ConditionalResNet(depth=depth, num_classes=num_classes)
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((4, 32, 32, 3)).astype(dtype)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(50.0), 4)).astype(dtype)
    y = rng.integers(0, num_classes, 4)

    def torch_input():
        return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)

    official.eval()
    with torch.no_grad():
        eval_logits = official(torch_input(), torch.from_numpy(sigma)).numpy()
    official.train()
    x_t = torch_input()
    # ResNet_cond adds temb in place to a ReLU output that the ReLU's backward pass reads: the
    # torch of the released runs (>= 1.7) allowed that; today's torch needs the saved tensor
    # kept (the same gradients).
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        logits_t = official(x_t, torch.from_numpy(sigma))
        log_probs = torch.log_softmax(logits_t, dim=1)
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(y), num_classes).to(torch_dtype)
        (g_t,) = torch.autograd.grad(log_probs, x_t, grad_outputs=one_hot, create_graph=True)
        loss_t = (torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y))
                  + 0.5 * torch.mean(torch.sum(g_t**2, dim=(1, 2, 3))))
        loss_t.backward()
    running = {k: v.numpy() for k, v in official.state_dict().items() if "running" in k}
    param_grads = {n: p.grad.numpy() for n, p in official.named_parameters() if p.grad is not None}

    with jax.enable_x64(dtype == np.float64):
        variables = flax_variables(state)
        log_sigma = jnp.log(jnp.asarray(sigma))
        apply_eval = jax.jit(net.apply)

        def train_loss(params, inputs):
            def logits_fn(u):
                return net.apply({**params, "batch_stats": variables["batch_stats"]}, u,
                                 log_sigma, train=True, mutable=["batch_stats"])

            g, (log_p, new) = losses.class_log_likelihood_grad(logits_fn, inputs, jnp.asarray(y),
                                                               has_aux=True)
            ce = -jnp.mean(losses.label_log_probs(log_p, jnp.asarray(y)))
            return ce + 0.5 * jnp.mean(jnp.sum(g**2, axis=(1, 2, 3))), (g, log_p, new)

        params = {"params": variables["params"]}
        grads, (g, log_p, new) = jax.jit(jax.grad(train_loss, has_aux=True))(params, x)
        tol = FORWARD_TOL[dtype]
        np.testing.assert_allclose(apply_eval(variables, x, log_sigma), eval_logits, **tol)
        np.testing.assert_allclose(log_p, log_probs.detach().numpy(), **tol)
        for name, value in running.items():
            np.testing.assert_allclose(at(new, flax_name(name, 1)), value, **tol, err_msg=name)
        assert_gradients_close(g, g_t.detach().numpy().transpose(0, 2, 3, 1), dtype, "g")
        assert not np.any(at(grads, flax_name("condition_modules.0.W", 1)))
        for name, value in param_grads.items():
            assert_gradients_close(at(grads, flax_name(name, value.ndim)), flax_layout(value),
                                   dtype, name)
