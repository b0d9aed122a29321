"""DDIM, Heun (EDM) and the ancestral predictor against exact answers on Gaussian data.

Data N(μ, Σ0) with a non-diagonal Σ0 (``gaussian_oracle.Gaussian``, D = 4): the score of every
noise level is exact, so what remains is each sampler's own error, measured two ways.

* Deterministic samplers (DDIM η = 0, Heun without churn) are affine maps of x_T. In float64
  they must equal their steps written out in NumPy (``_reference``). Their ideal counterpart is
  the exact probability flow of the scaled variable from σ̃(T) to σ̃(eps) followed by the exact
  last step to the clean level, the denoiser D(·; σ̃(eps)) (``Gaussian.ideal_map``); the
  distance to it at N and 2N steps gives the order of the method: DDIM is Euler in σ̃ (order 1),
  Heun order 2. The moments of samples from the prior are then checked against the ideal map's
  output law within Z standard errors (sample count) plus the method's discretisation error e_N,
  the largest |reference(x_T) − ideal(x_T)| over 64 prior draws: the error δ is affine in x_T,
  so it moves the mean by at most e_N and a covariance entry C_jk by at most
  e_N (sd_j + sd_k) + e_N².
* Stochastic chains (ancestral VE / VP, DDIM η = 1) are linear with Gaussian noise for a Gaussian
  score, so the exact law of the discretised chain follows from propagating mean and covariance in
  float64 (``_chain_law``, the steps written out from the papers' formulas). Samples must match
  that law within Z standard errors; its distance to the data is the chain's discretisation error,
  stated and bounded.

Z = 5 per entry (two-sided p ≈ 6e-7; fixed keys make the tests deterministic).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_oracle import Gaussian, moments

from sgm_jax import sampling
from sgm_jax.sampling.heun import edm_sigmas, sigma_range
from sgm_jax.sde import VESDE, VPSDE, subVPSDE

Z = 5.0
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=50.0, N=100), "vp": VPSDE(N=100),
        "subvp": subVPSDE(N=100)}
EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}


def _ideal(g, sde, x_T):
    """The ideal deterministic sampler's output for x_T (float64) and its (K, b, c_T)."""
    sigma_min, sigma_max = sigma_range(sde)
    with jax.enable_x64(True):
        c_T = float(sde.mean_coeff(np.ones(1))[0])
    k, b = g.ideal_map(sigma_max, sigma_min)
    return np.asarray(x_T, np.float64).reshape(len(x_T), -1) / c_T @ k.T + b, (k, b, c_T)


def _reference(name, sde, g, x_T, num_steps):
    """The sampler written out in float64 NumPy for the Gaussian: both are Euler (DDIM) or Heun
    steps of dx̃/dσ = (x̃ − D(x̃; σ))/σ = σ (Σ0 + σ²)⁻¹ (x̃ − μ) in x̃ = x / c (EDM §3; DDIM Eq. 12
    in x̃ is x̃_u = x̃_t + (σ̃_u − σ̃_t) ε̂), DDIM on the σ̃ of the grid linspace(1, eps, N),
    Heun on EDM's levels, each ending at σ = 0."""
    slope = lambda x, s: s * (x - g.mu) @ g.u @ np.diag(1 / (g.lam + s**2)) @ g.u.T  # noqa: E731
    if name == "heun":
        sigmas = edm_sigmas(*sigma_range(sde), num_steps)
    else:
        with jax.enable_x64(True):  # the grid as the sampler computes it in float64
            ts = np.asarray(jnp.linspace(1.0, EPS[_kind(sde)], num_steps))
            sigmas = np.append([math.sqrt(v[0] - c**2 * g.lam[0]) / c
                                for c, v in map(g._np, ts)], 0)
    x = np.asarray(x_T, np.float64).reshape(len(x_T), -1) / _ideal(g, sde, x_T)[1][2]
    for i, (s, s_next) in enumerate(zip(sigmas, sigmas[1:])):
        d = slope(x, s)
        x_next = x + (s_next - s) * d
        if name == "heun" and s_next > 0:
            x_next = x + (s_next - s) * (d + slope(x_next, s_next)) / 2
        x = x_next
    return x


def _kind(sde):
    return next(k for k, v in SDES.items() if v is sde)


def _run(name, sde, g, num_steps, x_T):
    """The library's sampler in float64 on x_T."""
    with jax.enable_x64(True):
        run = jax.jit(lambda x: sampling.get_sampler(name, sde=sde, num_steps=num_steps)(
            g.score, x.shape, jax.random.PRNGKey(1), x)[0])
        return np.asarray(run(jnp.asarray(x_T, jnp.float64))).reshape(len(x_T), -1)


