"""The classifier objectives (DLSM poster Eqs. 4–7), the likelihood score and the posterior
score of guided sampling, each against a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgm_jax import classifier_loss, guidance, losses, models
from sgm_jax.sde import VESDE, VPSDE

D, C, B = 3, 4, 6


def _linear_logits(w, b):
    """f(x, t) = x W + b (1 + t): a classifier whose likelihood score is known in closed form."""
    return lambda x, t: x @ w + b * (1.0 + t[:, None])


def _score(a):
    return lambda x, t: -x * a / (1.0 + t[:, None])


@pytest.fixture(scope="module")
def problem():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    return dict(w=jax.random.normal(keys[0], (D, C)), b=jax.random.normal(keys[1], (C,)),
                x0=jax.random.normal(keys[2], (B, D)),
                y=jax.random.randint(keys[3], (B,), 0, C), key=keys[4])


def _softmax_np(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_class_log_likelihood_grad_of_a_linear_classifier(problem):
    """∇ₓ log softmax(xW + b)_y = W[:, y] − Σ_k p_k W[:, k]."""
    w, b, x, y = (np.asarray(problem[k], np.float64) for k in ("w", "b", "x0", "y"))
    y = y.astype(int)
    grad, log_probs = losses.class_log_likelihood_grad(lambda u: u @ problem["w"] + problem["b"],
                                                       problem["x0"], problem["y"])
    p = _softmax_np(x @ w + b)
    expected = w[:, y].T - p @ w.T
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_probs, np.log(p), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sde", [VESDE(0.01, 5.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
@pytest.mark.parametrize("objective", classifier_loss.OBJECTIVES)
@pytest.mark.parametrize("weighting,reduce_mean", [("sigma2", False), ("sigma4", True),
                                                   ("one", True)])
def test_objectives_equal_a_hand_computation(problem, sde, objective, weighting, reduce_mean):
    ce_weight, eps, a = 0.3, 1e-3, 0.7
    loss_fn = classifier_loss.get_classifier_loss_fn(
        sde, objective, ce_weight=ce_weight, dlsm_weighting=weighting, reduce_mean=reduce_mean,
        eps=eps)
    loss, aux = loss_fn(_linear_logits(problem["w"], problem["b"]), _score(a), problem["x0"],
                        problem["y"], problem["key"])
    # the same draws by hand (module docstring of classifier_loss: kt, kz = split(key))
    kt, kz = jax.random.split(problem["key"])
    t = np.asarray(jax.random.uniform(kt, (B,), jnp.float32, eps, sde.T), np.float64)
    z = np.asarray(jax.random.normal(kz, (B, D)), np.float64)
    x0 = np.asarray(problem["x0"], np.float64)
    c = np.asarray(sde.mean_coeff(jnp.asarray(t)), np.float64)
    std = np.asarray(sde.marginal_std(jnp.asarray(t)), np.float64)
    x = c[:, None] * x0 + std[:, None] * z
    w, b, y = np.asarray(problem["w"], np.float64), np.asarray(problem["b"], np.float64), \
        np.asarray(problem["y"])
    p = _softmax_np(x @ w + b * (1 + t[:, None]))
    ce = -np.log(p[np.arange(B), y])
    g = w[:, y].T - p @ w.T
    s = -x * a / (1 + t[:, None])
    lam = {"sigma2": std**2, "sigma4": std**4, "one": np.ones(B)}[weighting]
    dlsm = 0.5 * np.sum((g + s + z / std[:, None]) ** 2, axis=1) / (D if reduce_mean else 1)
    dlsm_mean = np.mean(lam * dlsm) if objective != "ce" else 0.0
    expected = {"ce": ce.mean(), "dlsm": dlsm_mean,
                "total": dlsm_mean + ce_weight * ce.mean()}[objective]
    np.testing.assert_allclose(loss, expected, rtol=2e-5)
    np.testing.assert_allclose(aux["ce"], ce.mean(), rtol=2e-5)
    np.testing.assert_allclose(aux["dlsm"], dlsm_mean, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(aux["accuracy"], np.mean(p.argmax(1) == y))


def test_the_score_model_gets_no_gradient_and_the_classifier_does(problem):
    sde = VESDE(0.01, 5.0)
    loss_fn = classifier_loss.get_classifier_loss_fn(sde, "total")

    def loss(w, a):
        return loss_fn(_linear_logits(w, problem["b"]), _score(a), problem["x0"], problem["y"],
                       problem["key"])[0]

    grad_w, grad_a = jax.grad(loss, argnums=(0, 1))(problem["w"], 0.7)
    assert float(grad_a) == 0.0
    assert float(jnp.linalg.norm(grad_w)) > 0


def test_the_dlsm_term_is_the_per_example_dlsm_loss(problem):
    """With VE (c = 1), σ² weighting and a fixed σ, the SDE-level DLSM term is the mean of
    ``losses.dlsm_loss`` (Eq. 6) weighted by σ² at the same x̃."""
    sigma = 0.8
    sde = VESDE(sigma, sigma * (1 + 1e-6))  # σ_t ≈ σ at every t
    loss_fn = classifier_loss.get_classifier_loss_fn(sde, "dlsm", dlsm_weighting="one")
    logits, score = _linear_logits(problem["w"], problem["b"]), _score(0.7)
    _, kz = jax.random.split(problem["key"])
    kt, _ = jax.random.split(problem["key"])
    t = jax.random.uniform(kt, (B,), jnp.float32, 1e-5, 1.0)
    per_example = losses.dlsm_loss(lambda u: logits(u, t), lambda u: score(u, t), problem["x0"],
                                   problem["y"], kz, sde.marginal_std(t))
    np.testing.assert_allclose(loss_fn(logits, score, problem["x0"], problem["y"],
                                       problem["key"])[0], jnp.mean(per_example), rtol=1e-4)


def test_posterior_score_is_score_plus_scaled_likelihood_score(problem):
    """For linear logits f = xW + b(1 + t) the likelihood score is closed-form,
    ∇ₓ log softmax(f)_y = W[:, y] − W softmax(f), written out in NumPy here (a sign, a missing
    softmax term or a scale applied twice fails)."""
    logits, score = _linear_logits(problem["w"], problem["b"]), _score(0.7)
    t = jnp.full((B,), 0.3)
    posterior = guidance.posterior_score_model(score, logits, problem["y"], scale=2.5)
    w = np.asarray(problem["w"], np.float64)
    p = _softmax_np(np.asarray(logits(problem["x0"], t), np.float64))
    g = w.T[np.asarray(problem["y"])] - p @ w.T
    np.testing.assert_allclose(posterior(problem["x0"], t), score(problem["x0"], t) + 2.5 * g,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,scale,objective,match", [
    ("base", 2.0, "ce", "must be 1"), ("scaling", 1.0, "ce", "must be > 1"),
    ("dlsm", 1.0, "ce", "needs a classifier trained with"),
    ("base", 1.0, "total", "needs a classifier trained with"),
    ("guided", 1.0, "ce", "guidance.method must be one of")])
def test_guidance_checks(method, scale, objective, match):
    with pytest.raises(ValueError, match=match):
        guidance.check_guidance(method, scale, objective)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="objective"):
        classifier_loss.get_classifier_loss_fn(VESDE(0.01, 5.0), "dsm")
    with pytest.raises(ValueError, match="dlsm_weighting"):
        classifier_loss.get_classifier_loss_fn(VESDE(0.01, 5.0), dlsm_weighting="sigma3")
    with pytest.raises(ValueError, match="ce_weight"):
        classifier_loss.get_classifier_loss_fn(VESDE(0.01, 5.0), ce_weight=-1.0)


@pytest.mark.parametrize("objective", ["ce", "total"])  # the two paths ("dlsm" is total's)
def test_a_stateful_classifier_returns_the_state_of_its_one_forward_pass(objective):
    """``has_state=True`` with a BatchNorm ResNet in training mode: the loss and aux are those
    of the same network's logits without the state, and the state is that of one training-mode
    pass at x̃ (t, z drawn as the module docstring says), as the official step updates the
    running statistics once. Catches the state of a pass at x0 instead of x̃, of a second pass,
    or the initial state returned unchanged."""
    sde = VESDE(0.01, 5.0)
    net = models.ConditionalResNet(width=4, nf=4, temb_dim=8, num_classes=C)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (B, 8, 8, 3))
    y = jnp.arange(B) % C
    variables = net.init(jax.random.PRNGKey(2), x0, jnp.zeros(B))
    params, state = models.split_variables(variables)

    def stateful(x, t):
        return net.apply({**params, **state}, x, jnp.log(sde.marginal_std(t)), train=True,
                         mutable=["batch_stats"])

    key = jax.random.PRNGKey(3)
    loss_fn = classifier_loss.get_classifier_loss_fn(sde, objective, dlsm_weighting="one")
    score = lambda x, t: -0.7 * x  # noqa: E731
    loss, (aux, new) = jax.jit(lambda k: loss_fn(stateful, score, x0, y, k, has_state=True))(key)
    plain_loss, plain_aux = jax.jit(lambda k: loss_fn(lambda x, t: stateful(x, t)[0], score, x0,
                                                      y, k))(key)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for name, value in plain_aux.items():
        np.testing.assert_allclose(aux[name], value, rtol=1e-6, atol=1e-7)
    kt, kz = jax.random.split(key)
    t = jax.random.uniform(kt, (B,), jnp.float32, 1e-5, sde.T)
    x_tilde = x0 + sde.marginal_std(t)[:, None, None, None] * jax.random.normal(kz, x0.shape)
    expected = stateful(x_tilde, t)[1]
    for got, want in zip(jax.tree.leaves(new), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert jax.tree.structure(new) == jax.tree.structure(state)
