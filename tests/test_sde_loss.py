"""The SDE-level loss factory against hand computations: the factory's draws
(``sde_loss.draw_noise``, whose distribution is tested here too), the SDE formulas written out
here (not sde.py's), every objective written out here (not sgm_jax.losses' kernels), and the QC
term from full per-example Jacobians.

The hand computations run in float64, so a mismatch beyond 1e-10 (relative) is a wrong formula,
not rounding: every quantity here is O(1e−2..1e3) and passes through a few hundred flops.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from exact_reference import assert_unbiased, energy_score, init_mlp, mlp_score
from sgm_jax import losses
from sgm_jax._jacobian import linearize_score
from sgm_jax.sde import VESDE, VPSDE, subVPSDE
from sgm_jax.sde_loss import OBJECTIVES, PERTURBATIONS, draw_noise, get_sde_loss_fn

RTOL = 1e-10  # float64 (module docstring)
EPS = 1e-5  # the factory's default t_min


def _time_conditional(params):
    """s(x, t) = mlp(x) · (1 + t): a non-conservative field that depends on t."""
    return lambda x, t: mlp_score(params, x) * (1.0 + t)[:, None]


def _setup(dim=3, batch=6, seed=0, dtype=jnp.float32):
    params = init_mlp(jax.random.PRNGKey(seed), (dim,), scale=1.5, dtype=dtype)
    x0 = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, dim), dtype)
    return params, x0


# ---------------------------------------------------------------------------- by-hand references

SDES = {"ve": VESDE(0.1, 3.0), "vp": VPSDE(0.1, 20.0), "subvp": subVPSDE(0.1, 20.0)}


def _sde_formulas(name, t):
    """(c(t), σ_t, g(t)²) of Song et al. (2021) Eqs. 9, 11 and §3.4, written out independently."""
    if name == "ve":
        lo, hi = 0.1, 3.0
        sigma = lo * (hi / lo) ** t
        return jnp.ones_like(t), sigma, 2.0 * math.log(hi / lo) * sigma**2
    b0, b1 = 0.1, 20.0
    beta = b0 + t * (b1 - b0)
    m = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0  # log c(t)
    if name == "vp":
        return jnp.exp(m), jnp.sqrt(1.0 - jnp.exp(2 * m)), beta
    return jnp.exp(m), 1.0 - jnp.exp(2 * m), beta * (1.0 - jnp.exp(4 * m))


def _draws(key, x0, sde_name, perturbation="marginal", weighting="sigma2"):
    """t, z and the probe keys the factory draws (``draw_noise``), the mean c·x0, the
    perturbation std σ and λ(t) by hand."""
    t, z, kp, kq = draw_noise(key, x0, EPS, 1.0)
    c, sigma_t, g2 = _sde_formulas(sde_name, t)
    if perturbation == "diffusion":
        std, weight = jnp.sqrt(g2), g2
    else:
        std, weight = sigma_t, sigma_t**2 if weighting == "sigma2" else g2
    return dict(t=t, z=z, kp=kp, kq=kq, mean=c[:, None] * x0, c=c, std=std, weight=weight,
                x_tilde=c[:, None] * x0 + std[:, None] * z)


def _jacobians(model, x, t):
    """Per-example Jacobians ∂s/∂x [B, out, in] of model(·, t_b) at x_b, by jax.jacfwd."""
    return jax.vmap(lambda xb, tb: jax.jacfwd(lambda y: model(y[None], tb[None])[0])(xb))(x, t)


def _asym(jac):
    """½‖J − Jᵀ‖²_F per example (Eq. 14)."""
    return 0.5 * jnp.sum((jac - jnp.swapaxes(jac, 1, 2)) ** 2, axis=(1, 2))


def _hutchinson_qc(jac, v):
    """mean_k vᵀJJᵀv − vᵀJJv per example (Eq. 16) from Jacobians [B, out, in], v [K, B, D]."""
    jtv = jnp.einsum("bij,kbi->kbj", jac, v)
    jv = jnp.einsum("bij,kbj->kbi", jac, v)
    return jnp.mean(jnp.sum(jtv**2, -1) - jnp.sum(jtv * jv, -1), axis=0)


def _parzen_score_np(x, data, sigma):
    """∇log (1/M) Σ_i N(x; x_i, σ_b² I) per row, float64 NumPy; ``sigma`` [B]."""
    x, data, sigma = (np.asarray(a, np.float64) for a in (x, data, sigma))
    diff = data[None] - x[:, None]  # [B, M, D]
    logw = -np.sum(diff**2, -1) / (2 * sigma[:, None] ** 2)
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return np.einsum("bm,bmd->bd", w, diff) / sigma[:, None] ** 2


def _objective_by_hand(objective, model, x0, d, data, num_projections, fd_eps):
    """The per-example objective at d's draws, written out: DSM Eq. 6, LCSS Eq. 19, SSM-VR and
    ISM from full Jacobians, FD-SSM (LCSS §2.3) from its two shifted evaluations, ESM against
    the Parzen score of the perturbed data."""
    score = lambda y: model(y, d["t"])  # noqa: E731
    s, z, std = score(d["x_tilde"]), d["z"], d["std"][:, None]
    if objective == "dsm":
        return 0.5 * jnp.sum((s + z / std) ** 2, -1)
    if objective == "lcss":
        return jnp.sum(s * z, -1) / d["std"] + 0.5 * jnp.sum(s**2, -1)
    if objective == "ssm":
        v = jax.random.rademacher(d["kp"], (num_projections, *x0.shape), x0.dtype)
        jac = _jacobians(model, d["x_tilde"], d["t"])
        vjv = jnp.einsum("kbi,bij,kbj->kb", v, jac, v)
        return jnp.mean(vjv, 0) + 0.5 * jnp.sum(score(d["x_tilde"]) ** 2, -1)
    if objective == "fd_ssm":  # one Rademacher probe from the probe key (draw_probes)
        v = jax.random.rademacher(d["kp"], x0.shape, x0.dtype)
        plus, minus = score(d["x_tilde"] + fd_eps * v), score(d["x_tilde"] - fd_eps * v)
        return (jnp.sum(v * (plus - minus), -1) / (2 * fd_eps)
                + 0.125 * jnp.sum((plus + minus) ** 2, -1))
    if objective == "ism":
        jac = _jacobians(model, d["x_tilde"], d["t"])
        return 0.5 * jnp.sum(score(d["x_tilde"]) ** 2, -1) + jnp.trace(jac, axis1=1, axis2=2)
    target = _parzen_score_np(d["x_tilde"] / d["c"][:, None], data, d["std"] / d["c"])
    target = target / np.asarray(d["c"])[:, None]
    return 0.5 * jnp.sum((score(d["x_tilde"]) - target) ** 2, -1)


# ---------------------------------------------------------------------------- every objective


@pytest.mark.parametrize("qc", ["none", "hutchinson", "exact"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_equals_its_formula_by_hand(objective, qc):
    """λ(t)·objective + qc_weight·σ_t²·QC with the factory's draws, on a VP SDE (c(t) ≠ 1), every
    objective written out here: a wrong kernel in sgm_jax.losses (e.g. z·σ for z/σ in DSM) fails,
    while a changed key routing (draw_noise) is followed."""
    with jax.enable_x64(True):
        params, x0 = _setup(dtype=jnp.float64)
        model = _time_conditional(params)
        data = jax.random.normal(jax.random.PRNGKey(9), (7, 3), jnp.float64)
        qc_weight = 0.0 if qc == "none" else 0.3
        loss_fn = get_sde_loss_fn(SDES["vp"], objective, qc_weight=qc_weight,
                                  qc_estimator="exact" if qc == "exact" else "hutchinson",
                                  qc_num_vectors=2, num_projections=2, fd_eps=0.05, data=data)
        key = jax.random.PRNGKey(3)
        loss, aux = loss_fn(model, x0, key)

        d = _draws(key, x0, "vp")
        per_example = _objective_by_hand(objective, model, x0, d, data, 2, 0.05)
        objective_mean = jnp.mean(d["weight"] * per_example)
        jac = _jacobians(model, d["x_tilde"], d["t"])
        if qc == "hutchinson":
            v = jax.random.rademacher(d["kq"], (2, *x0.shape), x0.dtype)
            qc_value = _hutchinson_qc(jac, v)
        else:
            qc_value = _asym(jac)
        qc_mean = jnp.mean(d["std"] ** 2 * qc_value) if qc != "none" else 0.0

        np.testing.assert_allclose(aux["objective"], objective_mean, rtol=RTOL)
        np.testing.assert_allclose(aux["qc"], qc_mean, rtol=RTOL, atol=0.0)
        np.testing.assert_allclose(loss, objective_mean + qc_weight * qc_mean, rtol=RTOL)
        if qc != "none":  # the QC term is a visible part of the total, so a wrong factor shows
            assert float(qc_weight * qc_mean) > 1e-3 * abs(float(loss))


@pytest.mark.parametrize("perturbation", PERTURBATIONS)
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("sde_name", SDES)
def test_lcss_kernel_and_weight_by_hand(sde_name, weighting, perturbation):
    """x′ = c(t)x0 + σz with σ = σ_t or g(t), the LCSS value s(x′)ᵀ(x′ − c x0)/σ² + ½‖s(x′)‖²
    and λ(t) (σ_t², g², or g² for every weighting under "diffusion"), all by hand; QC scaled by
    the perturbation variance."""
    with jax.enable_x64(True):
        params, x0 = _setup(dtype=jnp.float64)
        model = _time_conditional(params)
        key = jax.random.PRNGKey(4)
        loss, aux = get_sde_loss_fn(SDES[sde_name], "lcss", qc_weight=0.2, weighting=weighting,
                                    perturbation=perturbation)(model, x0, key)
        d = _draws(key, x0, sde_name, perturbation, weighting)
        x_prime, std = d["x_tilde"], d["std"]
        s = model(x_prime, d["t"])
        lcss = jnp.sum(s * (x_prime - d["mean"]), -1) / std**2 + 0.5 * jnp.sum(s**2, -1)
        v = jax.random.rademacher(d["kq"], (1, *x0.shape), x0.dtype)
        qc = _hutchinson_qc(_jacobians(model, x_prime, d["t"]), v)
        expected = jnp.mean(d["weight"] * lcss) + 0.2 * jnp.mean(std**2 * qc)
        np.testing.assert_allclose(loss, expected, rtol=RTOL)
        np.testing.assert_allclose(aux["objective"], jnp.mean(d["weight"] * lcss), rtol=RTOL)


def test_reduce_mean_divides_the_objective_by_the_event_size_only():
    """score_sde's reduce_mean: the objective averaged over the D event entries, QC unchanged."""
    with jax.enable_x64(True):
        params, x0 = _setup(dtype=jnp.float64)
        model, key = _time_conditional(params), jax.random.PRNGKey(6)
        summed = get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=0.2)(model, x0, key)[1]
        averaged = get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=0.2, reduce_mean=True)(
            model, x0, key)[1]
        np.testing.assert_allclose(averaged["objective"], summed["objective"] / 3, rtol=RTOL)
        np.testing.assert_allclose(averaged["qc"], summed["qc"], rtol=RTOL)


