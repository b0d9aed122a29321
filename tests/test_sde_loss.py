"""The SDE-level loss factory: weights, the fused QC term, and the perturbed Parzen target."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from exact_reference import assert_unbiased, energy_score, init_mlp, mlp_score
from sgm_jax import losses
from sgm_jax._jacobian import linearize_score
from sgm_jax.sde import VESDE, VPSDE, subVPSDE
from sgm_jax.sde_loss import OBJECTIVES, get_sde_loss_fn


def _time_conditional(params):
    """s(x, t) = mlp(x) · (1 + t): a non-conservative field that depends on t."""
    return lambda x, t: mlp_score(params, x) * (1.0 + t)[:, None]


def _setup(dim=3, batch=6, seed=0):
    params = init_mlp(jax.random.PRNGKey(seed), (dim,), scale=1.5)
    x0 = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, dim))
    return params, x0


@pytest.mark.parametrize("sde", [VESDE(0.1, 3.0), VPSDE(), subVPSDE()], ids=["ve", "vp", "subvp"])
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
def test_dsm_loss_uses_the_marginal_and_the_documented_weight(sde, weighting):
    params, x0 = _setup()
    model = _time_conditional(params)
    key = jax.random.PRNGKey(3)
    loss, aux = get_sde_loss_fn(sde, "dsm", weighting=weighting)(model, x0, key)
    # the same draws, by hand: t ~ U(eps, 1), x̃ = c x0 + σ z, ½‖s + z/σ‖² · λ(t)
    kt, kz, _, _ = jax.random.split(key, 4)
    t = jax.random.uniform(kt, (6,), minval=1e-5, maxval=1.0)
    mean, std = sde.marginal_prob(x0, t)
    z = jax.random.normal(kz, x0.shape)
    per_example = 0.5 * jnp.sum((model(mean + std[:, None] * z, t) + z / std[:, None]) ** 2, axis=1)
    weight = std**2 if weighting == "sigma2" else sde.sde(x0, t)[1] ** 2
    np.testing.assert_allclose(loss, jnp.mean(weight * per_example), rtol=1e-5)
    assert float(aux["qc"]) == 0.0 and float(aux["objective"]) == float(loss)


def test_fused_hutchinson_qc_is_unbiased_for_the_exact_term():
    params, x0 = _setup()
    model = _time_conditional(params)
    sde = VESDE(0.1, 3.0)
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
    np.testing.assert_array_equal(objective_difference, 0.0)  # the objective shares the forward pass
    assert float(jnp.mean(exact_qc)) > 0.1


def test_total_adds_qc_weight_times_sigma_squared_qc():
    params, x0 = _setup()
    sde = VESDE(0.1, 3.0)
    loss, aux = get_sde_loss_fn(sde, "lcss", qc_weight=0.25, qc_estimator="exact")(
        _time_conditional(params), x0, jax.random.PRNGKey(1))
    np.testing.assert_allclose(loss, aux["objective"] + 0.25 * aux["qc"], rtol=1e-6)


@pytest.mark.parametrize("estimator", ["hutchinson", "exact"])
def test_qc_term_vanishes_for_a_conservative_model(estimator):
    params, x0 = _setup()
    model = lambda x, t: energy_score(params, x) / (1.0 + t)[:, None]  # noqa: E731
    _, aux = get_sde_loss_fn(VESDE(0.1, 3.0), "dsm", qc_weight=1.0, qc_estimator=estimator)(
        model, x0, jax.random.PRNGKey(2))
    assert abs(float(aux["qc"])) < 1e-5


@pytest.mark.parametrize("sde", [VESDE(0.1, 3.0), VPSDE()], ids=["ve", "vp"])
def test_esm_target_is_the_score_of_the_perturbed_data(sde):
    anchor = jnp.array([[0.5, -1.0]])

    def exact_model(x, t):  # p_t = N(c·anchor, σ_t² I) for data concentrated at one point
        mean, std = sde.marginal_prob(jnp.broadcast_to(anchor, x.shape), t)
        return (mean - x) / std[:, None] ** 2

    loss, _ = get_sde_loss_fn(sde, "esm", data=anchor)(exact_model, jnp.repeat(anchor, 8, 0),
                                                       jax.random.PRNGKey(0))
    assert float(loss) < 1e-6


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("qc_weight", [0.0, 0.1])
def test_every_objective_trains_under_jit_and_grad(objective, qc_weight):
    params, x0 = _setup()
    loss_fn = get_sde_loss_fn(VESDE(0.1, 3.0), objective, qc_weight=qc_weight, data=x0)

    @jax.jit
    def value_and_grad(p, key):
        return jax.value_and_grad(lambda q: loss_fn(_time_conditional(q), x0, key)[0])(p)

    value, grads = value_and_grad(params, jax.random.PRNGKey(0))
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree_util.tree_leaves(grads))


def test_loss_is_the_same_on_eight_devices():
    params, _ = _setup()
    x0 = jax.random.normal(jax.random.PRNGKey(5), (16, 3))
    loss_fn = functools.partial(get_sde_loss_fn(VESDE(0.1, 3.0), "dsm", qc_weight=0.1),
                                _time_conditional(params))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(x0, NamedSharding(mesh, PartitionSpec("data")))
    key = jax.random.PRNGKey(4)
    np.testing.assert_allclose(jax.jit(loss_fn)(sharded, key)[0], jax.jit(loss_fn)(x0, key)[0], rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(objective="sliced"), "objective must be one of"),
    (dict(objective="esm"), "needs data"),
    (dict(qc_weight=-1.0), "qc_weight must be >= 0"),
    (dict(qc_estimator="full"), "qc_estimator must be one of"),
    (dict(weighting="sigma"), "weighting must be one of"),
    (dict(eps=0.0), "eps must lie in"),
    (dict(qc_num_vectors=0), "qc_num_vectors"),
])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_sde_loss_fn(VESDE(), **kwargs)


def test_qc_from_linearization_matches_public_qc_loss():
    params, x0 = _setup()
    score = functools.partial(mlp_score, params)
    key = jax.random.PRNGKey(0)
    v = losses.draw_probes(key, (1, *x0.shape), "rademacher", x0.dtype)
    _, jvp_fn, vjp_fn = linearize_score(score, x0)
    np.testing.assert_allclose(losses.qc_from_linearization(jvp_fn, vjp_fn, v),
                               losses.qc_loss(score, x0, key), rtol=1e-6)
