"""Tests for sgm_jax.models: shapes, per-example independence, the Eq. 12 parameterisations
(exact conservativeness of "c", −∇E by finite differences), the official toy net's size,
the tied autoencoder, registry errors, jit/grad and float64."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgm_jax import models

SIGMA_MIN, SIGMA_MAX = 0.01, 10.0  # QCSGM A.5.2
PARAMS = ("u", "c", "c_norm", "direct")

# name -> (fields, x shape); small sizes keep the full Jacobians cheap.
CASES = {
    "toy_mlp": ({}, (3, 2)),
    "official_toy": ({}, (3, 2)),
    "autoencoder": ({"hidden": 5}, (3, 3)),
    "small_conv": ({"nf": 8, "ch_mult": (1, 2), "num_groups": 4}, (2, 4, 4, 1)),
}
# XLA's CPU compile of the conv net's second-order graphs takes tens of seconds on a small
# machine, so its Jacobian-level checks run with `-m slow`; its fast checks are below.
NAMES = ["toy_mlp", "official_toy", "autoencoder",
         pytest.param("small_conv", marks=pytest.mark.slow)]


def sigma_fn(t):
    return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t


def random_params(net, x, t, seed=0, dtype=jnp.float32):
    """Random parameters of ``net``'s structure without compiling its initialiser (slow on
    CPU): weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), Swish β ~ 1 + N(0, 0.1²)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = path[-1].key
        if key == "beta":
            value = 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        elif key in ("kernel", "W", "R"):
            value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(leaf.shape)
        return jnp.asarray(value, dtype)

    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, t)
    return jax.tree_util.tree_map_with_path(fill, shapes)


def build(name, shape=None, fields=None, seed=0, dtype=jnp.float32):
    """(apply_fn(params, x, t), params, x, t) for a registered model; OfficialToyNet gets σ_t."""
    fields = CASES[name][0] if fields is None else fields
    shape = CASES[name][1] if shape is None else shape
    net = models.get_model(name, **fields)
    rng = np.random.default_rng(seed + 1)
    x = jnp.asarray(rng.standard_normal(shape), dtype)
    t = rng.uniform(0.1, 0.9, shape[:1])
    if name == "official_toy":
        apply_fn = lambda p, x, t: net.apply(p, x, sigma_fn(t))  # noqa: E731
        params = random_params(net, x, jnp.asarray(sigma_fn(t), dtype), seed, dtype)
    else:
        apply_fn = net.apply
        params = random_params(net, x, jnp.asarray(t, dtype), seed, dtype)
    return apply_fn, params, x, jnp.asarray(t, dtype)


def asym_ratio(jac):
    jac = np.asarray(jac)
    return float(np.linalg.norm(jac - jac.T) / np.linalg.norm(jac))


@pytest.mark.parametrize(
    "name, fields, shape",
    [
        ("toy_mlp", {}, (5, 2)),
        ("toy_mlp", {}, (2, 4, 4, 3)),
        ("official_toy", {}, (5, 2)),
        ("autoencoder", {}, (5, 7)),
        ("autoencoder", {"tied": True}, (2, 4, 4, 3)),
        ("small_conv", {}, (2, 32, 32, 3)),
    ],
)
def test_output_shapes(name, fields, shape):
    """Shapes and dtypes of f and of every score, traced abstractly (nothing compiled)."""
    net = models.get_model(name, **fields)
    x, t = jnp.zeros(shape), jnp.full(shape[:1], 0.5)
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, t)
    assert jax.eval_shape(net.apply, params, x, t).shape == shape
    assert jax.eval_shape(net.apply, params, x, 0.5).shape == shape  # a scalar t is broadcast
    for p in ("u", "c", "direct"):  # "c_norm" takes the path of "c"

        def score(prm, x, t, p=p):
            return models.make_score_fn(net.apply, prm, p, sigma_fn)(x, t)

        s = jax.eval_shape(score, params, x, t)
        assert s.shape == shape and s.dtype == x.dtype