def test_diffusion_perturbation_is_not_the_marginal_under_ve():
    """g(t) = σ_t · sqrt(2 ln(σ_max/σ_min)) under VE: the two settings perturb differently."""
    with jax.enable_x64(True):
        params, x0 = _setup(dtype=jnp.float64)
        model, key = _time_conditional(params), jax.random.PRNGKey(5)
        marginal = get_sde_loss_fn(SDES["ve"], "dsm")(model, x0, key)[0]
        diffusion = get_sde_loss_fn(SDES["ve"], "dsm", perturbation="diffusion")(model, x0, key)[0]
        d = _draws(key, x0, "ve", "diffusion")
        ratio = d["std"] / _sde_formulas("ve", d["t"])[1]
        np.testing.assert_allclose(ratio, math.sqrt(2 * math.log(30.0)), rtol=RTOL)
        assert abs(float(diffusion - marginal)) > 1e-3 * abs(float(marginal))


def test_lcss_and_dsm_have_the_same_parameter_gradient():
    """LCSS Eq. 19 = DSM − ½‖z‖²/σ² per example (module docstring), so λσ²-weighted losses
    differ by mean ½‖z‖² and their gradients agree."""
    with jax.enable_x64(True):
        params, x0 = _setup(dtype=jnp.float64)
        key = jax.random.PRNGKey(6)

        def loss(objective, p):
            return get_sde_loss_fn(SDES["ve"], objective)(_time_conditional(p), x0, key)[0]

        (dsm, g_dsm), (lcss, g_lcss) = (jax.value_and_grad(functools.partial(loss, o))(params)
                                        for o in ("dsm", "lcss"))
        z = _draws(key, x0, "ve")["z"]
        np.testing.assert_allclose(dsm - lcss, jnp.mean(0.5 * jnp.sum(z**2, -1)), rtol=RTOL)
        for name in params:
            np.testing.assert_allclose(g_dsm[name], g_lcss[name], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- partial QC


@pytest.mark.parametrize("batch,groups,fraction,rows", [
    (12, 3, 0.5, [0, 1, 4, 5, 8, 9]),
    (10, 1, 0.3, [0, 1, 2]),  # 0.3 · 10 = 3.0000000000000004 in floating point: still 3 rows
    (8, 2, 0.1, [0, 4]),  # at least one row per block
])
@pytest.mark.parametrize("estimator", ["hutchinson", "exact"])
def test_partial_qc_is_the_qc_term_of_the_first_rows_of_every_block(batch, groups, fraction, rows,
                                                                    estimator):
    with jax.enable_x64(True):
        params, x0 = _setup(batch=batch, dtype=jnp.float64)
        model, key = _time_conditional(params), jax.random.PRNGKey(7)
        loss, aux = get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=0.4, qc_num_vectors=2,
                                    qc_estimator=estimator, qc_fraction=fraction,
                                    qc_groups=groups)(model, x0, key)
        d = _draws(key, x0, "ve")
        rows = np.array(rows)
        t, x_sel, std = d["t"][rows], d["x_tilde"][rows], d["std"][rows]
        jac = _jacobians(model, x_sel, t)
        if estimator == "hutchinson":
            v = jax.random.rademacher(d["kq"], (2, len(rows), 3), x0.dtype)
            qc = _hutchinson_qc(jac, v)
        else:
            qc = _asym(jac)
        qc_mean = jnp.mean(std**2 * qc)
        s = model(d["x_tilde"], d["t"])
        dsm = 0.5 * jnp.sum((s + d["z"] / d["std"][:, None]) ** 2, -1)  # on every row
        np.testing.assert_allclose(aux["qc"], qc_mean, rtol=RTOL)
        np.testing.assert_allclose(aux["objective"], jnp.mean(d["weight"] * dsm), rtol=RTOL)
        np.testing.assert_allclose(loss, jnp.mean(d["weight"] * dsm) + 0.4 * qc_mean, rtol=RTOL)