def _prior_points(sde):
    return np.asarray(sde.prior_sampling(jax.random.PRNGKey(0), (64, 4)), np.float64)


@pytest.mark.parametrize("name,steps", [("ddim", 10), ("heun", 6)])
@pytest.mark.parametrize("kind", ["ve", "vp", pytest.param("subvp", marks=pytest.mark.slow)])
def test_deterministic_sampler_is_its_discretisation(name, steps, kind):
    """In float64 the library's DDIM (η = 0) and Heun give the steps written out in
    ``_reference`` to 1e-9 relative. Catches any change of the update: a Heun step without its
    correction, x_T not scaled by 1/c_T, a wrong x̂_0, a noise term at η = 0, another σ grid."""
    sde, g = SDES[kind], Gaussian(SDES[kind], (4,), seed=3)
    x_T = _prior_points(sde)
    np.testing.assert_allclose(_run(name, sde, g, steps, x_T),
                               _reference(name, sde, g, x_T, steps), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,order,steps", [("ddim", 1, 10), ("heun", 2, 20)])
@pytest.mark.parametrize("kind", ["ve", "vp", pytest.param("subvp", marks=pytest.mark.slow)])
def test_deterministic_sampler_converges_at_its_order(name, order, steps, kind):
    """The distance e_N = max |sampler(x_T) − ideal(x_T)| over 64 prior draws: log2(e_N / e_2N)
    rounds to the method's order, i.e. lies in (order − ½, order + ½) (measured 1.00–1.02 and
    2.13–2.28). Catches a Heun step without its correction (order 1), a wrong x̂_0 or σ̃(t) map
    (an error that does not fall) and a σ grid that does not reach σ_min."""
    sde, g = SDES[kind], Gaussian(SDES[kind], (4,), seed=3)
    x_T = _prior_points(sde)
    ideal = _ideal(g, sde, x_T)[0]
    e_n, e_2n = (np.max(np.abs(_run(name, sde, g, n, x_T) - ideal)) for n in (steps, 2 * steps))
    assert order - 0.5 < math.log2(e_n / e_2n) < order + 0.5, (e_n, e_2n)


@pytest.mark.parametrize("name,kind,steps", [("heun", "ve", 40), ("heun", "vp", 40),
                                             ("ddim", "vp", 200)])
def test_deterministic_sampler_maps_prior_to_data(name, kind, steps):
    """Samples from the prior (4,000 × D = 4, float32) have the moments of the ideal map's output
    law N(b, (σ_prior/c_T)² K Kᵀ) within Z se plus the discretisation error e_N of the method,
    max |reference(x_T) − ideal(x_T)| over 64 prior draws (``_reference``, independent of the
    library); the ideal law is the data law up to the prior mismatch (the prior is N(0,
    σ_prior²), not p_T), bounded below. NFE: Heun 2N − 1, DDIM N, counted at run time. Catches
    samples not drawn from the prior (a wrong x_T scale or shape) and a broken batch path."""
    sde, g = SDES[kind], Gaussian(SDES[kind], (4,), seed=3)
    x_T = _prior_points(sde)
    e_n = np.max(np.abs(_reference(name, sde, g, x_T, steps) - _ideal(g, sde, x_T)[0]))
    sample = jax.jit(sampling.get_sampler(name, sde=sde, num_steps=steps), static_argnums=(0, 1))
    x, nfe = sample(g.counted_score, (4000, 4), jax.random.PRNGKey(2))
    assert int(nfe) == g.calls == {"heun": 2 * steps - 1, "ddim": steps}[name]
    _, (k, b, c_T) = _ideal(g, sde, np.zeros((1, 4)))
    law_cov = (sde.prior_std / c_T) ** 2 * k @ k.T
    # prior mismatch: b − μ = −K μ with ‖K‖ = max λ / sqrt((λ + σ̃_min²)(λ + σ̃_max²)) ≤ sqrt(λ_max)/σ̃_max
    assert np.linalg.norm(b - g.mu) <= math.sqrt(g.lam.max()) * np.linalg.norm(g.mu) / sigma_range(sde)[1]
    mean, cov, se_mean, se_cov = moments(x)
    sd = np.sqrt(np.diag(law_cov))
    assert np.all(np.abs(mean - b) <= Z * se_mean + e_n), (mean - b, e_n)
    assert np.all(np.abs(cov - law_cov) <= Z * se_cov + e_n * np.add.outer(sd, sd) + e_n**2)


def test_heun_noise_levels_follow_edm():
    """EDM Eq. 5: ρ-spaced levels from σ_max to σ_min, then 0; ρ = 1 is a linear grid."""
    s = edm_sigmas(0.002, 80.0, 18)
    assert len(s) == 19 and s[0] == pytest.approx(80.0) and s[17] == pytest.approx(0.002)
    assert s[-1] == 0 and np.all(np.diff(s) < 0)
    np.testing.assert_allclose(s[5], (80 ** (1 / 7) + 5 / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7)
    np.testing.assert_allclose(edm_sigmas(1.0, 5.0, 5, rho=1.0)[:-1], [5, 4, 3, 2, 1])
    np.testing.assert_allclose(edm_sigmas(0.1, 5.0, 1), [5.0, 0.0])
    assert sigma_range(SDES["ve"]) == pytest.approx((0.01 * 5000 ** 1e-5, 50.0), rel=1e-5)


def test_heun_churn_adds_noise_only_inside_its_range():
    """With S_churn > 0 the sampler is stochastic (key-dependent); with the churn range [S_min,
    S_max] outside every σ_i it is the deterministic Algorithm 1 bit for bit. NFE 2N − 1 either
    way. Catches churn applied outside its range and an NFE that counts the churn."""
    sde, g = SDES["ve"], Gaussian(SDES["ve"], (4,), seed=3)
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), (16, 4))

    def run(key, **kwargs):
        out, nfe = jax.jit(lambda x, k: sampling.heun_sampler(sde, g.score, (16, 4), k, num_steps=6,
                                                              x_T=x, **kwargs))(x_T, key)
        assert int(nfe) == 11
        return np.asarray(out)

    plain = run(jax.random.PRNGKey(1))
    churned = [run(jax.random.PRNGKey(k), s_churn=10.0) for k in (1, 2)]
    assert not np.allclose(churned[0], churned[1]) and not np.allclose(churned[0], plain)
    np.testing.assert_array_equal(run(jax.random.PRNGKey(3), s_churn=10.0, s_min=60.0), plain)
    np.testing.assert_array_equal(run(jax.random.PRNGKey(4)), plain)


