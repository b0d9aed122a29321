"""Tests of sgm_jax.sde against closed forms, Monte-Carlo simulation and the Fokker–Planck equation."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgm_jax.sde import SDE, VESDE, VPSDE, ReverseSDE, get_sde, subVPSDE

DEFAULT_SDES = [VESDE(), VPSDE(), subVPSDE()]
ALL_SDES = DEFAULT_SDES + [
    VESDE(sigma_min=0.05, sigma_max=20.0, N=100),
    VPSDE(beta_min=0.3, beta_max=12.0, N=50),
    subVPSDE(beta_min=0.0, beta_max=5.0, N=10),
]
IDS = [repr(s) for s in ALL_SDES]


def closed_form(sde: SDE, t):
    """(mean coefficient c, std σ_t, drift coefficient a, g²) in float64, written out per SDE."""
    t = np.asarray(t, np.float64)
    if isinstance(sde, VESDE):
        std = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
        return np.ones_like(t), std, np.zeros_like(t), std**2 * 2 * np.log(sde.sigma_max / sde.sigma_min)
    b0, b1 = sde.beta_min, sde.beta_max
    m = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    beta = b0 + t * (b1 - b0)
    if isinstance(sde, VPSDE):
        return np.exp(m), np.sqrt(1 - np.exp(2 * m)), -0.5 * beta, beta
    return np.exp(m), 1 - np.exp(2 * m), -0.5 * beta, beta * (1 - np.exp(-2 * b0 * t - (b1 - b0) * t**2))


def times(n=7):
    return jnp.linspace(0.01, 1.0, n)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_marginal_prob_closed_form(sde):
    t = jnp.concatenate([jnp.array([1e-5]), times()])  # float32 stds stay accurate as t -> 0
    x = jax.random.normal(jax.random.PRNGKey(0), (t.shape[0], 3, 2))
    mean, std = sde.marginal_prob(x, t)
    c, std_ref, _, _ = closed_form(sde, t)
    assert mean.shape == x.shape and std.shape == t.shape
    np.testing.assert_allclose(mean, c[:, None, None] * np.asarray(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, std_ref, rtol=1e-5)
    np.testing.assert_allclose(sde.marginal_std(t), std_ref, rtol=1e-5)


def _em_moments(sde, x0, var0, n_steps):
    """Mean and variance at t = 0.5 and 1 of the Euler–Maruyama chain
    x_{k+1} = (1 + a_k dt) x_k + g_k sqrt(dt) z, from its exact deterministic recursion (float64),
    with a_k, g_k taken from ``sde.sde``."""
    dt = 1.0 / n_steps
    drift, diffusion = sde.sde(jnp.ones((n_steps, 1)), jnp.arange(n_steps) * dt)
    r, g2 = 1 + np.asarray(drift[:, 0], np.float64) * dt, np.asarray(diffusion, np.float64) ** 2
    m, v, out = x0, var0, {}
    for k in range(n_steps):
        m, v = r[k] * m, r[k] ** 2 * v + g2[k] * dt
        if 2 * (k + 1) in (n_steps, 2 * n_steps):
            out[(k + 1) / n_steps] = np.array([m, v])
    return out


@pytest.mark.parametrize("sde", DEFAULT_SDES, ids=IDS[:3])
def test_marginal_prob_matches_euler_maruyama_simulation(sde):
    """Simulate the forward SDE with EM (K steps) and compare the sample mean and variance at
    t = 0.5 and 1 with marginal_prob. The EM bias Δ = moments(K) − moments(32 K) is computed from
    the SDE's own coefficients by the exact moment recursion of the chain; the reference is
    marginal_prob + Δ, with tolerance 5 Monte-Carlo standard errors (from the samples) plus
    |Δ|/8 for the bias Δ leaves out (≈ |Δ|/31 for a first-order weak error)."""
    n_paths, dim, n_steps, x0 = 20000, 2, 250, 10.0
    # VE: score_sde's kernel N(x(0), σ(t)²) treats x(0) as data already perturbed at σ_min.
    var0 = sde.sigma_min**2 if isinstance(sde, VESDE) else 0.0
    key0, key = jax.random.split(jax.random.PRNGKey(1))
    x = x0 + math.sqrt(var0) * jax.random.normal(key0, (n_paths, dim))
    dt = 1.0 / n_steps

    @jax.jit
    def simulate(x, key):  # EM over [0, 0.5] and [0.5, 1], keeping only the end points
        def step(k, x):
            drift, diffusion = sde.sde(x, jnp.full((n_paths,), k * dt))
            z = jax.random.normal(jax.random.fold_in(key, k), x.shape)
            return x + drift * dt + diffusion[:, None] * math.sqrt(dt) * z

        half = jax.lax.fori_loop(0, n_steps // 2, step, x)
        return half, jax.lax.fori_loop(n_steps // 2, n_steps, step, half)

    ends = dict(zip((0.5, 1.0), simulate(x, key)))
    coarse, fine = _em_moments(sde, x0, var0, n_steps), _em_moments(sde, x0, var0, 32 * n_steps)
    for s in (0.5, 1.0):
        samples = np.asarray(ends[s], np.float64).ravel()
        n, mean, var = samples.size, samples.mean(), samples.var()
        se = np.array([math.sqrt(var / n), math.sqrt((np.mean((samples - mean) ** 4) - var**2) / n)])
        ref_mean, ref_std = sde.marginal_prob(jnp.full((1, 1), x0), jnp.array([s]))
        ref = np.array([float(ref_mean[0, 0]), float(ref_std[0]) ** 2])
        bias = coarse[s] - fine[s]
        np.testing.assert_allclose(fine[s], ref, rtol=2e-3)  # the EM chain converges to the marginal
        err = np.abs(np.array([mean, var]) - (ref + bias))
        assert np.all(err <= 5 * se + np.abs(bias) / 8 + 1e-6 * np.abs(ref)), (s, err, se, bias)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_fokker_planck_variance_and_mean(sde):
    """For dx = a x dt + g dw: d var/dt = g² + 2 a var and d c/dt = a c (catches wrong g constants)."""
    with jax.enable_x64(True):  # the right-hand side cancels badly in float32 as e^{2m} -> 0
        _check_fokker_planck(sde, jnp.linspace(0.05, 1.0, 9, dtype=jnp.float64))


def _check_fokker_planck(sde, t):
    ones = jnp.ones((1, 1), t.dtype)
    var_fn = lambda s: sde.marginal_std(s[None])[0] ** 2
    mean_fn = lambda s: sde.marginal_prob(ones, s[None])[0][0, 0]
    dvar = jax.vmap(jax.grad(var_fn))(t)
    dmean = jax.vmap(jax.grad(mean_fn))(t)
    drift, diffusion = sde.sde(jnp.ones((t.shape[0], 1), t.dtype), t)
    a, var, c = drift[:, 0], sde.marginal_std(t) ** 2, sde.marginal_prob(jnp.ones((t.shape[0], 1), t.dtype), t)[0][:, 0]
    np.testing.assert_allclose(dvar, diffusion**2 + 2 * a * var, rtol=1e-10)
    np.testing.assert_allclose(dmean, a * c, rtol=1e-10)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_weightings_match_official_formulas(sde):
    t = times()
    _, std, _, g2 = closed_form(sde, t)
    np.testing.assert_allclose(sde.likelihood_weighting(t), g2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sde.loss_weighting(t, "likelihood"), g2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sde.loss_weighting(t, "sigma2"), std**2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sde.sde(jnp.ones((t.shape[0], 2)), t)[1] ** 2, g2, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="weighting"):
        sde.loss_weighting(t, "uniform")


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_reverse_drifts_on_random_score(sde):
    t = times(4)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 2, 3))
    score = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    score_fn = lambda y, s: score
    f, g = sde.sde(x, t)
    fd, gd = sde.discretize(x, t)
    rsde, ode = sde.reverse(score_fn), sde.reverse(score_fn, probability_flow=True)
    assert isinstance(rsde, ReverseSDE) and rsde.forward is sde and sde.T == 1.0
    drift, diffusion = rsde.sde(x, t)
    np.testing.assert_allclose(drift, f - (g**2)[:, None, None] * score, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(diffusion, g)
    drift, diffusion = ode.sde(x, t)
    np.testing.assert_allclose(drift, f - 0.5 * (g**2)[:, None, None] * score, rtol=1e-5, atol=1e-5)
    assert diffusion.shape == (4,) and not np.any(diffusion)
    rev_f, rev_g = rsde.discretize(x, t)
    np.testing.assert_allclose(rev_f, fd - (gd**2)[:, None, None] * score, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rev_g, gd)
    rev_f, rev_g = ode.discretize(x, t)
    np.testing.assert_allclose(rev_f, fd - 0.5 * (gd**2)[:, None, None] * score, rtol=1e-5, atol=1e-5)
    assert rev_g.shape == (4,) and not np.any(rev_g)


@pytest.mark.parametrize("sde", DEFAULT_SDES, ids=IDS[:3])
def test_probability_flow_ode_transports_gaussian(sde):
    """Data N(0, s0² I): p_t = N(0, v(t) I), v = c² s0² + σ_t², score −x/v. The probability-flow ODE
    is then linear, x(ε) = x(1) sqrt(v(ε)/v(1)); RK4 backwards from prior samples must give it."""
    s0, eps, n_steps, n = 0.5, 1e-3, 200, 20000

    def v(t):
        c, std, _, _ = closed_form(sde, t)
        return c**2 * s0**2 + std**2

    def score_fn(x, t):
        c, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
        var = c[:, 0] ** 2 * s0**2 + std**2
        return -x / var[:, None]

    np.testing.assert_allclose(score_fn(jnp.ones((3, 1)), times(3))[:, 0], -1 / v(times(3)), rtol=1e-5)
    ode = sde.reverse(score_fn, probability_flow=True)
    drift = lambda x, t: ode.sde(x, jnp.full((n,), t))[0]

    @jax.jit
    def rk4(x):
        h = (eps - 1.0) / n_steps

        def body(k, x):
            t = 1.0 + k * h
            k1 = drift(x, t)
            k2 = drift(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = drift(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = drift(x + h * k3, t + h)
            return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

        return jax.lax.fori_loop(0, n_steps, body, x)

    x1 = sde.prior_sampling(jax.random.PRNGKey(4), (n, 2))
    x_eps = np.asarray(rk4(x1), np.float64)
    ratio = math.sqrt(v(eps) / v(1.0))
    np.testing.assert_allclose(x_eps, np.asarray(x1) * ratio, rtol=1e-3, atol=1e-5 * ratio * sde.prior_std)
    samples = x_eps.ravel()
    std = samples.std()
    se_std = math.sqrt((np.mean((samples - samples.mean()) ** 4) - std**4) / samples.size) / (2 * std)
    assert abs(std - sde.prior_std * ratio) <= 5 * se_std


@pytest.mark.parametrize("sde", [VESDE(), subVPSDE(), ALL_SDES[3]], ids=repr)
@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 4, 4, 2)])
def test_prior_sampling_and_logp(sde, shape):
    z = sde.prior_sampling(jax.random.PRNGKey(5), shape)
    assert z.shape == shape and z.dtype == jnp.float32
    z64, var = np.asarray(z, np.float64).reshape(shape[0], -1), sde.prior_std**2
    ref = np.sum(-0.5 * np.log(2 * np.pi * var) - z64**2 / (2 * var), axis=1)
    np.testing.assert_allclose(sde.prior_logp(z), ref, rtol=1e-5)


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=repr)
def test_prior_sampling_moments(sde):
    big = np.asarray(sde.prior_sampling(jax.random.PRNGKey(6), (4000, 10)), np.float64).ravel()
    assert abs(big.std() - sde.prior_std) <= 5 * sde.prior_std / math.sqrt(2 * big.size)
    assert abs(big.mean()) <= 5 * sde.prior_std / math.sqrt(big.size)


def test_discretize_ve_smld():
    sde = VESDE(sigma_min=0.05, sigma_max=20.0, N=10)
    sigmas = np.exp(np.linspace(np.log(0.05), np.log(20.0), 10))
    k = np.arange(10)
    t = jnp.asarray((k + 0.5) / 9).at[-1].set(1.0)  # index k; t = 1 is the last level
    x = jnp.ones((10, 3))
    f, g = sde.discretize(x, t)
    assert f.shape == x.shape and g.shape == (10,) and not np.any(f)
    np.testing.assert_allclose(g, np.sqrt(sigmas**2 - np.concatenate([[0.0], sigmas[:-1]]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(np.sum(np.asarray(g, np.float64) ** 2), 20.0**2, rtol=1e-5)  # telescopes
    np.testing.assert_allclose(sde.discretize(x[:1], jnp.zeros(1))[1], [0.05], rtol=1e-6)


def test_discretize_vp_ddpm():
    sde = VPSDE(beta_min=0.1, beta_max=8.0, N=10)
    betas = np.linspace(0.1 / 10, 8.0 / 10, 10)
    t = jnp.asarray((np.arange(10) + 0.5) / 9).at[-1].set(1.0)
    x = jax.random.normal(jax.random.PRNGKey(7), (10, 2, 2))
    f, g = sde.discretize(x, t)
    np.testing.assert_allclose(f, (np.sqrt(1 - betas) - 1)[:, None, None] * np.asarray(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g, np.sqrt(betas), rtol=1e-6)
    # Default N = 1000 at a few t: index trunc(999 t).
    sde = VPSDE()
    t = jnp.array([0.0, 0.25, 0.5, 1.0])
    idx = np.floor(np.asarray(t) * 999)
    np.testing.assert_allclose(sde.discretize(jnp.ones((4, 1)), t)[1] ** 2, (0.1 + idx / 999 * 19.9) / 1000, rtol=1e-5)
    with pytest.raises(ValueError, match="beta_max"):  # DDPM steps β_i >= 1 would give NaNs
        VPSDE(N=10).discretize(jnp.ones((4, 1)), t)


@pytest.mark.parametrize("sde", [subVPSDE(), subVPSDE(beta_min=0.0, beta_max=5.0, N=10)], ids=repr)
def test_discretize_subvp_euler_maruyama(sde):
    t = times(5)
    x = jax.random.normal(jax.random.PRNGKey(8), (5, 3))
    f, g = sde.discretize(x, t)
    drift, diffusion = sde.sde(x, t)
    np.testing.assert_allclose(f, drift / sde.N, rtol=1e-6)
    np.testing.assert_allclose(g, diffusion / math.sqrt(sde.N), rtol=1e-6)


@pytest.mark.parametrize("cls, kwargs, field", [
    (VESDE, dict(sigma_min=0.0), "sigma_min"),
    (VESDE, dict(sigma_min=-1.0), "sigma_min"),
    (VESDE, dict(sigma_min=60.0), "sigma_min"),
    (VESDE, dict(sigma_max=float("inf")), "sigma_max"),
    (VESDE, dict(sigma_max="big"), "sigma_max"),
    (VESDE, dict(N=0), "N"),
    (VESDE, dict(N=10.5), "N"),
    (VESDE, dict(N=True), "N"),
    (VPSDE, dict(beta_min=-0.1), "beta_min"),
    (VPSDE, dict(beta_max=0.1), "beta_max"),
    (VPSDE, dict(beta_min=float("nan")), "beta_min"),
    (VPSDE, dict(N=-3), "N"),
    (subVPSDE, dict(beta_min=5.0, beta_max=1.0), "beta_max"),
    (subVPSDE, dict(N=100.0), "N"),
])
def test_bad_constructor_arguments(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        cls(**kwargs)


def test_get_sde_registry():
    assert get_sde("vesde", sigma_max=30.0, N=100) == VESDE(sigma_max=30.0, N=100)
    assert get_sde("vpsde") == VPSDE() and type(get_sde("SubVPSDE")) is subVPSDE
    with pytest.raises(ValueError, match="vesde.*vpsde.*subvpsde"):
        get_sde("edm")
    with pytest.raises(ValueError, match="sigma_max"):
        get_sde("vpsde", sigma_max=50.0)


def test_immutable_hashable_and_jittable():
    sde = VESDE()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sde.N = 10
    assert VPSDE() != subVPSDE() and VPSDE(N=10) == VPSDE(N=10) and hash(VPSDE(N=10)) == hash(VPSDE(N=10))
    x, t = jnp.ones((2, 3)), jnp.array([0.2, 0.9])
    as_arg = jax.jit(lambda s, x, t: s.marginal_prob(x, t))
    as_static = jax.jit(lambda s, x, t: s.sde(x, t), static_argnums=0)
    for s in DEFAULT_SDES:
        np.testing.assert_allclose(as_arg(s, x, t)[1], s.marginal_std(t), rtol=1e-6)
        np.testing.assert_allclose(as_static(s, x, t)[1], s.sde(x, t)[1], rtol=1e-6)
        per_example = jax.vmap(lambda xi, ti: s.discretize(xi[None], ti[None]))(x, t)
        batched = s.discretize(x, t)
        np.testing.assert_allclose(per_example[0][:, 0], batched[0], rtol=1e-6)
        np.testing.assert_allclose(per_example[1][:, 0], batched[1], rtol=1e-6)


@pytest.mark.parametrize("sde", DEFAULT_SDES, ids=IDS[:3])
def test_float64(sde):
    with jax.enable_x64(True):
        x, t = jnp.ones((3, 2), jnp.float64), jnp.array([1e-4, 0.5, 1.0], jnp.float64)
        outputs = [*sde.sde(x, t), *sde.marginal_prob(x, t), *sde.discretize(x, t),
                   sde.prior_logp(x), sde.loss_weighting(t, "sigma2"), sde.likelihood_weighting(t),
                   *sde.reverse(lambda y, s: -y, True).sde(x, t), sde.prior_sampling(jax.random.PRNGKey(0), (2, 2))]
        assert all(o.dtype == jnp.float64 for o in outputs)
        np.testing.assert_allclose(sde.marginal_std(t), closed_form(sde, np.asarray(t))[1], rtol=1e-9)