def test_small_conv_budget_and_independence():
    net = models.SmallConvScoreNet()
    x = jnp.zeros((1, 32, 32, 3))
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, jnp.zeros(1))
    assert 100_000 < sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) < 1_000_000
    # Perturbing example 0 leaves examples 1, 2 unchanged (GroupNorm is per example).
    apply_fn, params, x, t = build("small_conv", (3, 4, 4, 1))
    apply = jax.jit(apply_fn)
    out = apply(params, x, t)
    out2 = apply(params, x.at[0].add(1.0), t)
    out, out2 = np.asarray(out), np.asarray(out2)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out2[1:], out[1:])
    assert np.abs(out2[0] - out[0]).max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_block_diagonal_and_c_conservative(name):
    """The batched Jacobian [B, D, B, D] is block diagonal (DESIGN §3.1) for every
    parameterisation; its diagonal blocks are symmetric to rounding for "c"/"c_norm" (a Hessian,
    Eq. 12 right) and not for "u" (Eq. 12 left) of a random net."""
    apply_fn, params, x, t = build(name)
    b, d = x.shape[0], x[0].size

    def jacobians(x):
        scores = [models.make_score_fn(apply_fn, params, p, sigma_fn) for p in PARAMS]
        return [jax.jacfwd(lambda y, fn=fn: fn(y, t))(x).reshape(b, d, b, d) for fn in scores]

    off_diagonal = (1.0 - np.eye(b))[:, None, :, None]
    for p, jac in zip(PARAMS, jax.jit(jacobians)(x)):
        jac = np.asarray(jac)
        assert np.max(np.abs(jac * off_diagonal)) == 0.0, p
        for i in range(b):
            ratio = asym_ratio(jac[i, :, i, :])
            if p in ("c", "c_norm"):
                assert ratio < 1e-5, (p, ratio)
            elif p == "u":
                assert ratio > 1e-2, (p, ratio)


@pytest.mark.parametrize("name", NAMES)
def test_float64_and_c_is_minus_energy_gradient(name):
    """Every score keeps float64; s_C = −∇ₓE by central differences of E (float64)."""
    with jax.enable_x64(True):
        apply_fn, params, x, t = build(name, dtype=jnp.float64)
        x, t = x[:1], t[:1]
        eps, d = 1e-5, x.size
        probes = jnp.eye(d, dtype=jnp.float64).reshape((d,) + x.shape[1:])
        t_rep = jnp.repeat(t, d)

        @jax.jit
        def run(x):
            scores = {p: models.make_score_fn(apply_fn, params, p, sigma_fn)(x, t)
                      for p in PARAMS}
            fds = {}
            for p in ("c", "c_norm"):  # examples are independent: one batch of 2D probes
                energy = models.make_energy_fn(apply_fn, params, p, sigma_fn)
                fds[p] = (energy(x + eps * probes, t_rep)
                          - energy(x - eps * probes, t_rep)) / (2 * eps)
            return scores, fds

        scores, fds = run(x)
        assert all(s.dtype == jnp.float64 for s in scores.values())
        for p, fd in fds.items():
            s = np.asarray(scores[p]).ravel()
            np.testing.assert_allclose(s, -np.asarray(fd), rtol=1e-6, atol=1e-8 * np.abs(s).max())


