"""Tests of sgm_jax.sampling with exact Gaussian scores.

Data N(μ, s0² I) has, for every SDE here, the marginal N(c(t) μ, (c(t)² s0² + σ_t²) I) and hence
the exact score s(x, t) = −(x − c μ)/(c² s0² + σ_t²); c and σ_t are written out below
independently of sgm_jax.sde. Sample moments are accepted within Z = 5 standard errors (computed
from the samples, with n = B·D independent coordinates) plus allowances for known biases:

  * prior mismatch: the samplers start from the prior N(0, prior_std²) instead of the exact p_T =
    N(c_T μ, std_T²). The probability-flow map keeps (x − m_t)/std_t, so the end mean is off by at
    most |c_T μ| s0/std_T and the std by s0 |prior_std/std_T − 1| (the reverse SDE contracts
    faster still). 0.010 for the VE SDE below (σ_max = 50), 0.003 for VP/subVP.
  * Langevin corrector: for a Gaussian, the unadjusted Langevin step ε = 2 snr² v (v the current
    variance, which is what ε = 2 (snr ‖z‖/‖s‖)² gives) has stationary variance v/(1 − snr²), so the
    std may be inflated by up to s0 (1/sqrt(1 − snr²) − 1) = 0.0064 at snr = 0.16, whatever N.
  * discretisation: the fixed-step samplers are first order, bias ≈ K s0/N. With B = 40000, D = 2
    and μ = 1, s0 = 0.5, the largest measured |bias| · N / s0 over VE/VP/subVP and N = 50, 100, 200
    were 4.8 (reverse-diffusion predictor, VE std: 0.048, 0.024, 0.0126), 1.5 (Euler–Maruyama
    predictor and Euler reverse SDE, VP/subVP mean) and 0.5 (Heun reverse SDE); we allow K = 6,
    2, 2 and 1. ``test_discretisation_error_is_first_order`` checks the 1/N law on the worst case.
    The adaptive ODE solve has no such term (its error is ~rtol; see the transport test).
The full SDE × sampler matrix and the strong-convergence check of the reverse SDE run with -m slow.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from sgm_jax import sampling
from sgm_jax.sampling.pc import _langevin_alpha
from sgm_jax.sde import VESDE, VPSDE, subVPSDE  # noqa: F401

Z = 5.0
MU, S0 = 1.0, 0.5
VE, VP, SUBVP = VESDE(sigma_min=0.01, sigma_max=50.0, N=100), VPSDE(N=100), subVPSDE(N=100)
K_DISC = {"reverse_diffusion": 6.0, "euler_maruyama": 2.0, "euler": 2.0, "heun": 1.0, "ode": 0.0}


def coefficients(sde, t):
    """(c(t), σ_t) written out per SDE (not through sgm_jax.sde)."""
    if isinstance(sde, VESDE):
        return jnp.ones_like(t), sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    m = -0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
    var = 1 - jnp.exp(2 * m)
    return jnp.exp(m), (jnp.sqrt(var) if isinstance(sde, VPSDE) else var)


def marginal(sde, t):
    c, sigma = coefficients(sde, jnp.asarray(t, jnp.float32))
    return c * MU, jnp.sqrt(c**2 * S0**2 + sigma**2)


class GaussianScore:
    """The exact score of the diffused N(MU, S0²), counting its calls at run time."""

    def __init__(self, sde):
        self.sde, self.calls = sde, 0

    def _tick(self, t):
        self.calls += 1
        return t

    def __call__(self, x, t):
        t = io_callback(self._tick, jax.ShapeDtypeStruct(t.shape, t.dtype), t)
        mean, std = marginal(self.sde, t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return -(x - mean.reshape(shape)) / (std**2).reshape(shape)


def run_counted(sampler_name, sde, shape, key=0, **kwargs):
    score = GaussianScore(sde)
    sample = jax.jit(sampling.get_sampler(sampler_name, sde=sde, **kwargs), static_argnums=(0, 1))
    x, nfe = sample(score, shape, jax.random.PRNGKey(key))
    x = np.asarray(x)
    assert int(nfe) == score.calls > 0, (int(nfe), score.calls)
    return x, int(nfe)


def check_moments(x, sde, method, num_steps, snr=None):
    n = x.size
    mean, std = x.mean(), x.std()
    m_T, std_T = (float(v) for v in marginal(sde, sde.T))
    disc = K_DISC[method] * S0 / num_steps
    tol_mean = Z * std / math.sqrt(n) + abs(m_T) * S0 / std_T + disc
    tol_std = (Z * std / math.sqrt(2 * n) + S0 * abs(sde.prior_std / std_T - 1) + disc
               + (S0 * (1 / math.sqrt(1 - snr**2) - 1) if snr else 0.0))
    assert abs(mean - MU) <= tol_mean, (mean, tol_mean)
    assert abs(std - S0) <= tol_std, (std, tol_std)


PC_CASES = [  # (sde, predictor, corrector, shape): both predictors, with and without corrector
    (VP, "reverse_diffusion", "none", (4000, 4)),
    (VP, "euler_maruyama", "langevin", (4000, 4)),
    (VE, "reverse_diffusion", "langevin", (1000, 2, 4, 2)),
    (SUBVP, "euler_maruyama", "none", (4000, 4)),
    (VP, "reverse_diffusion", "ald", (4000, 4)),
]
SLOW_PC = [pytest.param(sde, p, c, (4000, 4), marks=pytest.mark.slow)
           for sde in (VE, VP, SUBVP) for p in ("reverse_diffusion", "euler_maruyama")
           for c in ("none", "langevin", "ald") if (sde, p, c) not in {case[:3] for case in PC_CASES}]


@pytest.mark.parametrize("sde,predictor,corrector,shape", PC_CASES + SLOW_PC)
def test_pc_sampler_gaussian_moments_and_nfe(sde, predictor, corrector, shape):
    x, nfe = run_counted("pc", sde, shape, predictor=predictor, corrector=corrector, snr=0.16)
    assert x.shape == shape and nfe == sde.N * (1 + (corrector != "none"))
    check_moments(x, sde, predictor, sde.N, snr=0.16 if corrector != "none" else None)


@pytest.mark.parametrize("sde,solver,shape", [
    (VE, "euler", (1000, 2, 2)),
    pytest.param(VP, "heun", (4000, 4), marks=pytest.mark.slow),
    pytest.param(SUBVP, "euler", (4000, 4), marks=pytest.mark.slow),
    pytest.param(VE, "heun", (4000, 4), marks=pytest.mark.slow)])
def test_reverse_sde_sampler_gaussian_moments_and_nfe(sde, solver, shape):
    x, nfe = run_counted("reverse_sde", sde, shape, num_steps=50, solver=solver)
    assert x.shape == shape and nfe == 50 * {"euler": 1, "heun": 2}[solver] + 1
    check_moments(x, sde, solver, 50)


@pytest.mark.parametrize("sde", [VE, pytest.param(VP, marks=pytest.mark.slow),
                                 pytest.param(SUBVP, marks=pytest.mark.slow)])
def test_ode_sampler_gaussian_moments_and_nfe(sde):
    x, nfe = run_counted("ode", sde, (4000, 4), rtol=1e-5, atol=1e-5)
    check_moments(x, sde, "ode", 1)


def test_discretisation_error_is_first_order():
    """The worst case (reverse-diffusion predictor on VE, no corrector): the std bias is resolved
    far above the noise at N = 25 and shrinks ~4× at N = 100 (first order)."""
    errors = []
    for n in (25, 100):
        sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=n)
        x, _ = run_counted("pc", sde, (8000, 4), predictor="reverse_diffusion", corrector="none")
        errors.append(abs(x.std() - S0))
        se = x.std() / math.sqrt(2 * x.size)
    assert errors[0] > 20 * se
    assert 2.5 < errors[0] / errors[1] < 6, errors


@pytest.mark.parametrize("sde,solver", [(VE, "dopri5"), (VP, "tsit5"), (SUBVP, "bosh3"),
                                        (VP, "heun")])
def test_ode_transports_prior_exactly_and_counts_nfe(sde, solver):
    """The probability-flow map of a Gaussian is x_eps = m_eps + (x_T − m_T) std_eps/std_T."""
    eps, score = 1e-3, GaussianScore(sde)
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), (64, 3))
    run = jax.jit(lambda x_T, key, rtol: sampling.ode_sampler(
        sde, score, (64, 3), key, rtol=rtol, atol=1e-5, solver=solver, eps=eps, denoise=False,
        x_T=x_T))
    (m_T, std_T), (m_eps, std_eps) = marginal(sde, sde.T), marginal(sde, eps)
    expected = m_eps + (x_T - m_T) * std_eps / std_T
    x, nfe = run(x_T, jax.random.PRNGKey(1), 1e-5)
    assert int(nfe) == score.calls > 0
    np.testing.assert_allclose(x, expected, atol=1e-3)  # global error ≲ 100 × tolerance
    x_again, _ = run(x_T, jax.random.PRNGKey(2), 1e-5)  # deterministic given x_T, key unused
    np.testing.assert_array_equal(x, x_again)
    nfes = []
    for rtol in (1e-2, 1e-4):  # the formula holds with rejected steps too (counted at run time)
        calls = score.calls
        nfes.append(int(run(x_T, jax.random.PRNGKey(1), rtol)[1]))
        assert nfes[-1] == score.calls - calls
    assert 0 < nfes[0] < nfes[1] < int(nfe), (nfes, int(nfe))


@pytest.mark.parametrize("sde", [VE, VP, SUBVP, VPSDE(beta_min=0.5, beta_max=8.0, N=37)])
def test_langevin_alpha_is_the_discrete_chain_alpha(sde):
    """score_sde's corrector α_i: 1 − β_i of the DDPM chain, β = linspace(β_min/N, β_max/N, N)
    indexed by i = int(t (N − 1)/T) (VP; sub-VP by extension); 1 for VE."""
    t = np.concatenate([np.linspace(0.0, 1.0, 101), [0.123456, 0.999]]).astype(np.float32)
    got = np.asarray(_langevin_alpha(sde, jnp.asarray(t)))
    if isinstance(sde, VESDE):
        np.testing.assert_array_equal(got, 1.0)
        return
    betas = np.linspace(sde.beta_min / sde.N, sde.beta_max / sde.N, sde.N)
    index = (t * (sde.N - 1) / sde.T).astype(np.int32)
    np.testing.assert_allclose(got, 1.0 - betas[index], rtol=1e-6)


def test_pc_sampler_jit_reproducible_and_key_dependent():
    sample = jax.jit(functools.partial(sampling.pc_sampler, VP, GaussianScore(VP), (16, 3)))
    a, b, c = (np.asarray(sample(jax.random.PRNGKey(k))[0]) for k in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_langevin_matches_unadjusted_stationary_variance():
    """Eq. 7 for N(0, s0²): x ← (1 − α/s0²) x + sqrt(2α) z has stationary variance
    s0²/(1 − α/(2 s0²)), → s0² as α → 0."""
    s0, alpha = 0.5, 0.01
    x0 = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (4000, 2))
    x = sampling.langevin_dynamics(lambda x: -x / s0**2, x0, jax.random.PRNGKey(1), alpha, 600)
    x = np.asarray(x)
    std_ula, se = s0 / math.sqrt(1 - alpha / (2 * s0**2)), x.std() / math.sqrt(2 * x.size)
    assert abs(x.mean()) <= Z * x.std() / math.sqrt(x.size)
    assert abs(x.std() - std_ula) <= Z * se
    assert abs(x.std() - s0) <= Z * se + (std_ula - s0)  # the O(α) bias is ≈ 1 %


def test_deterministic_langevin_contracts_to_mode():
    """QCSGM §3.1: x ← x + α_k s(x) with α_k = 0.0125 e^{−k/1000}, s = −x/σ² (σ = 0.1), so
    x_k = Π_{j<k}(1 − α_j/σ²) x_0 exactly."""
    sigma, steps = 0.1, 300
    alphas = 0.0125 * jnp.exp(-jnp.arange(steps) / 1000.0)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
    x, traj = sampling.langevin_dynamics(lambda x: -x / sigma**2, x0, jax.random.PRNGKey(1),
                                         alphas, steps, noise=False, return_trajectory=True)
    assert traj.shape == (steps, 8, 2)
    factors = np.cumprod(1 - np.asarray(alphas, np.float64) / sigma**2)
    np.testing.assert_allclose(traj[:5], factors[:5, None, None] * np.asarray(x0)[None], rtol=1e-5)
    norms = np.linalg.norm(np.asarray(traj).reshape(steps, -1), axis=1)
    assert np.all(np.diff(norms) <= 0) and np.max(np.abs(x)) < 1e-6


def test_annealed_langevin_reaches_last_level_and_conditioning_is_explicit():
    """NCSN ALD with α_i = step_lr (σ_i/σ_L)² and the exact score of N(μ, s0² + σ_i²) ends at the
    ULA law of the last level, N(μ, v/(1 − α_L/(2v))) with v = s0² + σ_L²."""
    s0, sigmas, step_lr = 0.1, jnp.geomspace(2.0, 0.1, 8), 1e-3

    def score(x, sigma):
        return -(x - MU) / (s0**2 + sigma[:, None] ** 2)

    x0 = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (4000, 2))
    ald = functools.partial(sampling.annealed_langevin_dynamics, key=jax.random.PRNGKey(1),
                            sigmas=sigmas, step_lr=step_lr)
    x = np.asarray(ald(score, x0, steps_per_level=100))
    v = s0**2 + float(sigmas[-1]) ** 2
    std = math.sqrt(v / (1 - step_lr / (2 * v)))
    assert abs(x.mean() - MU) <= Z * x.std() / math.sqrt(x.size)
    assert abs(x.std() - std) <= Z * x.std() / math.sqrt(2 * x.size)
    # conditioning by index i instead of σ_i: the same chain, bit for bit; denoise = Tweedie step
    by_index = lambda x, i: score(x, sigmas[i.astype(jnp.int32)])  # noqa: E731
    run = functools.partial(ald, by_index, x0[:64], steps_per_level=20,
                            conditioning=jnp.arange(8.0))
    ref = ald(score, x0[:64], steps_per_level=20)
    np.testing.assert_array_equal(run(), ref)
    denoised = ref + sigmas[-1] ** 2 * score(ref, jnp.full((64,), sigmas[-1]))
    np.testing.assert_allclose(run(denoise=True), denoised, rtol=1e-6)


def test_langevin_registry_samplers_take_score_models():
    """The registry's Langevin entries take score_model(x, t) like every sampler: "langevin" calls
    it at its fixed t (noise=False, s = −x/t²: x_K = (1 − α/t²)^K x_T exactly), and refuses to be
    built without one."""
    t, alpha, steps = 0.5, 0.01, 7
    langevin = sampling.get_sampler("langevin", step_size=alpha, num_steps=steps, t=t, noise=False)
    x_T = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    x, nfe = langevin(lambda x, s: -x / s[:, None] ** 2, (5, 2), jax.random.PRNGKey(1), x_T)
    assert nfe == steps
    np.testing.assert_allclose(x, (1 - alpha / t**2) ** steps * x_T, rtol=1e-5)
    _raises(r"sampler 'langevin' needs argument\(s\) \['t'\]",
            lambda: sampling.get_sampler("langevin", step_size=alpha, num_steps=steps))
    ald = sampling.get_sampler("annealed_langevin", sigmas=[1.0, 0.5], steps_per_level=3,
                               step_lr=0.01, denoise=True)
    x, nfe = ald(lambda x, s: -x / (1 + s[:, None, None] ** 2), (5, 2, 2), jax.random.PRNGKey(0))
    assert x.shape == (5, 2, 2) and nfe == 7


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_reverse_sde_strong_convergence_on_shared_brownian_path(solver):
    """The Brownian path is a function of the key only, so solutions with N and 8N steps are
    coupled and their distance halves as N doubles (strong order 1 for additive noise)."""
    score = GaussianScore(VP)
    run = lambda n: np.asarray(sampling.reverse_sde_sampler(  # noqa: E731
        VP, score, (256, 2), jax.random.PRNGKey(3), num_steps=n, solver=solver, denoise=False)[0])
    ref = run(400)
    d25, d50 = (np.sqrt(np.mean((run(n) - ref) ** 2)) for n in (25, 50))
    assert 1.5 < d25 / d50 < 2.7, (d25, d50)


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


def test_bad_names_raise_with_allowed_names():
    key, score = jax.random.PRNGKey(0), GaussianScore(VP)
    _raises(r"sampler name must be one of \('pc', 'ode', 'reverse_sde', 'ddim', 'heun', "
            r"'inpaint', 'colorize', 'dps', 'langevin', 'annealed_langevin'\); got 'foo'",
            sampling.get_sampler, "foo")
    _raises(r"predictor must be one of \('euler_maruyama', 'reverse_diffusion', 'ancestral', "
            r"'none'\); got 'bad'",
            sampling.pc_sampler, VP, score, (4, 2), key, predictor="bad")
    _raises(r"corrector must be one of \('langevin', 'ald', 'none'\); got 'bad'",
            sampling.pc_sampler, VP, score, (4, 2), key, corrector="bad")
    _raises(r"solver must be one of \('dopri5', 'tsit5', 'bosh3', 'heun'\); got 'rk45'",
            sampling.ode_sampler, VP, score, (4, 2), key, solver="rk45")
    _raises(r"solver must be one of \('euler', 'heun'\); got 'shark'",
            sampling.reverse_sde_sampler, VP, score, (4, 2), key, solver="shark")
    _raises(r"pc predictor must be one of .*'reverse_diffusion'.*got 'ancestral_sampling'",
            sampling.get_sampler, "pc", sde=VP, predictor="ancestral_sampling")
    _raises(r"unknown argument\(s\) \['snr'\] for sampler 'ode'", sampling.get_sampler, "ode",
            sde=VP, snr=0.1)
    _raises(r"needs argument\(s\) \['sde'\]", sampling.get_sampler, "pc")
    _raises(r"shape must be", sampling.pc_sampler, VP, score, (4,), key)
    _raises(r"eps must lie in", sampling.ode_sampler, VP, score, (4, 2), key, eps=0.0)