def test_qc_fraction_one_is_the_fused_loss():
    params, x0 = _setup(batch=8)
    model, key = _time_conditional(params), jax.random.PRNGKey(8)
    default = get_sde_loss_fn(SDES["ve"], "ssm", qc_weight=0.1)(model, x0, key)
    grouped = get_sde_loss_fn(SDES["ve"], "ssm", qc_weight=0.1, qc_fraction=1.0,
                              qc_groups=4)(model, x0, key)
    nearly_one = get_sde_loss_fn(SDES["ve"], "ssm", qc_weight=0.1, qc_fraction=0.9,
                                 qc_groups=4)(model, x0, key)  # ⌈0.9 · 2⌉ = 2: every row
    for other in (grouped, nearly_one):
        np.testing.assert_array_equal(other[0], default[0])


def test_partial_qc_is_unbiased_for_the_full_term():
    """Rows in random order (as batches are): the QC mean over half the rows of each of two
    blocks has the expectation of the QC mean over the batch."""
    params, x0 = _setup(batch=8)
    model = _time_conditional(params)
    full = get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=1.0)
    half = get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=1.0, qc_fraction=0.5, qc_groups=2)

    @jax.jit
    @jax.vmap
    def difference(key):
        k_order, k_loss = jax.random.split(key)
        shuffled = jax.random.permutation(k_order, x0)
        return half(model, shuffled, k_loss)[1]["qc"] - full(model, x0, k_loss)[1]["qc"]

    samples = difference(jax.random.split(jax.random.PRNGKey(0), 4000))
    assert float(np.std(samples)) > 1e-3  # the two estimates do differ key by key
    assert_unbiased(samples, 0.0)


