"""Classification accuracy score (CAS; Ravuri & Vinyals, 2019), the "CAS" row of DLSM poster
Table 1.

A classifier is trained *only* on generated (sample, label) pairs — the label being the class the
sample was generated for — and its top-1 accuracy on the real test split is the score. It is high
only when the samples of every class carry that class's information in a form that generalises
to real data, so it penalises both wrong-class samples and a lack of diversity.

The official DLSM code (``run_lib_evaluation_cas.py``) trains a torchvision ResNet-50 on the
generated CIFAR samples with Adam (lr 2e-4, β = (0.9, 0.999), ε = 1e-8, no weight decay, no
warm-up, no clipping), batch 150, cross-entropy, and measures the accuracy on the test split every
200 steps. Here the network is the caller's (the same one, with the same settings, for every
method compared), trained for ``steps`` minibatch steps with that optimiser; minibatches are drawn
uniformly with replacement (the official loader shuffles epoch by epoch), and the accuracy is that
of the final parameters.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgm_jax._validation import check_class_labels, check_positive, check_positive_int
from sgm_jax.models.registry import split_variables

Array = jax.Array

__all__ = ["cas"]


def _check_inputs(name: str, inputs) -> Array:
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2 or inputs.shape[0] < 1:
        raise ValueError(f"{name} must have shape [N, *event] with N >= 1 (images [N, H, W, C] or "
                         f"points [N, D]); got shape {inputs.shape}.")
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise ValueError(f"{name} must be model-space floating-point inputs (the space the "
                         f"generator samples in), not raw {inputs.dtype} values.")
    if not bool(jnp.all(jnp.isfinite(inputs))):
        raise ValueError(f"{name} must hold only finite values; it contains NaN or inf.")
    return inputs


def _logits(network: nn.Module, variables, x: Array) -> Array:
    """Evaluation mode (a BatchNorm network's running statistics)."""
    return network.apply(variables, x, jnp.zeros(x.shape[:1], x.dtype))


def _training_logits(network: nn.Module, params, model_state, x: Array) -> tuple[Array, dict]:
    """``(logits, model_state)`` in training mode: a network with a model state runs with
    ``train=True`` and its collections mutable (batch statistics, running averages updated);
    one without is called as in evaluation and its empty state is returned."""
    if not model_state:
        return _logits(network, params, x), model_state
    return network.apply({**params, **model_state}, x, jnp.zeros(x.shape[:1], x.dtype),
                         train=True, mutable=list(model_state))


@functools.partial(jax.jit, static_argnames=("network", "batch_size"), donate_argnums=(2, 3, 4))
def _step(network: nn.Module, batch_size: int, params, model_state, opt_state, x_all: Array,
          y_all: Array, key: Array, lr: Array):
    """One Adam step with constant ``lr`` on the mean cross-entropy of a random minibatch."""
    rows = jax.random.randint(key, (batch_size,), 0, x_all.shape[0])

    def loss(params):
        logits, state = _training_logits(network, params, model_state, x_all[rows])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_all[rows])
        return jnp.mean(ce), state

    grads, model_state = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), model_state, opt_state


def _fit(network: nn.Module, batch_size: int, variables, x_all: Array, y_all: Array,
         keys: Array, lr: Array) -> dict:
    """Adam with constant ``lr``, one minibatch per key, one dispatch per step: a network inside
    a ``lax.scan`` body runs an order of magnitude slower on XLA:CPU (docs/benchmarks.md). Returns the
    trained variables (parameters and model state)."""
    params, model_state = split_variables(variables)
    opt_state = optax.adam(lr).init(params)
    for key in keys:
        params, model_state, opt_state = _step(network, batch_size, params, model_state,
                                               opt_state, x_all, y_all, key, lr)
    return {**params, **model_state}


@functools.partial(jax.jit, static_argnames=("network",))
def _batch_correct(network: nn.Module, variables, x: Array, y: Array) -> Array:
    """Correct top-1 predictions of one batch; padded rows have label −1."""
    return jnp.sum(jnp.argmax(_logits(network, variables, x), axis=-1) == y)