# --------------------------------------------------------------------------- stochastic chains


def _chain_law(g, step_fn, ts, start):
    """Mean and covariance (float64) of a linear Gaussian chain x ← A x + a + sqrt(q) z from the
    law ``start`` = (mean, cov), with ``step_fn(k, t, Λ, m) -> (A, a, q)`` given the exact score
    s = −Λ (x − m) at time t."""
    mean, cov = start
    for k, t in enumerate(ts):
        c, var = g._np(t)
        prec = g.u @ np.diag(1 / var) @ g.u.T
        a_mat, a_vec, q = step_fn(k, t, prec, c * g.mu)
        mean, cov = a_mat @ mean + a_vec, a_mat @ cov @ a_mat.T + q * np.eye(g.dim)
    return mean, cov


def _law_error(g, law):
    return max(np.max(np.abs(law[0] - g.mu)), np.max(np.abs(law[1] - g.cov)))


def _ancestral_step(sde):
    """score_sde's ancestral steps (Song et al. 2021, App. F) written out: VE x + (σ_i² −
    σ_{i−1}²) s + sqrt(σ_{i−1}² (σ_i² − σ_{i−1}²)/σ_i²) z; VP (x + β_i s)/sqrt(1 − β_i) +
    sqrt(β_i) z, with σ_i, β_i the discrete levels of step i = int(t (N − 1)); the last step's
    noise is dropped (``denoise``)."""
    n, eye = sde.N, np.eye(4)

    def step(k, t, prec, m):
        i = int(np.float32(t) * np.float32(n - 1))  # the index as the library computes it
        last = k == n - 1
        if isinstance(sde, VESDE):
            sig = lambda j: sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** (j / (n - 1))  # noqa: E731
            d = sig(i) ** 2 - (sig(i - 1) ** 2 if i > 0 else 0.0)
            q = 0.0 if last else (sig(i - 1) ** 2 if i > 0 else 0.0) * d / sig(i) ** 2
            return eye - d * prec, d * prec @ m, q
        beta = (sde.beta_min + i / (n - 1) * (sde.beta_max - sde.beta_min)) / n
        r = 1 / math.sqrt(1 - beta)
        return r * (eye - beta * prec), r * beta * prec @ m, 0.0 if last else beta

    return step


