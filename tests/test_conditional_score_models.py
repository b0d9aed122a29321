"""The posterior-score building blocks of ``sgm_jax.evaluate.conditional_toy`` for posterior scores that do
not come from a classifier (one score model per class, the oracle): ``oracle_score_model``,
``score_fields`` and ``draw_samples``, and ``model_fields`` / ``class_samples`` built on them."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.dlsm import moons_scaling
from sgm_jax import guidance, sampling
from sgm_jax.classifier_experiment import build_classifier_experiment
from sgm_jax.evaluate import conditional_toy as conditional_eval
from sgm_jax.sde import VESDE, VPSDE


def _parzen_reference(x, centres, c, std):
    """∇ₓ log Σ_i N(x; c x_i, σ² I) in float64, one (c, σ) per row of x."""
    x, centres = np.asarray(x, np.float64), np.asarray(centres, np.float64)
    c, std = np.asarray(c, np.float64)[:, None, None], np.asarray(std, np.float64)[:, None]
    d = x[:, None] - c * centres[None]
    logw = -np.sum(d**2, axis=2) / (2 * std**2)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return -np.sum(w[..., None] * d, axis=1) / std**2


@pytest.mark.parametrize("sde", [VESDE(1e-3, 10.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
def test_oracle_score_model_is_the_score_of_the_perturbed_points(sde):
    data = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (40, 2))
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    t = jnp.asarray([0.05, 0.2, 0.4, 0.6, 0.8, 1.0])  # one time per row
    got = conditional_eval.oracle_score_model(sde, data)(x, t)
    expected = _parzen_reference(x, data, sde.mean_coeff(t), sde.marginal_std(t))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-5 * np.abs(expected).max())


def test_score_fields_of_two_score_models():
    points = jnp.asarray([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])
    full = lambda x, t: -x / (1.0 + t[:, None])  # noqa: E731
    posterior = lambda x, t: (jnp.asarray([2.0, -1.0]) - x) * t[:, None]  # noqa: E731
    fields = conditional_eval.score_fields(full, posterior, points, 0.5)
    np.testing.assert_allclose(fields["full"], -np.asarray(points) / 1.5)
    np.testing.assert_allclose(fields["posterior"], (np.asarray([2.0, -1.0]) - points) * 0.5)
    np.testing.assert_allclose(fields["likelihood"], fields["posterior"] - fields["full"])
    # an oracle posterior against itself: every error is 0
    oracle = {name: fields[name] for name in conditional_eval.FIELDS}
    assert set(conditional_eval.field_errors(fields, oracle).values()) == {0.0}


def test_draw_samples_batches_keys_truncation_and_nfe():
    def sampler(score_model, shape, key):
        x = jax.random.normal(key, shape)
        return x + score_model(x, jnp.ones(shape[0])), 17

    score_model = lambda x, t: 2.0 * x  # noqa: E731
    key = jax.random.PRNGKey(3)
    samples, nfe = conditional_eval.draw_samples(sampler, score_model, (2,), 10, 4, key)
    expected = np.concatenate([3.0 * np.asarray(jax.random.normal(jax.random.fold_in(key, j),
                                                                  (4, 2))) for j in range(3)])
    assert nfe == 17 and samples.shape == (10, 2)
    np.testing.assert_allclose(samples, expected[:10], rtol=1e-6)
    one, _ = conditional_eval.draw_samples(sampler, score_model, (2,), 3, 8, key)  # batch 3
    np.testing.assert_allclose(one, 3.0 * np.asarray(jax.random.normal(
        jax.random.fold_in(key, 0), (3, 2))), rtol=1e-6)


@pytest.fixture(scope="module")
def guided():
    config = moons_scaling.get_config()
    config.data.num_points = 400
    config.training.batch_size = config.classifier.training.batch_size = 200
    config.sde.num_scales = 5
    config.eval.batch_size = 6
    experiment = build_classifier_experiment(config)
    score_params = experiment.score.init_params(jax.random.PRNGKey(0))
    params = experiment.init_params(jax.random.PRNGKey(1))
    return experiment, score_params, params


def test_model_fields_are_the_guided_score_and_its_scaled_classifier_gradient(guided):
    experiment, score_params, params = guided
    points = jnp.asarray(conditional_eval.grid_points(3, (-20.0, 20.0, -10.0, 10.0)))
    t = 0.3
    fields = conditional_eval.model_fields(experiment, score_params, params, points, t, 1)
    times = jnp.full((9,), t)
    logits = experiment.logits_model(params)
    grad = jax.grad(lambda x: jnp.sum(jax.nn.log_softmax(logits(x, times))[:, 1]))(points)
    np.testing.assert_allclose(fields["full"],
                               experiment.score.score_model(score_params)(points, times))
    # "likelihood" is posterior − full: rounding of a few float32 ulps of |full| and |posterior|
    scale = max(np.abs(fields["full"]).max(), np.abs(fields["posterior"]).max())
    np.testing.assert_allclose(fields["likelihood"], experiment.scale * grad, rtol=1e-4,
                               atol=4 * np.finfo(np.float32).eps * scale)
    assert experiment.scale == 10.0


def test_class_samples_draw_the_class_of_their_label():
    """Data ½N(μ₀, I) + ½N(μ₁, I) in 2-D under a VE SDE: the exact unconditional score and the
    exact classifier log p(y | x, t) make the guided score (α = 1) the exact score of class y, so
    the probability-flow ODE carries the prior to N(μ_y, I) up to the prior's mismatch (the
    exact p_T is N(μ_y, (1 + σ_max²) I), not N(0, σ_max² I): a mean offset of
    ‖μ_y‖ / √(1 + σ_max²) = 0.1) and the solver's tolerance (1e-5). The mean of 300 samples is
    within 5 standard errors (5/√300 = 0.29) plus that offset of μ_y; a wrong label, a label
    swapped between batches or a batch drawn twice with one key fails it."""
    sde = VESDE(0.01, 30.0)
    means = jnp.array([[-3.0, 0.0], [0.0, 3.0]])

    def logits(x, t):  # log N(x; μ_y, (1 + σ_t²) I) up to a constant shared by the classes
        var = 1.0 + sde.marginal_std(t)[:, None] ** 2
        return -jnp.sum((x[:, None] - means) ** 2, -1) / (2 * var)

    def full_score(x, t):
        var = 1.0 + sde.marginal_std(t)[:, None] ** 2
        weights = jax.nn.softmax(logits(x, t), -1)
        return jnp.einsum("bk,bkd->bd", weights, (means - x[:, None]) / var[:, :, None])

    experiment = types.SimpleNamespace(
        score=types.SimpleNamespace(sampler=sampling.get_sampler(
            "ode", sde=sde, eps=1e-3, rtol=1e-5, atol=1e-5)),
        evaluation=types.SimpleNamespace(batch_size=64), event_shape=(2,),
        posterior_score_model=lambda score_params, params, labels: guidance.posterior_score_model(
            full_score, logits, labels, 1.0))
    for label in (0, 1):
        got, nfe = conditional_eval.class_samples(experiment, None, None, label, 300,
                                                  jax.random.PRNGKey(label))
        assert got.shape == (300, 2) and nfe > 0
        assert len(np.unique(got[:, 0])) == 300  # every batch its own draw
        bound = 5 / np.sqrt(300) + np.linalg.norm(means[label]) / np.sqrt(1 + 30.0**2)
        np.testing.assert_array_less(np.abs(got.mean(0) - np.asarray(means[label])), bound)