def test_partial_qc_keeps_each_block_on_its_device():
    """qc_groups = 8 devices: the same loss as on one device, and no collective other than the
    all-reduce of the means (no all-gather, all-to-all or permute of the rows)."""
    params, _ = _setup()
    x0 = jax.random.normal(jax.random.PRNGKey(5), (32, 3))
    loss_fn = functools.partial(
        get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=0.1, qc_fraction=0.25, qc_groups=8),
        _time_conditional(params))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(x0, NamedSharding(mesh, PartitionSpec("data")))
    key = jax.random.PRNGKey(4)
    compiled = jax.jit(loss_fn).lower(sharded, key).compile()
    np.testing.assert_allclose(compiled(sharded, key)[0], jax.jit(loss_fn)(x0, key)[0], rtol=1e-6)
    hlo = compiled.as_text()
    for op in ("all-gather", "all-to-all", "collective-permute"):
        assert op not in hlo, op


# ---------------------------------------------------------------------------- QC properties


def test_fused_hutchinson_qc_is_unbiased_for_the_exact_term():
    params, x0 = _setup()
    model = _time_conditional(params)
    sde = SDES["ve"]
    hutchinson = get_sde_loss_fn(sde, "dsm", qc_weight=0.1, qc_num_vectors=2)
    exact = get_sde_loss_fn(sde, "dsm", qc_weight=0.1, qc_estimator="exact")
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)

    @jax.jit
    @jax.vmap
    def paired(key):  # same key -> same t and z; only the probes differ
        (_, h), (_, e) = hutchinson(model, x0, key), exact(model, x0, key)
        return h["qc"] - e["qc"], h["objective"] - e["objective"], e["qc"]

    qc_difference, objective_difference, exact_qc = paired(keys)
    assert_unbiased(qc_difference, 0.0)
    np.testing.assert_array_equal(objective_difference, 0.0)  # one forward pass for both
    assert float(jnp.mean(exact_qc)) > 0.1


