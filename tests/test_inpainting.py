"""Inpainting and colorization (PC imputation) against the exact conditional Gaussian.

Data N(μ, Σ0) with a non-diagonal Σ0 (``gaussian_oracle.Gaussian``): the conditional law of the
unknown part given the known one is Gaussian and known in closed form, in pixel coordinates for
inpainting and in score_sde's decoupled colour coordinates u = x M for colorization (the grey
channel known, the chroma unknown).

With the exact score every update of the imputation chain is linear with Gaussian noise, so the
exact law of the discretised chain follows from propagating the mean and covariance of
(unknown part, current noise of the known part) in float64 (``_imputation_law``: the VE
reverse-diffusion predictor and the ALD corrector written out from score_sde's formulas, the
known part replaced at the levels of ``sgm_jax.sampling.inpainting``). Three statements:

  * the samples follow that law within Z = 5 standard errors per entry (sample count);
  * that law is the conditional law up to the chain's discretisation error d_N, computed by the
    same propagation, so the samples lie within Z se + d_N of the conditional law;
  * d_N falls as N grows with the corrector, and does not without it (the replacement method's
    own error, score_sde's App. I.2 approximation, which the corrector's mixing removes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_oracle import Gaussian, moments

from sgm_jax import sampling
from sgm_jax.sampling.inpainting import COLOR_DECOUPLING
from sgm_jax.sde import VESDE, VPSDE

Z = 5.0
SNR, N_STEPS = 0.3, 2  # the ALD corrector of the tests: ε = 2 (snr σ_t)², two steps per level
BATCH = 8000


def _discrete_step(sde, t):
    """(a, h, q, α) of score_sde's discrete chain at step i = int(t (N − 1)): the reverse-diffusion
    predictor x ← a x + h s + sqrt(q) z (VE: SMLD, a = 1, h = q = σ_i² − σ_{i−1}²; VP: DDPM,
    a = 2 − sqrt(1 − β_i), h = q = β_i) and the corrector's α (1; 1 − β_i)."""
    i = int(np.float32(t) * np.float32(sde.N - 1))  # the index as the library computes it
    if isinstance(sde, VESDE):
        level = lambda j: sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** (j / (sde.N - 1))  # noqa: E731
        d = level(i) ** 2 - (level(i - 1) ** 2 if i > 0 else 0.0)
        return 1.0, d, d, 1.0
    beta = (sde.beta_min + i / (sde.N - 1) * (sde.beta_max - sde.beta_min)) / sde.N
    return 2 - math.sqrt(1 - beta), beta, beta, 1 - beta


def _imputation_law(g, sde, q, known, y, snr, n_steps, eps, corrector=True):
    """Law (mean, cov) of the unknown latent coordinates u_o of u = Q x at the end of the PC
    imputation chain (reverse-diffusion predictor, ALD corrector ε = 2 α (snr σ_t)² with
    ``n_steps`` steps or none, denoised output), float64. The state is (u_o, ξ), ξ the standard
    noise of the known part c_t y + σ_t ξ since its last replacement, which draws it afresh."""
    o, k = ~known, known
    n_o, n_k = int(o.sum()), int(k.sum())
    mu_u, eig = q @ g.mu, q @ g.u
    mean = np.zeros(n_o + n_k)
    cov = np.diag(np.r_[np.full(n_o, sde.prior_std**2), np.ones(n_k)])  # x_T, then ξ at level T
    ts = np.asarray(jnp.linspace(sde.T, eps, sde.N, dtype=jnp.float32))  # the sampler's grid

    def update(mean, cov, t, a, h, noise_var):
        """u_o ← a u_o + h s_o + sqrt(noise_var) z, s the exact score at t with the known part at
        the level of t."""
        c, var = g._np(t)
        std = float(sde.marginal_std(np.float64(t)))
        prec = eig @ np.diag(1 / var) @ eig.T
        p_oo, p_ok = prec[np.ix_(o, o)], prec[np.ix_(o, k)]
        m = c * mu_u
        lin = np.eye(n_o + n_k)
        lin[:n_o, :n_o] = a * np.eye(n_o) - h * p_oo
        lin[:n_o, n_o:] = -h * std * p_ok
        shift = np.r_[h * (p_oo @ m[o] + p_ok @ (m[k] - c * y)), np.zeros(n_k)]
        return lin @ mean + shift, lin @ cov @ lin.T + np.diag(np.r_[np.full(n_o, noise_var),
                                                                     np.zeros(n_k)])

    def refresh(mean, cov):
        mean, cov = mean.copy(), cov.copy()
        mean[n_o:], cov[n_o:, :], cov[:, n_o:] = 0, 0, 0
        cov[n_o:, n_o:] = np.eye(n_k)
        return mean, cov

    for step, t in enumerate(ts):
        a, h, q_pred, alpha = _discrete_step(sde, t)
        if corrector:
            size = 2 * alpha * (snr * float(sde.marginal_std(np.float64(t)))) ** 2
            for _ in range(n_steps):
                mean, cov = update(mean, cov, t, 1.0, size, 2 * size)
            mean, cov = refresh(mean, cov)
        mean, cov = update(mean, cov, t, a, h, 0.0 if step == sde.N - 1 else q_pred)
        mean, cov = refresh(mean, cov)
    return mean[:n_o], cov[:n_o, :n_o]