def _accuracy(network: nn.Module, variables, x: Array, y: Array, batch_size: int) -> float:
    """Top-1 accuracy in batches of ``batch_size`` (the last one padded, so one compilation)."""
    n = x.shape[0]
    batch_size = min(batch_size, n)
    num = -(-n // batch_size)
    pad = num * batch_size - n
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    y = jnp.pad(y, (0, pad), constant_values=-1)
    correct = sum(int(_batch_correct(network, variables, x[i * batch_size:(i + 1) * batch_size],
                                     y[i * batch_size:(i + 1) * batch_size])) for i in range(num))
    return correct / n


def cas(network: nn.Module, train_images, train_labels, test_images, test_labels, *, key: Array,
        steps: int, batch_size: int, lr: float = 2e-4, eval_batch_size: int = 500) -> dict:
    """Classification accuracy score: top-1 test accuracy of a classifier trained on samples.

    ``network`` is a Flax module called as ``network.apply(params, x, cond) -> logits [B, C]``
    (the library's classifier signature); it is called with ``cond = zeros [B]``, so it must be
    unconditional (e.g. a classifier built with ``conditional=False``, which ignores ``cond``).
    Its variables are initialised from ``key`` and trained by cross-entropy with Adam (constant
    ``lr``) for ``steps`` steps on minibatches of ``batch_size`` pairs drawn uniformly with
    replacement, one jitted step per minibatch; the result is a deterministic function of the
    inputs and ``key``. A network with a model state (collections besides ``params``, e.g. the
    BatchNorm ResNet's ``batch_stats``) is trained in its training mode (``train=True``: batch
    statistics, running averages updated) and measured in evaluation mode (running
    statistics), as the official CAS code's ``model.train()`` / ``model.eval()``.

    Args:
      network: the classifier, the same module for every method compared.
      train_images: [N, *event] generated samples in model space (images [N, H, W, C] or points
        [N, D]), floating point.
      train_labels: [N] integer classes the samples were generated for, in [0, C).
      test_images: [T, *event] real test inputs in the same space.
      test_labels: [T] their integer classes, in [0, C).
      key: a ``jax.random`` key (initialisation and minibatches).
      steps: the number of training steps.
      batch_size: training minibatch size.
      lr: Adam's learning rate (2e-4 in the official CAS training).
      eval_batch_size: examples per forward pass when measuring accuracies.
    Returns:
      ``{"cas": test accuracy, "train_accuracy": accuracy on the generated training pairs,
      "steps": steps}``, accuracies as floats in [0, 1].
    Raises:
      ValueError: on non-float, non-finite or unbatched inputs, event shapes that differ,
        labels of the wrong shape, dtype or range (outside the network's C logits), a network
        that does not return [B, C] logits, or bad ``steps`` / ``batch_size`` / ``lr`` /
        ``eval_batch_size``.
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("eval_batch_size", eval_batch_size)
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise ValueError(f"lr must be a number > 0; got {lr!r}.")
    check_positive("lr", lr)
    x_train = _check_inputs("train_images", train_images)
    x_test = _check_inputs("test_images", test_images)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError("train_images and test_images must have the same event shape; got "
                         f"{x_train.shape[1:]} and {x_test.shape[1:]}.")
    dtype = jnp.result_type(x_train.dtype, x_test.dtype)
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)

    k_init, k_batches = jax.random.split(key)
    variables = jax.jit(network.init)(k_init, x_train[:1], jnp.zeros((1,), dtype))
    out = jax.eval_shape(functools.partial(_logits, network), variables, x_train[:2])
    if len(out.shape) != 2 or out.shape[0] != min(2, x_train.shape[0]):
        raise ValueError("network.apply(params, x, cond) must return logits of shape "
                         f"[B, num_classes]; for B = 2 it returned shape {out.shape}.")
    num_classes = out.shape[1]
    bound = f"the network's {num_classes} logits"
    y_train = jnp.asarray(check_class_labels("train_labels", train_labels, x_train.shape[0],
                                             num_classes, bound), jnp.int32)
    y_test = jnp.asarray(check_class_labels("test_labels", test_labels, x_test.shape[0],
                                            num_classes, bound), jnp.int32)

    variables = _fit(network, batch_size, variables, x_train, y_train,
                  jax.random.split(k_batches, steps), jnp.asarray(lr, dtype))
    return {
        "cas": _accuracy(network, variables, x_test, y_test, eval_batch_size),
        "train_accuracy": _accuracy(network, variables, x_train, y_train, eval_batch_size),
        "steps": steps,
    }