@pytest.mark.parametrize("estimator", ["hutchinson", "exact"])
def test_qc_term_vanishes_for_a_conservative_model(estimator):
    params, x0 = _setup()
    model = lambda x, t: energy_score(params, x) / (1.0 + t)[:, None]  # noqa: E731
    _, aux = get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=1.0, qc_estimator=estimator)(
        model, x0, jax.random.PRNGKey(2))
    assert abs(float(aux["qc"])) < 1e-5


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_esm_target_is_the_score_of_the_perturbed_data(sde_name):
    sde = SDES[sde_name]
    anchor = jnp.array([[0.5, -1.0]])

    def exact_model(x, t):  # p_t = N(c·anchor, σ_t² I) for data concentrated at one point
        mean, std = sde.marginal_prob(jnp.broadcast_to(anchor, x.shape), t)
        return (mean - x) / std[:, None] ** 2

    loss, _ = get_sde_loss_fn(sde, "esm", data=anchor)(exact_model, jnp.repeat(anchor, 8, 0),
                                                       jax.random.PRNGKey(0))
    assert float(loss) < 1e-6


# ---------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("qc_weight,qc_fraction", [(0.0, 1.0), (0.1, 1.0), (0.1, 0.5)])
def test_every_objective_trains_under_jit_and_grad(objective, qc_weight, qc_fraction):
    params, x0 = _setup()
    loss_fn = get_sde_loss_fn(SDES["ve"], objective, qc_weight=qc_weight, qc_fraction=qc_fraction,
                              qc_groups=2, data=x0)

    @jax.jit
    def value_and_grad(p, key):
        return jax.value_and_grad(lambda q: loss_fn(_time_conditional(q), x0, key)[0])(p)

    value, grads = value_and_grad(params, jax.random.PRNGKey(0))
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree_util.tree_leaves(grads))