def _colour_q(pixels):
    """Q with u_flat = Q x_flat for u = x M per pixel (channels last)."""
    return np.kron(np.eye(pixels), COLOR_DECOUPLING.T)


def _check(samples_u, law, cond):
    """Samples vs the chain's law (Z se) and vs the conditional law (Z se + d_N)."""
    mean, cov, se_mean, se_cov = moments(samples_u)
    d_mean, d_cov = np.max(np.abs(law[0] - cond[0])), np.max(np.abs(law[1] - cond[1]))
    assert np.all(np.abs(mean - law[0]) <= Z * se_mean)
    assert np.all(np.abs(cov - law[1]) <= Z * se_cov)
    assert np.all(np.abs(mean - cond[0]) <= Z * se_mean + d_mean)
    assert np.all(np.abs(cov - cond[1]) <= Z * se_cov + d_cov)
    return d_mean, d_cov


def test_inpainting_samples_the_conditional_gaussian():
    """D = 8 (event 2×2×2), the four values of the left column known; N = 100, ALD corrector
    (snr 0.3, 2 steps), 8,000 samples. The known pixels come back bit for bit; NFE = N (1 + 2),
    counted at run time. Catches a chain whose corrector does not run (the replacement method's
    own error, test below) and the known part of the output not replaced. Not caught, because the
    final law hardly depends on them (checked): the known part kept clean instead of perturbed,
    or perturbed one level behind (score_sde's t_k after the predictor)."""
    sde = VESDE(sigma_min=0.01, sigma_max=20.0, N=100)
    g = Gaussian(sde, (2, 2, 2), seed=11)
    known = np.zeros((2, 2, 2), bool)
    known[:, 0] = True
    x_known = np.broadcast_to(np.asarray(g.sample(7, 1))[0], (BATCH, 2, 2, 2))
    run = jax.jit(lambda x, m, key: sampling.inpaint(sde, g.counted_score, x, m, key,
                                                     corrector="ald", snr=SNR, n_steps=N_STEPS,
                                                     eps=1e-5))
    out, nfe = run(jnp.asarray(x_known), jnp.asarray(known, jnp.float32), jax.random.PRNGKey(0))
    out = np.asarray(out)
    assert int(nfe) == g.calls == sde.N * (1 + N_STEPS)
    np.testing.assert_array_equal(out[:, known], x_known[:, known])
    flat_known = known.reshape(-1)
    y = x_known[0].reshape(-1)[flat_known].astype(np.float64)
    law = _imputation_law(g, sde, np.eye(8), flat_known, y, SNR, N_STEPS, 1e-5)
    d_mean, d_cov = _check(out.reshape(BATCH, -1)[:, ~flat_known], law,
                           g.conditional(np.eye(8), flat_known, y))
    assert max(d_mean, d_cov) < 0.1  # the chain's error at N = 100: 0.071 (mean), 0.032 (cov)


