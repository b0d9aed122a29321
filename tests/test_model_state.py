"""The model state (a network's collections besides ``params``: the DLSM ResNet's BatchNorm
running statistics) through the train step, the evaluation step and the checkpoints, against
training- and evaluation-mode passes of the network written out by hand."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import optax
import pytest

from configs.default_toy import get_default_configs
from configs.dlsm import digits_base
from sgm_jax import checkpoints, parallel, train
from sgm_jax.classifier_experiment import build_classifier_experiment
from sgm_jax.experiment import build_experiment

BATCH = 8


@pytest.fixture(scope="module")
def classifier():
    """The digits "base" classifier (cross-entropy) at width 4: no frozen score model needed."""
    config = digits_base.get_config()
    model = config.classifier.model
    model.width, model.nf, model.temb_dim = 4, 4, 8
    config.classifier.training.batch_size = BATCH
    return build_classifier_experiment(config)


@pytest.fixture(scope="module")
def initial(classifier):
    """The classifier's state before its first step."""
    return jax.jit(lambda: checkpoints.init_state(classifier))()


def perturbed(experiment, x0, key):
    """x̃ and the network's conditioning log σ_t of the loss's draws (classifier_loss docstring:
    ``kt, kz = split(key)``)."""
    sde, eps = experiment.score.sde, digits_base.get_config().classifier.training.eps
    kt, kz = jax.random.split(key)
    t = jax.random.uniform(kt, (x0.shape[0],), x0.dtype, eps, sde.T)
    std = sde.marginal_std(t)
    return x0 + std[:, None, None, None] * jax.random.normal(kz, x0.shape, x0.dtype), jnp.log(std)


def training_pass(experiment, params, model_state, x, cond):
    return experiment.network.apply({**params, **model_state}, x, cond, train=True,
                                    mutable=["batch_stats"])


def assert_trees_close(a, b, **tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, **tol)


def test_train_steps_carry_the_running_statistics_and_evaluation_reads_them(classifier, initial):
    """Two train steps: each step's ``model_state`` is the running statistics of one
    training-mode pass at that step's x̃ from the previous step's state (catches a state that
    is not threaded, or restarted from the initial one, or updated at x0); the parameters
    follow the cross-entropy of that training-mode pass. The evaluation step's loss is the
    cross-entropy of the evaluation-mode pass with those running statistics (catches batch
    statistics or the initial statistics in evaluation)."""
    experiment, state = classifier, initial
    assert set(state.model_state) == {"batch_stats"}
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.standard_normal((BATCH, *experiment.event_shape)), jnp.float32),
             "label": jnp.arange(BATCH, dtype=jnp.int32) % experiment.num_classes}
    update = jax.jit(train.make_update_fn(experiment))

    @jax.jit
    def by_hand(state):
        """The new running statistics and the cross-entropy gradient's norm."""
        x, cond = perturbed(experiment, batch["x"], jax.random.fold_in(state.key, state.step))

        def ce(params):
            logits, new = training_pass(experiment, params, state.model_state, x, cond)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            return jnp.mean(ce), new

        grad, new = jax.grad(ce, has_aux=True)(state.params)
        return new, optax.tree.norm(grad)

    for step in range(2):
        expected, grad_norm = by_hand(state)
        state, metrics = update(state, batch, None)
        assert int(state.step) == step + 1
        assert_trees_close(state.model_state, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-4)

    mesh = parallel.data_mesh()
    key = jax.random.PRNGKey(7)
    eval_loss = train.make_eval_step(experiment, mesh)
    got = eval_loss(state.ema_params, state.model_state,
                    parallel.shard_batch(batch, mesh), key, None)
    x, cond = perturbed(experiment, batch["x"], key)
    logits = jax.jit(experiment.network.apply)(checkpoints.eval_variables(state), x, cond)
    expected = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert abs(float(eval_loss(state.ema_params, initial.model_state,
                               parallel.shard_batch(batch, mesh), key, None)) - float(got)) > 1e-6


def legacy_save(directory: str, state: checkpoints.TrainState) -> None:
    """A checkpoint of the layout before ``TrainState.model_state``: the other fields."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
              if f.name != "model_state"}
    writer = checkpoints.manager(directory)
    writer.save(int(state.step), args=ocp.args.StandardSave(fields))
    writer.wait_until_finished()
    writer.close()


def test_checkpoints_hold_the_model_state_and_earlier_ones_still_restore(classifier, initial,
                                                                         tmp_path):
    """A classifier checkpoint restores its running statistics. A checkpoint written before
    ``model_state`` existed restores for a score model (no model state: ``{}``), and is refused
    for the classifier, whose running statistics it does not hold."""
    mesh = parallel.data_mesh()
    state = initial.replace(model_state=jax.tree.map(lambda a: a + 0.5, initial.model_state))
    writer = checkpoints.manager(str(tmp_path / "classifier"))
    writer.save(3, args=ocp.args.StandardSave(state))
    writer.wait_until_finished()
    writer.close()
    restored = checkpoints.restore_step(str(tmp_path / "classifier"), -1, classifier, mesh)
    assert_trees_close(restored.model_state, state.model_state, rtol=0, atol=0)

    score = build_experiment(get_default_configs())
    state = jax.jit(lambda: checkpoints.init_state(score))()
    assert state.model_state == {}
    legacy_save(str(tmp_path / "score"), state)
    restored = checkpoints.restore_step(str(tmp_path / "score"), -1, score, mesh)
    assert restored.model_state == {}
    assert_trees_close(restored.params, state.params, rtol=0, atol=0)

    legacy_save(str(tmp_path / "legacy_classifier"), initial)
    with pytest.raises(ValueError, match="does not fit this experiment"):
        checkpoints.restore_step(str(tmp_path / "legacy_classifier"), -1, classifier, mesh)
