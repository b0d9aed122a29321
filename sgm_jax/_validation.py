"""Argument checks shared by the pure objectives and metrics.

Checks on values (positivity) run only on concrete arrays, so every function stays traceable
under ``jit``/``vmap``/``grad``; shape checks always run (shapes are static).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def concrete_value(a) -> np.ndarray | None:
    """``a`` as a NumPy array, or None when it is an abstract tracer."""
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_batched(name: str, x: Array) -> None:
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"{name} must be batched with shape [B, *event] (at least 2 dimensions); "
            f"got shape {jnp.shape(x)}.")


def check_event_shape(name: str, data: Array, x: Array) -> None:
    if jnp.ndim(data) != jnp.ndim(x) or jnp.shape(data)[1:] != jnp.shape(x)[1:]:
        raise ValueError(
            f"{name} must have shape [M, *event] with the event shape of x {jnp.shape(x)[1:]}; "
            f"got shape {jnp.shape(data)}.")
    if jnp.shape(data)[0] < 1:
        raise ValueError(f"{name} must hold at least one point; got shape {jnp.shape(data)}.")


def check_sigma(name: str, sigma, x: Array) -> Array:
    """``sigma`` as an array of shape () or [B], checked positive and finite when concrete."""
    sigma = jnp.asarray(sigma)
    batch = jnp.shape(x)[0]
    if sigma.shape not in ((), (batch,)):
        raise ValueError(
            f"{name} must be a scalar or have shape [B] = ({batch},); got shape {sigma.shape}.")
    value = concrete_value(sigma)
    if value is not None and not (np.all(np.isfinite(value)) and np.all(value > 0)):
        raise ValueError(f"{name} must be finite and > 0; got {value}.")
    return sigma.astype(jnp.result_type(x))


def check_positive(name: str, value) -> None:
    concrete = concrete_value(value)
    if concrete is not None and not (np.all(np.isfinite(concrete)) and np.all(concrete > 0)):
        raise ValueError(f"{name} must be finite and > 0; got {concrete}.")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")


def check_choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}; got {value!r}.")


def check_labels(name: str, y: Array, x: Array) -> None:
    batch = jnp.shape(x)[0]
    if jnp.shape(y) != (batch,) or not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise ValueError(
            f"{name} must hold integer class labels of shape [B] = ({batch},); "
            f"got shape {jnp.shape(y)} and dtype {jnp.result_type(y)}.")


def check_class_labels(name: str, labels, num_points: int, num_classes: int,
                       bound: str = "num_classes") -> np.ndarray:
    """``labels`` as a numpy array, checked to hold one integer class label in [0,
    ``num_classes``) per example of a set of ``num_points``; ``bound`` names where the number
    of classes comes from in the message."""
    labels = np.asarray(labels)
    if labels.shape != (num_points,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels of shape [{num_points}] (one per "
                         f"example); got shape {labels.shape} and dtype {labels.dtype}.")
    if num_points and not 0 <= labels.min() <= labels.max() < num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}) ({bound}); got values in "
                         f"[{labels.min()}, {labels.max()}].")
    return labels


def check_logits(logits: Array, x: Array) -> None:
    batch = jnp.shape(x)[0]
    if jnp.ndim(logits) != 2 or jnp.shape(logits)[0] != batch:
        raise ValueError(
            f"logits_fn must return logits of shape [B, num_classes] with B = {batch}; "
            f"got shape {jnp.shape(logits)}.")


def checked_call(score_fn: Callable[[Array], Array], x: Array) -> Array:
    """``score_fn(x)``, checked to return an array of the input's shape."""
    s = score_fn(x)
    if jnp.shape(s) != jnp.shape(x):
        raise ValueError(
            f"score_fn must return an array of the input's shape [B, *event] = {jnp.shape(x)}; "
            f"got shape {jnp.shape(s)}.")
    return s
