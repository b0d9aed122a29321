"""The experiment builder: what the network sees and how its output becomes a score, for the
image configs (score_sde's NCSN++ VE and DDPM++ VP), at tiny width on mock data."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs.ve import cifar10_ncsnpp_continuous, cifar10_c
from configs.vp import cifar10_ddpmpp_continuous
from sgm_jax.experiment import build_experiment
from sgm_jax.models import CONDITIONS, conditioning_fn
from sgm_jax.sde import VESDE, VPSDE

TINY = {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,)}
# Compiled without LLVM optimisation: these tiny networks run once, their compilation dominates.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _experiment(module):
    config = module.get_config()
    config.model.update(TINY)
    config.data.image_size = 8
    config.training.batch_size = 8
    with tfds.testing.mock_data(num_examples=16):
        return build_experiment(config)


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE()], ids=["ve", "vp"])
def test_conditioning_functions(sde):
    t = jnp.array([1e-5, 0.3, 1.0])
    sigma = np.asarray(sde.marginal_std(t))
    expected = {"t": np.asarray(t), "sigma": sigma, "log_sigma": np.log(sigma),
                "999t": 999.0 * np.asarray(t)}
    assert set(expected) == set(CONDITIONS)
    for condition, value in expected.items():
        np.testing.assert_allclose(conditioning_fn(condition, sde.marginal_std)(t), value, rtol=1e-6)


@pytest.mark.parametrize("module, condition, sign", [
    (cifar10_ncsnpp_continuous, "log_sigma", 1.0),  # VE NCSN++: s = f(x, log σ_t)/σ_t
    (cifar10_ddpmpp_continuous, "999t", -1.0),  # VP DDPM++: s = −f(x, 999 t)/σ_t
])
def test_image_score_models_see_their_conditioning(module, condition, sign):
    experiment = _experiment(module)
    assert experiment.condition == condition
    params = fast_jit(experiment.init_params)(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3))
    t = jnp.array([0.1, 0.7])
    sigma = experiment.sde.marginal_std(t)
    cond = jnp.log(sigma) if condition == "log_sigma" else 999.0 * t
    f, s = fast_jit(lambda p: (experiment.network.apply(p, x, cond),
                               experiment.score_model(p)(x, t)))(params)
    np.testing.assert_allclose(s, sign * f / sigma[:, None, None, None], rtol=1e-5, atol=1e-6)


def test_energy_score_is_the_gradient_of_the_official_energy():
    """C-NCSN++: s = ∇ₓ h with h = −½‖f(x, log σ_t)‖²/σ_t (official_code_facts §1a)."""
    experiment = _experiment(cifar10_c)
    params = fast_jit(experiment.init_params)(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3))
    t = jnp.array([0.2, 0.9])
    sigma = experiment.sde.marginal_std(t)

    def h(p, y):
        f = experiment.network.apply(p, y, jnp.log(sigma))
        return jnp.sum(-0.5 * jnp.sum(f**2, axis=(1, 2, 3)) / sigma)

    s, grad = fast_jit(lambda p: (experiment.score_model(p)(x, t), jax.grad(h, 1)(p, x)))(params)
    np.testing.assert_allclose(s, grad, rtol=1e-5, atol=1e-6)
