"""Toy 2-D networks f(x, t) for the QCSGM motivational experiments (QCSGM §3.2, A.5.2).

Both return ``f`` of the input's shape; a parameterisation (``parameterisation.py``, QCSGM Eq. 12)
turns ``f`` into a score. Rows of the batch never interact (no batch statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax.models.layers import Swish, broadcast_time, gaussian_fourier_embedding, get_activation
from sgm_jax.models.registry import register_model

Array = jax.Array


@register_model("toy_mlp")
class ToyMLP(nn.Module):
    """The QCSGM A.5.2 toy network: an MLP with widths ``hidden`` = (128, 64, 32) and Swish.

    ``f(x, t) = Dense_D(Swish(… Swish(Dense_128([x, γ(t)])) …))`` with D = the event size and
    Swish with a learnable per-unit β (``layers.Swish``). Time enters once, at the input: γ(t)
    are ``2 * embedding_size`` Gaussian Fourier features of ``t`` (``fourier_scale`` = 1 suits
    t ∈ [0, 1]), concatenated to the flattened x.

    Call: ``x`` ``[B, *event]``, ``t`` ``[B]`` or a scalar — the continuous SDE time t ∈ [0, 1]
    (the network never sees σ; the parameterisation divides by σ_t). Returns ``[B, *event]``.
    """

    hidden: Sequence[int] = (128, 64, 32)
    embedding_size: int = 8
    fourier_scale: float = 1.0

    @nn.compact
    def __call__(self, x: Array, t: Array, train: bool = False) -> Array:
        del train  # no dropout
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        temb = gaussian_fourier_embedding(
            broadcast_time(t, batch), self.embedding_size, self.fourier_scale
        )
        h = jnp.concatenate([flat, temb.astype(flat.dtype)], axis=-1)
        for width in self.hidden:
            h = Swish()(nn.Dense(width)(h))
        return nn.Dense(flat.shape[-1])(h).reshape(x.shape)


def _torch_dense(features: int, fan_in: int, name: str) -> nn.Dense:
    """A Dense initialised as PyTorch's ``nn.Linear``: weights and bias ~ U(±1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def bias_init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init, name=name)


@register_model("official_toy")
class OfficialToyNet(nn.Module):
    """The official QCSBM 2-D network (official_code_facts §1b), layer for layer.

    x-branch: Linear(D,64) → Swish(64) → Linear(64,128) → Swish(128) → Linear(128,256);
    σ-branch on raw σ: Linear(1,1) → Swish(1) → Linear(1,1) → Swish(1) → Linear(1,1);
    concatenate (257) → Swish(257) → Linear(257,D) → ``output_activation``.
    Every Swish has a learnable per-unit β; weights and biases use PyTorch's default
    ``nn.Linear`` initialisation, as the official code. For D = 2 it has 42,509 parameters.

    ``output_activation`` is the official ``act__``: the official code applies it only in the
    constrained (CSBM, "c") model — ELU for checkerboard/spirals, LeakyReLU(0.1)
    (``"leaky_relu"``) for 8-Gaussians — and "identity" for the U/QC models.

    Call: ``x`` ``[B, D]`` and **σ_t** ``[B]`` or a scalar (not t): the caller passes
    ``sigma_fn(t)``, e.g. ``apply_fn = lambda p, x, t: net.apply(p, x, sigma_fn(t))``.
    """

    output_activation: str = "identity"

    def __post_init__(self) -> None:
        get_activation(self.output_activation, field="output_activation")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, sigma: Array, train: bool = False) -> Array:
        del train  # no dropout
        batch, dim = x.shape
        s = broadcast_time(sigma, batch).astype(x.dtype)[:, None]
        h = _torch_dense(64, dim, "x_linear_0")(x)
        h = _torch_dense(128, 64, "x_linear_1")(Swish(name="x_swish_0")(h))
        h = _torch_dense(256, 128, "x_linear_2")(Swish(name="x_swish_1")(h))
        s = _torch_dense(1, 1, "sigma_linear_0")(s)
        s = _torch_dense(1, 1, "sigma_linear_1")(Swish(name="sigma_swish_0")(s))
        s = _torch_dense(1, 1, "sigma_linear_2")(Swish(name="sigma_swish_1")(s))
        h = Swish(name="joint_swish")(jnp.concatenate([h, s], axis=-1))
        out = _torch_dense(dim, 257, "out_linear")(h)
        return get_activation(self.output_activation, field="output_activation")(out)
