"""sgm_jax.metrics.score_error and average_over_levels against closed forms and manual loops.

Inputs come from NumPy (no per-shape random-kernel compilations) and one shared 2-D network, so
the file spends its time in a handful of jitted metric calls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exact_reference import init_mlp, mlp_score
from sgm_jax.losses import esm_loss, parzen_score
from sgm_jax.metrics import asym, average_over_levels, nasym, score_error


def _normal(seed, shape, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _model():
    """A generic, non-conservative 2-D field s(x) = W2 tanh(W1ᵀx + b1) + b2."""
    return functools.partial(mlp_score, init_mlp(jax.random.PRNGKey(5), (2,)))


def _zero_score(x):
    return jnp.zeros_like(x)


def test_oracle_has_zero_error():
    data, x = _normal(0, (37, 2)), _normal(1, (8, 2), 2.0)
    oracle = functools.partial(parzen_score, data=data, sigma=0.7, chunk_size=10)
    err = jax.jit(lambda x: score_error(oracle, x, data, 0.7, chunk_size=10))(x)
    assert err.shape == (8,)
    np.testing.assert_array_equal(err, 0.0)


@pytest.mark.parametrize("event,sigma", [((2,), 0.5), ((2, 3, 2), [0.3, 0.5, 1.0, 2.0, 4.0])])
def test_single_point_dataset_closed_form(event, sigma):
    # p_σ = N(x0, σ²I): ∇log p_σ(x) = (x0 − x)/σ², so the error of s = 0 is ½‖x0 − x‖²/σ⁴.
    x0, x = _normal(2, (1, *event)), _normal(3, (5, *event))
    sigma = np.asarray(sigma, np.float32)
    sq = np.sum((x0 - x).reshape(5, -1).astype(np.float64) ** 2, axis=1)
    got = jax.jit(lambda x, s: score_error(_zero_score, x, x0, s))(x, sigma)
    np.testing.assert_allclose(got, 0.5 * sq / sigma.astype(np.float64) ** 4, rtol=1e-5)


def test_two_point_dataset_closed_form_for_a_network():
    # Data {a, −a}: ∇log p_σ(x) = (a·tanh(aᵀx/σ²) − x)/σ² exactly, for any model s.
    a = np.array([[1.5, -0.5]])
    data = np.concatenate([a, -a]).astype(np.float32)
    x = _normal(4, (16, 2), 2.0)
    model = _model()
    err = jax.jit(lambda s: score_error(model, x, data, s))
    s_np, x64 = np.asarray(model(x), np.float64), x.astype(np.float64)
    for sigma in (0.4, 1.0, 3.0):
        truth = (a * np.tanh(x64 @ a[0] / sigma**2)[:, None] - x64) / sigma**2
        want = 0.5 * np.sum((s_np - truth) ** 2, axis=1)
        np.testing.assert_allclose(err(sigma), want, rtol=1e-5, atol=1e-6)


def test_equals_esm_loss_with_any_chunking():
    data, x = _normal(6, (50, 2)), _normal(7, (16, 2), 2.0)
    model = _model()
    got = jax.jit(lambda x, s: score_error(model, x, data, s, chunk_size=7))(x, 0.8)
    want = jax.jit(lambda x, s: esm_loss(model, x, data, s))(x, 0.8)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("args,match", [
    (dict(x=np.ones(3, np.float32)), "x"),
    (dict(data=np.ones((4, 3), np.float32)), "data"),
    (dict(sigma=-1.0), "sigma"),
    (dict(sigma=np.ones(3, np.float32)), "sigma"),
    (dict(score_fn=lambda x: x[:, :1]), "score_fn"),
])
def test_score_error_bad_arguments(args, match):
    kwargs = dict(score_fn=_zero_score, x=np.ones((5, 2), np.float32),
                  data=np.zeros((4, 2), np.float32), sigma=1.0)
    kwargs.update(args)
    with pytest.raises(ValueError, match=match):
        score_error(**kwargs)


# ---------------------------------------------------------------------------- levels


def test_average_over_levels_matches_manual_loop_on_shared_points():
    """Score error, Asym and NAsym of a time-conditional field at shared x̃ = x + σ_t z."""
    x0, data, z = _normal(9, (16, 2)), _normal(10, (50, 2)), _normal(11, (16, 2))
    model = _model()
    levels = [0.1, 0.4, 0.7, 1.0]

    def sigma_of(t):
        return 0.1 * (3.0 / 0.1) ** t

    @jax.jit
    def at_level(t):
        xt = x0 + sigma_of(t) * z
        fn = lambda y: model(y) / sigma_of(t) + t * y  # noqa: E731
        return {"score_error": score_error(fn, xt, data, sigma_of(t)),
                "asym": asym(fn, xt), "nasym": nasym(fn, xt)}

    per_level, mean = average_over_levels(at_level, levels)
    outputs = [at_level(jnp.asarray(t)) for t in levels]
    for name in ("score_error", "asym", "nasym"):
        manual = [float(np.mean(out[name])) for out in outputs]
        assert per_level[name].shape == (4,) and mean[name].shape == ()
        np.testing.assert_allclose(per_level[name], manual, rtol=1e-6)
        np.testing.assert_allclose(mean[name], np.mean(manual), rtol=1e-6)
    assert float(mean["asym"]) > 0.0  # the field is not conservative


def test_average_over_levels_single_array_and_keys():
    x0 = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    key = jax.random.PRNGKey(13)
    levels = [0.5, 1.0, 2.0]

    @jax.jit
    def metric(level, k):
        return jnp.sum((x0 + level * jax.random.normal(k, x0.shape)) ** 2, axis=1)

    per_level, mean = average_over_levels(metric, np.asarray(levels), key=key)
    manual = [float(jnp.mean(metric(jnp.float32(lv), jax.random.fold_in(key, i))))
              for i, lv in enumerate(levels)]
    np.testing.assert_allclose(per_level, manual, rtol=1e-6)
    np.testing.assert_allclose(mean, np.mean(manual), rtol=1e-6)


@pytest.mark.parametrize("metric_fn,levels,match", [
    (None, [1.0], "metric_fn"),
    (lambda t: np.ones(3), [], "levels"),
    (lambda t: np.ones(3), [[1.0, 2.0]], "levels"),
    (lambda t: {"a": np.ones(2)} if t < 1.5 else {"b": np.ones(2)}, [1.0, 2.0], "structure"),
    (lambda t: None, [1.0], "metric_fn"),
])
def test_average_over_levels_bad_arguments(metric_fn, levels, match):
    with pytest.raises(ValueError, match=match):
        average_over_levels(metric_fn, levels)