def test_loss_is_the_same_on_eight_devices():
    params, _ = _setup()
    x0 = jax.random.normal(jax.random.PRNGKey(5), (16, 3))
    loss_fn = functools.partial(get_sde_loss_fn(SDES["ve"], "dsm", qc_weight=0.1),
                                _time_conditional(params))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(x0, NamedSharding(mesh, PartitionSpec("data")))
    key = jax.random.PRNGKey(4)
    np.testing.assert_allclose(jax.jit(loss_fn)(sharded, key)[0], jax.jit(loss_fn)(x0, key)[0], rtol=1e-6)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs,message", [
    (dict(objective="sliced"), "objective must be one of"),
    (dict(objective="esm"), "needs data"),
    (dict(qc_weight=-1.0), "qc_weight must be >= 0"),
    (dict(qc_estimator="full"), "qc_estimator must be one of"),
    (dict(weighting="sigma"), "weighting must be one of"),
    (dict(perturbation="g"), r"perturbation must be one of \('marginal', 'diffusion'\)"),
    (dict(eps=0.0), "eps must lie in"),
    (dict(qc_num_vectors=0), "qc_num_vectors"),
    (dict(qc_fraction=0.0), r"qc_fraction must lie in \(0, 1\]; got 0.0"),
    (dict(qc_fraction=1.5), r"qc_fraction must lie in \(0, 1\]; got 1.5"),
    (dict(qc_groups=0), "qc_groups must be an integer >= 1"),
])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_sde_loss_fn(VESDE(), **kwargs)


def test_batch_not_divisible_by_qc_groups_raises_when_traced():
    params, x0 = _setup(batch=6)
    loss_fn = get_sde_loss_fn(VESDE(), "dsm", qc_weight=0.1, qc_fraction=0.5, qc_groups=4)
    with pytest.raises(ValueError, match=r"batch of 6 rows cannot be split into qc_groups=4"):
        jax.jit(loss_fn, static_argnums=0)(_time_conditional(params), x0, jax.random.PRNGKey(0))


def test_qc_from_linearization_matches_public_qc_loss():
    params, x0 = _setup()
    score = functools.partial(mlp_score, params)
    key = jax.random.PRNGKey(0)
    v = losses.draw_probes(key, (1, *x0.shape), "rademacher", x0.dtype)
    _, jvp_fn, vjp_fn = linearize_score(score, x0)
    np.testing.assert_allclose(losses.qc_from_linearization(jvp_fn, vjp_fn, v),
                               losses.qc_loss(score, x0, key), rtol=1e-6)


def test_draw_noise_draws_uniform_times_and_standard_normal_noise():
    """t ~ U(eps, T) and z ~ N(0, I) (their means and variances within 5 standard errors of
    n = 40,000 draws), the probe keys independent of each other and of the noise. Catches a
    time range or a noise scale off by any factor, and probe keys reused between objective and
    QC."""
    n, eps, horizon = 40_000, 0.1, 0.7
    t, z, kp, kq = draw_noise(jax.random.PRNGKey(0), jnp.zeros((n, 2)), eps, horizon)
    t, z = np.asarray(t, np.float64), np.asarray(z, np.float64)
    assert t.min() >= eps and t.max() <= horizon
    width = horizon - eps
    assert abs(t.mean() - (eps + horizon) / 2) < 5 * width / math.sqrt(12 * n)
    assert abs(t.var() - width**2 / 12) < 5 * width**2 * math.sqrt((1 / 80 - 1 / 144) / n)
    assert abs(z.mean()) < 5 / math.sqrt(2 * n) and abs(z.var() - 1) < 5 * math.sqrt(2 / (2 * n))
    probes = [np.asarray(jax.random.normal(k, (4,))) for k in (kp, kq)]
    assert not np.allclose(probes[0], probes[1])
