"""Per-example helpers for batched arrays ``[B, *event]``: the batch axis is the first one, every
other axis is the event."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def per_example(c: Array, x: Array) -> Array:
    """A per-example coefficient (shape () or [B]) reshaped to broadcast against x [B, *event]."""
    c = jnp.asarray(c)
    return jnp.reshape(c, c.shape + (1,) * (jnp.ndim(x) - c.ndim))


def sum_event(a: Array) -> Array:
    """Sum over every axis but the leading (batch) one: [B, *event] -> [B]."""
    return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def sq_norm(a: Array) -> Array:
    """Per-example squared Euclidean norm over the event axes: [B, *event] -> [B]."""
    return sum_event(a * a)


def batch_times(t, x: Array) -> Array:
    """A scalar time repeated for every example of x: [B], in x's dtype."""
    return jnp.full((x.shape[0],), t, dtype=x.dtype)