def test_colorization_samples_the_conditional_gaussian():
    """Two RGB pixels (D = 6) on the VP SDE (known part c_t y + σ_t z) in score_sde's decoupled
    space: the grey coordinate √3 g of each pixel known, the four chroma coordinates drawn; bounds
    as for inpainting. The output's grey level (r + g + b)/3 equals the input to float32
    rounding. Catches a transform that is not inverted, a grey level not scaled by √3 into the
    decoupled space, and the known part without its mean coefficient c_t."""
    sde = VPSDE(N=100)
    g = Gaussian(sde, (1, 2, 3), seed=12)
    x = np.asarray(g.sample(3, 1), np.float64)[0]
    gray = np.broadcast_to(x.mean(-1, keepdims=True), (BATCH, 1, 2, 1)).astype(np.float32)
    run = jax.jit(lambda gray, key: sampling.colorize(sde, g.score, gray, key, corrector="ald",
                                                      snr=SNR, n_steps=N_STEPS, eps=1e-3))
    out, nfe = run(jnp.asarray(gray), jax.random.PRNGKey(1))
    out = np.asarray(out, np.float64)
    assert out.shape == (BATCH, 1, 2, 3) and int(nfe) == sde.N * (1 + N_STEPS)
    np.testing.assert_allclose(out.mean(-1, keepdims=True), gray, atol=1e-5)
    q, known = _colour_q(2), np.tile([True, False, False], 2)
    u = out.reshape(BATCH, -1) @ q.T
    y = (q @ x.reshape(-1))[known]
    law = _imputation_law(g, sde, q, known, y, SNR, N_STEPS, 1e-3)
    _check(u[:, ~known], law, g.conditional(q, known, y))  # d_N: 0.059 (mean), 0.106 (cov)


def test_imputation_error_falls_with_the_corrector_and_not_without():
    """The replacement method's error, from the exact chain law (no sampling): with the ALD
    corrector d_N falls by more than a third from N = 100 to 400; without a corrector it stays
    above 80 % of its N = 100 value (score_sde App. I.2's approximation of p_t(x_unknown | y) by
    p_t(x_unknown | ŷ_t) is not a discretisation error). Documents why the tests above run a
    corrector."""
    g8 = Gaussian(VESDE(sigma_min=0.01, sigma_max=20.0), (2, 2, 2), seed=11)
    known = np.zeros(8, bool)
    known[::2] = True
    y = g8.mu[known] + 0.5
    cond = g8.conditional(np.eye(8), known, y)
    errors = {}
    for corrector in (True, False):
        for n in (100, 400):
            sde = VESDE(sigma_min=0.01, sigma_max=20.0, N=n)
            g8.sde = sde
            law = _imputation_law(g8, sde, np.eye(8), known, y, SNR, N_STEPS, 1e-5, corrector)
            errors[corrector, n] = max(np.max(np.abs(law[0] - cond[0])),
                                       np.max(np.abs(law[1] - cond[1])))
    assert errors[True, 400] < errors[True, 100] * 2 / 3, errors
    assert errors[False, 400] > 0.8 * errors[False, 100], errors


def test_imputation_arguments_are_checked():
    sde, score = VESDE(N=4), lambda x, t: -x
    x, key = jnp.zeros((2, 4, 4, 1)), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"mask must broadcast to the images' shape \(2, 4, 4, 1\)"):
        sampling.inpaint(sde, score, x, jnp.ones((3, 4, 1)), key)
    with pytest.raises(ValueError, match="mask must hold 0 .unknown. and 1 .known. only"):
        sampling.inpaint(sde, score, x, jnp.full((4, 4, 1), 0.5), key)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['zeta'\] for the PC sampler"):
        sampling.inpaint(sde, score, x, jnp.ones((4, 4, 1)), key, zeta=1.0)
    with pytest.raises(ValueError, match=r"gray must be grey images of shape \[B, H, W, 1\]"):
        sampling.colorize(sde, score, jnp.zeros((2, 4, 4, 3)), key)
    with pytest.raises(ValueError, match="shape must be the shape of x_known"):
        sampling.get_sampler("inpaint", sde=sde, x_known=x, mask=jnp.ones((4, 4, 1)))(
            score, (3, 4, 4, 1), key)