def test_parameterisation_formulas():
    """Eq. 12 on images: s_U = (x − f)/σ_t (σ_t broadcast over pixels), "direct" = f, score_sde's scale_by_sigma f/σ_t and VP noise prediction −f/σ_t,
    E_c = ‖x − f‖²/(2σ_t), E_c_norm = ‖f‖²/(2σ_t)."""
    apply_fn, params, x, t = build("toy_mlp", (3, 2, 2, 1))

    @jax.jit
    def run(x, t):
        out = {p: models.make_score_fn(apply_fn, params, p, sigma_fn)(x, t)
               for p in ("u", "direct", "scale_by_sigma", "noise_prediction")}
        out.update({"E_" + p: models.make_energy_fn(apply_fn, params, p, sigma_fn)(x, t)
                    for p in ("c", "c_norm")})
        return apply_fn(params, x, t), out

    f, out = jax.tree.map(np.asarray, run(x, t))
    x, sig = np.asarray(x), sigma_fn(np.asarray(t))
    np.testing.assert_allclose(out["u"], (x - f) / sig[:, None, None, None], rtol=1e-5)
    np.testing.assert_array_equal(out["direct"], f)
    np.testing.assert_allclose(out["scale_by_sigma"], f / sig[:, None, None, None], rtol=1e-5)
    np.testing.assert_allclose(out["noise_prediction"], -f / sig[:, None, None, None], rtol=1e-5)
    np.testing.assert_allclose(out["E_c"], np.sum((x - f) ** 2, (1, 2, 3)) / (2 * sig),
                               rtol=1e-5)
    np.testing.assert_allclose(out["E_c_norm"], np.sum(f**2, (1, 2, 3)) / (2 * sig), rtol=1e-5)


def test_official_toy_parameter_count():
    """official_code_facts §1b, Linear(i, o) has i·o + o parameters, Swish(n) has n β's."""
    x_branch = (2 * 64 + 64) + 64 + (64 * 128 + 128) + 128 + (128 * 256 + 256)
    sigma_branch = (1 + 1) + 1 + (1 + 1) + 1 + (1 + 1)
    head = 257 + (257 * 2 + 2)
    assert x_branch + sigma_branch + head == 42_509
    _, params, _, _ = build("official_toy", (3, 2))
    assert sum(a.size for a in jax.tree.leaves(params)) == x_branch + sigma_branch + head


def test_official_toy_output_activation_and_torch_init():
    """PyTorch-default nn.Linear init (U(±1/√fan_in)) and the CSBM output activation."""
    net = models.get_model("official_toy", output_activation="elu")
    x = jnp.full((4, 2), -50.0)
    params, out = jax.jit(lambda k: (p := net.init(k, x, jnp.ones(4)), net.apply(p, x, 1.0)))(
        jax.random.PRNGKey(1))
    assert np.all(np.asarray(out) >= -1.0)  # ELU is bounded below by −1
    w = jax.tree.map(np.asarray, params["params"]["x_linear_2"])
    bound = 1 / np.sqrt(128)
    assert np.abs(w["kernel"]).max() <= bound and np.abs(w["bias"]).max() <= bound
    assert np.abs(w["kernel"]).max() > 0.8 * bound  # uniform, not lecun-normal-sized
    with pytest.raises(ValueError, match="output_activation='gelu'"):
        models.get_model("official_toy", output_activation="gelu")


@pytest.mark.parametrize("tied", [True, False])
def test_autoencoder_tied_weights(tied):
    """§6: s = R h(Wᵀx + b) + c; tied ⇒ R = W (no R parameter) and J = W diag(h′) Wᵀ is
    symmetric; untied random weights give R ≠ W and a non-symmetric J."""
    fields = {"hidden": 6, "tied": tied, "activation": "tanh"}
    apply_fn, params, x, t = build("autoencoder", (4, 3), fields)
    assert set(params["params"]) == ({"W", "b", "c"} if tied else {"W", "R", "b", "c"})
    w, r = models.autoencoder_weights(params)
    assert w.shape == r.shape == (3, 6)
    w, r, x = np.asarray(w), np.asarray(r), np.asarray(x)
    if tied:
        np.testing.assert_array_equal(r, w)
    else:
        assert np.abs(w - r).max() > 0.1
    b, c = np.asarray(params["params"]["b"]), np.asarray(params["params"]["c"])
    direct = models.make_score_fn(apply_fn, params, "direct")
    s, jac = jax.jit(lambda x: (direct(x, t), jax.jacfwd(lambda y: direct(y, t[:1]))(x[:1])))(x)
    np.testing.assert_allclose(s, np.tanh(x @ w + b) @ r.T + c, rtol=1e-5, atol=1e-6)
    ratio = asym_ratio(jac.reshape(3, 3))
    assert ratio < 1e-6 if tied else ratio > 1e-2


