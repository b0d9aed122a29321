"""Shared layers: Swish with a learnable per-unit β, activations by name, time embeddings.

Nothing here mixes examples of a batch: every function acts on each example (row) on its own,
as the score-function contract (DESIGN §3.1) requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "identity": lambda x: x,
    "relu": nn.relu,
    "elu": nn.elu,
    # Negative slope 0.1, as torch.nn.LeakyReLU(0.1) in the official 2-D CSBM configs.
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.1),
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
    "swish": nn.swish,
}


def get_activation(name: str, field: str = "activation") -> Callable[[Array], Array]:
    """The element-wise activation called ``name`` (a key of ``ACTIVATIONS``).

    Raises ``ValueError`` naming ``field``, the value and the allowed names when it is unknown.
    """
    if name not in ACTIVATIONS:
        raise ValueError(
            f"{field}={name!r} is not a known activation; allowed: {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


class Swish(nn.Module):
    """Swish with a learnable slope per unit: y = x · sigmoid(β ⊙ x) (Ramachandran et al., 2017).

    ``β`` has one entry per feature of the last axis (per unit for vectors, per channel for
    channels-last images) and starts at ``beta_init`` (1.0 gives SiLU at initialisation), as in
    the official 2-D QCSBM network (official_code_facts §1b).
    """

    beta_init: float = 1.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        beta = self.param("beta", nn.initializers.constant(self.beta_init), (x.shape[-1],))
        return x * nn.sigmoid(beta * x)


def gaussian_fourier_embedding(
    t: Array, embedding_size: int, scale: float = 16.0, seed: int = 0
) -> Array:
    """Random Fourier features of a scalar: γ(t) = [sin(2π t w), cos(2π t w)], w ~ N(0, scale² I).

    ``t`` has any shape ``S``; the result has shape ``S + (2 * embedding_size,)`` and the dtype of
    ``t`` (at least float32). The frequencies ``w`` are a fixed constant drawn with NumPy from
    ``seed``, not a parameter: they are the same on every backend, never trained, and invisible to
    optimisers (score_sde stores them as a stop-gradient parameter instead; NCSN++ feeds log σ
    with ``scale=16``).
    """
    t = jnp.asarray(t)
    dtype = jnp.promote_types(t.dtype, jnp.float32)
    w = scale * np.random.default_rng(seed).standard_normal(embedding_size)
    proj = 2.0 * math.pi * t.astype(dtype)[..., None] * jnp.asarray(w, dtype)
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


def sinusoidal_embedding(t: Array, dim: int, max_positions: float = 10000.0) -> Array:
    """Transformer / DDPM positional embedding of a scalar.

    γ(t)_k = sin(t ω_k) for k < dim/2 and cos(t ω_{k−dim/2}) after, with ω_k =
    max_positions^(−k/(dim/2 − 1)) geometric from 1 down to 1/max_positions; an odd ``dim`` is
    zero-padded. ``t`` has any shape ``S``; the result has shape ``S + (dim,)``. DDPM++ feeds
    it the discrete step (continuous t is usually scaled by 999 first).
    """
    if dim < 4:
        raise ValueError(f"dim={dim} is too small for a sinusoidal embedding; need dim >= 4")
    t = jnp.asarray(t)
    dtype = jnp.promote_types(t.dtype, jnp.float32)
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half, dtype=dtype) / (half - 1))
    arg = t.astype(dtype)[..., None] * freqs
    emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


def broadcast_time(t: Array | float, batch: int) -> Array:
    """``t`` as a vector of shape ``[batch]`` (a scalar is repeated; ``[batch]`` passes through)."""
    t = jnp.asarray(t)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, batch)):
        raise ValueError(f"t has shape {t.shape}; expected () or ({batch},)")
    return jnp.broadcast_to(t, (batch,))