def _grid(n, eps):
    return np.asarray(jnp.linspace(1.0, eps, n, dtype=jnp.float32))  # the sampler's grid


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_ancestral_predictor_samples_its_chain_law(kind):
    """pc_sampler(predictor="ancestral", corrector="none"): 8,000 samples match the exact law of
    score_sde's ancestral chain (``_ancestral_step``, started from the prior) within Z se. Started
    from the exact p_T instead, that chain's law is the data law up to its discretisation error,
    which falls like 1/N (log2 of the ratio at N = 100 and 200 within (½, 3/2)). NFE = N. Catches
    the VE posterior std or the VP 1/sqrt(1 − β) written otherwise."""
    sde, g = SDES[kind], Gaussian(SDES[kind], (4,), seed=5)
    sample = jax.jit(sampling.get_sampler("pc", sde=sde, predictor="ancestral", corrector="none",
                                          eps=EPS[kind]), static_argnums=(0, 1))
    x, nfe = sample(g.counted_score, (8000, 4), jax.random.PRNGKey(0))
    assert int(nfe) == g.calls == sde.N
    prior = (np.zeros(4), sde.prior_std**2 * np.eye(4))
    law_mean, law_cov = _chain_law(g, _ancestral_step(sde), _grid(sde.N, EPS[kind]), prior)
    mean, cov, se_mean, se_cov = moments(x)
    assert np.all(np.abs(mean - law_mean) <= Z * se_mean)
    assert np.all(np.abs(cov - law_cov) <= Z * se_cov)
    errors = []
    for n in (100, 200):
        chain = type(sde)(**{**sde.__dict__, "N": n})
        c_T, var_T = g._np(1.0)
        exact_T = (c_T * g.mu, g.u @ np.diag(var_T) @ g.u.T)
        errors.append(_law_error(g, _chain_law(g, _ancestral_step(chain), _grid(n, EPS[kind]),
                                               exact_T)))
    assert 0.5 < math.log2(errors[0] / errors[1]) < 1.5, errors


def test_ddim_eta_one_matches_ancestral_sampling_in_distribution():
    """On VE, DDIM with η = 1 is score_sde's ancestral step (ddim module docstring): the two
    samplers differ only in the noise levels, σ(t_k) of the grid t_k = linspace(1, eps, N) against
    σ_i = σ(i/(N − 1)) with i = N − 1 − k: |t_k − i/(N − 1)| ≤ eps = 1e-5 (a relative change of
    σ of 1e-5 ln(σ_max/σ_min) ≈ 1e-4, far below the test's resolution). 8,000 samples each: means
    and covariances agree within Z se of their difference. Catches η scaling the noise wrongly
    (η = 1 must give the posterior std of the Markov chain) and a missing sqrt(σ_u² − σ̂²)."""
    sde, g = SDES["ve"], Gaussian(SDES["ve"], (4,), seed=5)
    ddim = jax.jit(sampling.get_sampler("ddim", sde=sde, num_steps=sde.N, eta=1.0),
                   static_argnums=(0, 1))
    ancestral = jax.jit(sampling.get_sampler("pc", sde=sde, predictor="ancestral",
                                             corrector="none", eps=EPS["ve"]),
                        static_argnums=(0, 1))
    a, b = (moments(f(g.score, (8000, 4), jax.random.PRNGKey(k))[0])
            for f, k in ((ddim, 0), (ancestral, 1)))
    assert np.all(np.abs(a[0] - b[0]) <= Z * np.hypot(a[2], b[2]))
    assert np.all(np.abs(a[1] - b[1]) <= Z * np.hypot(a[3], b[3]))


def test_ancestral_refuses_sub_vp_and_fast_sampler_arguments_are_checked():
    key, score = jax.random.PRNGKey(0), lambda x, t: -x
    with pytest.raises(ValueError, match="ancestral predictor is defined for the VE and VP"):
        sampling.pc_sampler(SDES["subvp"], score, (4, 2), key, predictor="ancestral")
    with pytest.raises(ValueError, match=r"eta must be a number in \[0.0, 1.0\]; got 1.5"):
        sampling.ddim_sampler(SDES["vp"], score, (4, 2), key, eta=1.5)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1; got 0"):
        sampling.heun_sampler(SDES["vp"], score, (4, 2), key, num_steps=0)
    with pytest.raises(ValueError, match=r"s_max must be a number in \[2.0, inf\]; got 1.0"):
        sampling.heun_sampler(SDES["vp"], score, (4, 2), key, s_min=2.0, s_max=1.0)
    with pytest.raises(ValueError, match="rho must be finite and > 0"):
        sampling.heun_sampler(SDES["vp"], score, (4, 2), key, rho=0.0)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['snr'\] for sampler 'heun'"):
        sampling.get_sampler("heun", sde=SDES["vp"], snr=0.1)