def test_registry_errors_and_registration():
    assert set(models.available_models()) >= {"toy_mlp", "official_toy", "autoencoder",
                                              "small_conv"}
    with pytest.raises(ValueError, match=r"unknown model name 'resnet'.*toy_mlp"):
        models.get_model("resnet")
    with pytest.raises(ValueError, match=r"no field\(s\) \['widths'\].*hidden"):
        models.get_model("toy_mlp", widths=(3,))
    with pytest.raises(ValueError, match="activation='gelu'"):
        models.get_model("autoencoder", activation="gelu")
    with pytest.raises(ValueError, match="hidden=0"):
        models.get_model("autoencoder", hidden=0)
    with pytest.raises(ValueError, match="num_groups=3"):
        models.get_model("small_conv", num_groups=3)

    class Impostor(nn.Module):
        pass

    with pytest.raises(ValueError, match="already registered"):
        models.register_model("toy_mlp")(Impostor)
    assert isinstance(models.get_model("toy_mlp", hidden=(8,)), models.ToyMLP)


def test_parameterisation_errors():
    apply_fn, params, _, _ = build("toy_mlp", (2, 2))
    with pytest.raises(ValueError, match=r"parameterisation='energy'.*'u', 'c', 'c_norm'"):
        models.make_score_fn(apply_fn, params, "energy", sigma_fn)
    with pytest.raises(ValueError, match=r"parameterisation='u'.*\['c', 'c_norm'\]"):
        models.make_energy_fn(apply_fn, params, "u", sigma_fn)
    with pytest.raises(ValueError, match="needs a sigma_fn"):
        models.make_score_fn(apply_fn, params, "c", None)


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_grad_wrt_params(name):
    """Every parameterisation is jit-able and differentiable w.r.t. the parameters."""
    apply_fn, params, x, t = build(name)

    def loss(prm):
        values = jnp.stack([
            jnp.mean(models.make_score_fn(apply_fn, prm, p, sigma_fn)(x, t) ** 2) for p in PARAMS
        ])
        return jnp.sum(values), values

    (_, values), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert values.shape == (len(PARAMS),) and np.all(np.isfinite(values)) and np.all(values > 0)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert all(np.abs(g).sum() > 0.0 for g in leaves)  # every parameter is used


def test_layers():
    t = jnp.array([0.0, 0.3, 1.0])
    g = models.gaussian_fourier_embedding(t, 4, scale=16.0)
    assert g.shape == (3, 8) and g.dtype == jnp.float32
    np.testing.assert_array_equal(g, models.gaussian_fourier_embedding(t, 4, scale=16.0))
    np.testing.assert_allclose(g[0], jnp.r_[jnp.zeros(4), jnp.ones(4)])
    e = models.sinusoidal_embedding(t, 7)
    assert e.shape == (3, 7)
    np.testing.assert_allclose(e[0], [0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_allclose(e[2, :3], np.sin([1.0, 0.01, 1e-4]), rtol=1e-5)
    with jax.enable_x64(True):
        assert models.sinusoidal_embedding(t.astype(jnp.float64), 8).dtype == jnp.float64

    swish = models.Swish()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5)), jnp.float32)
    params = swish.init(jax.random.PRNGKey(1), x)
    assert params["params"]["beta"].shape == (5,)
    np.testing.assert_allclose(swish.apply(params, x), nn.silu(x), rtol=1e-6)
    beta = jnp.arange(5.0)
    np.testing.assert_allclose(swish.apply({"params": {"beta": beta}}, x),
                               x * nn.sigmoid(beta * x), rtol=1e-6)
    with pytest.raises(ValueError, match="activation='mish'"):
        models.get_activation("mish")
