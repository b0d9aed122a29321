"""Building blocks of NCSN++ / DDPM++ and DDPM (score_sde's ``models/layerspp.py`` and the DDPM
parts of its ``models/layers.py``), channels last.

Parameter names and module order follow score_sde, so a network built from these blocks has
score_sde's parameter tree and count. GroupNorm uses ``min(C // 4, 32)`` groups and eps 1e-6
over the pixels and channels of one example: examples never interact (DESIGN §3.1).

Mixed precision: a block's ``dtype`` (None: that of its inputs and parameters) is the dtype of
its activations and convolutions; parameters stay float32 (Flax's ``param_dtype``) and are cast
where they are used, GroupNorm computes its statistics in at least float32 (Flax's
``GroupNorm``), and attention takes its softmax in at least float32. A residual block's ``remat``
names the ``jax.checkpoint`` policy of :data:`REMAT_POLICIES` under which its activations are
recomputed in the backward pass instead of stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax.models import up_or_down_sampling as updown
from sgm_jax.models.convolution import Conv, conv_p
from sgm_jax.models.layers import get_activation

Array = jax.Array

RESAMPLE_KERNEL = (1, 3, 3, 1)
#: A computation dtype: a JAX floating dtype, or None for that of the inputs and parameters.
Dtype = Any

#: The ``jax.checkpoint`` policies a residual block's ``remat`` names: which of the block's
#: intermediate values the backward pass may keep (the rest it recomputes from the block's
#: inputs). "none" does not checkpoint the block; "nothing_saveable" keeps none of them;
#: "conv_saveable" keeps the convolutions' outputs and recomputes the normalisation,
#: activations and resampling around them.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "conv_saveable": lambda primitive, *_, **__: primitive in (jax.lax.conv_general_dilated_p,
                                                               conv_p),
}


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """DDPM's initialiser: variance scaling with ``scale``, fan_avg, uniform.

    A ``scale`` of 0 becomes 1e-10, as in score_sde (a zero-variance initialiser would be
    rejected): such layers start at (almost) zero.
    """
    return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def conv(
    x: Array, features: int, size: int = 3, stride: int = 1, init_scale: float = 1.0,
    dtype: Dtype = None,
) -> Array:
    """A ``size × size`` 'SAME' convolution with bias, DDPM initialisation (score_sde's
    ``ddpm_conv3x3`` / ``ddpm_conv1x1``), computed in ``dtype``, created in the calling compact
    module."""
    return Conv(
        features,
        kernel_size=(size, size),
        strides=(stride, stride),
        padding="SAME",
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
    )(x)


def group_norm(x: Array, dtype: Dtype = None) -> Array:
    """GroupNorm with ``min(C // 4, 32)`` groups, eps 1e-6, per example (score_sde's NCSN++);
    the statistics in at least float32, the output in ``dtype``.

    Raises ``ValueError`` when that group count does not divide the channel count C.
    """
    channels = x.shape[-1]
    groups = min(channels // 4, 32)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm over {channels} channels: min(C // 4, 32) = {groups} groups do not "
            "divide C; choose nf so that every width nf*ch_mult (and the concatenated skip "
            "widths) is divisible by its group count"
        )
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype)(x)


def residual_sum(x: Array, h: Array, skip_rescale: bool) -> Array:
    """x + h, divided by √2 when ``skip_rescale`` (NCSN++ keeps the variance of the sum)."""
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class NIN(nn.Module):
    """A per-pixel linear map over channels, y = x W + b (DDPM's ``nin``), W ``[C, units]``
    initialised by ``default_init(init_scale)``, b zeros."""

    num_units: int
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
        b = self.param("b", nn.initializers.zeros, (self.num_units,))
        return jnp.tensordot(x, w.astype(x.dtype), axes=1) + b.astype(x.dtype)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features γ(s) = [sin(2π s W), cos(2π s W)] of a scalar per example.

    ``W`` ``[embedding_size]`` is a parameter drawn from N(0, scale²) at init and used through
    ``stop_gradient``, so it is never trained but is stored and counted with the parameters
    (score_sde's ``GaussianFourierProjection``; NCSN++ feeds s = log σ with scale 16, Tancik et
    al. 2020). Input ``[B]``, output ``[B, 2 · embedding_size]``.
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, s: Array) -> Array:
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        w = jax.lax.stop_gradient(w)
        proj = 2.0 * math.pi * s[:, None] * w[None, :].astype(s.dtype)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class Combine(nn.Module):
    """Merge a pyramid image ``x`` into features ``y``: a 1×1 conv of x to y's width, then
    concatenation (``"cat"``) or sum (``"sum"``) (score_sde's progressive input combiner)."""

    method: str = "cat"
    dtype: Dtype = None

    def __post_init__(self) -> None:
        if self.method not in ("cat", "sum"):
            raise ValueError(f"method={self.method!r} is not allowed; allowed: ['cat', 'sum']")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, y: Array) -> Array:
        h = conv(x, y.shape[-1], size=1, dtype=self.dtype)
        return jnp.concatenate([h, y], axis=-1) if self.method == "cat" else h + y


class AttnBlockpp(nn.Module):
    """Self-attention over the pixels of one image (DDPM's attention block, NCSN++ variant).

    h = GroupNorm(x); q, k, v = NIN(h); w = softmax over all H·W key pixels of q·k / √C;
    out = NIN_{init_scale}(w v); returns x + out, divided by √2 when ``skip_rescale``. The
    softmax runs in at least float32.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, height, width, c = x.shape
        h = group_norm(x, self.dtype)
        q, k, v = NIN(c)(h), NIN(c)(h), NIN(c)(h)
        logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (c**-0.5)
        logits = logits.reshape(b, height, width, height * width)
        weights = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)),
                                 axis=-1).astype(v.dtype)
        h = jnp.einsum("bhwHW,bHWc->bhwc", weights.reshape(b, height, width, height, width), v)
        h = NIN(c, init_scale=self.init_scale)(h)
        return residual_sum(x, h, self.skip_rescale)


class Upsample(nn.Module):
    """Upsampling by 2 to ``out_ch`` channels (default: unchanged).

    ``fir=False``: nearest neighbour, then a conv when ``with_conv``. ``fir=True``: FIR
    upsampling with ``fir_kernel``, or, ``with_conv``, the fused FIR transposed conv (``Conv2d``).
    """

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = RESAMPLE_KERNEL
    conv_size: int = 3
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out_ch = self.out_ch or x.shape[-1]
        if self.fir and self.with_conv:
            return updown.Conv2d(
                out_ch, self.conv_size, up=True, resample_kernel=self.fir_kernel,
                kernel_init=default_init(),
            )(x)
        if self.fir:
            return updown.upsample_2d(x, self.fir_kernel, factor=2)
        h = updown.naive_upsample_2d(x, factor=2)
        return conv(h, out_ch, self.conv_size, dtype=self.dtype) if self.with_conv else h


class Downsample(nn.Module):
    """Downsampling by 2 to ``out_ch`` channels (default: unchanged).

    ``fir=False``: a stride-2 conv when ``with_conv``, else 2×2 average pooling. ``fir=True``:
    the fused FIR conv (``Conv2d``) when ``with_conv``, else FIR downsampling with ``fir_kernel``.
    """

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = RESAMPLE_KERNEL
    conv_size: int = 3
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out_ch = self.out_ch or x.shape[-1]
        if self.fir and self.with_conv:
            return updown.Conv2d(
                out_ch, self.conv_size, down=True, resample_kernel=self.fir_kernel,
                kernel_init=default_init(),
            )(x)
        if self.fir:
            return updown.downsample_2d(x, self.fir_kernel, factor=2)
        if self.with_conv:
            return conv(x, out_ch, self.conv_size, stride=2, dtype=self.dtype)
        return updown.naive_downsample_2d(x, factor=2)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM's residual block: GN → act → conv → (+ Dense(act(temb))) → GN → act → dropout →
    conv(init_scale); the skip is a NIN (or, ``conv_shortcut``, a conv) when the width changes;
    the sum is divided by √2 when ``skip_rescale``. The block of DDPM itself is
    ``init_scale=0, skip_rescale=False``. Computed in ``dtype``, checkpointed under the policy
    ``remat`` names (:func:`checkpointed`)."""

    out_ch: int | None = None
    nonlinearity: str = "swish"
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    conv_size: int = 3
    dtype: Dtype = None
    remat: str = "none"

    def __call__(self, x: Array, temb: Array | None = None, train: bool = False) -> Array:
        return checkpointed(self, x, temb, train)

    @nn.compact
    def forward(self, x: Array, temb: Array | None, train: bool) -> Array:
        """The block's computation (``__call__`` runs it, checkpointed or not)."""
        act = get_activation(self.nonlinearity, "nonlinearity")
        out_ch = self.out_ch or x.shape[-1]
        h = conv(act(group_norm(x, self.dtype)), out_ch, self.conv_size, dtype=self.dtype)
        h = _add_time_bias(h, temb, act, self.dtype)
        h = act(group_norm(h, self.dtype))
        h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
        h = conv(h, out_ch, self.conv_size, init_scale=self.init_scale, dtype=self.dtype)
        if x.shape[-1] != out_ch:
            x = (conv(x, out_ch, self.conv_size, dtype=self.dtype) if self.conv_shortcut
                 else NIN(out_ch)(x))
        return residual_sum(x, h, self.skip_rescale)


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block of NCSN++, optionally resampling by 2 (``up`` / ``down``).

    GN → act → resample (FIR with ``fir_kernel``, or nearest / average pooling) → conv →
    (+ Dense(act(temb))) → GN → act → dropout → conv(init_scale); the skip is resampled the same
    way and goes through a 1×1 conv when the width changes or it resamples. Computed in
    ``dtype``, checkpointed under the policy ``remat`` names (:func:`checkpointed`).
    """

    out_ch: int | None = None
    nonlinearity: str = "swish"
    up: bool = False
    down: bool = False
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple[int, ...] = RESAMPLE_KERNEL
    skip_rescale: bool = True
    init_scale: float = 0.0
    conv_size: int = 3
    dtype: Dtype = None
    remat: str = "none"

    def __post_init__(self) -> None:
        if self.up and self.down:
            raise ValueError("ResnetBlockBigGANpp: up=True and down=True are exclusive")
        super().__post_init__()

    def _resample(self, x: Array) -> Array:
        if self.up:
            if self.fir:
                return updown.upsample_2d(x, self.fir_kernel, factor=2)
            return updown.naive_upsample_2d(x, factor=2)
        if self.down:
            if self.fir:
                return updown.downsample_2d(x, self.fir_kernel, factor=2)
            return updown.naive_downsample_2d(x, factor=2)
        return x

    def __call__(self, x: Array, temb: Array | None = None, train: bool = False) -> Array:
        return checkpointed(self, x, temb, train)

    @nn.compact
    def forward(self, x: Array, temb: Array | None, train: bool) -> Array:
        """The block's computation (``__call__`` runs it, checkpointed or not)."""
        act = get_activation(self.nonlinearity, "nonlinearity")
        out_ch = self.out_ch or x.shape[-1]
        h = self._resample(act(group_norm(x, self.dtype)))
        skip = self._resample(x)
        h = conv(h, out_ch, self.conv_size, dtype=self.dtype)
        h = _add_time_bias(h, temb, act, self.dtype)
        h = act(group_norm(h, self.dtype))
        h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
        h = conv(h, out_ch, self.conv_size, init_scale=self.init_scale, dtype=self.dtype)
        if x.shape[-1] != out_ch or self.up or self.down:
            skip = conv(skip, out_ch, size=1, dtype=self.dtype)
        return residual_sum(skip, h, self.skip_rescale)


def check_remat(remat: str) -> None:
    """``remat`` must name a policy of :data:`REMAT_POLICIES` (``ValueError`` otherwise)."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r} is not a checkpoint policy; allowed: "
                         f"{list(REMAT_POLICIES)}")


def checkpointed(block: nn.Module, x: Array, temb: Array | None, train: bool) -> Array:
    """``block.forward(x, temb, train)``, under ``jax.checkpoint`` with the policy that
    ``block.remat`` names (:data:`REMAT_POLICIES`; "none" runs it as it is). The lifted
    method keeps the block's parameter names, so a checkpointed network has the same parameter
    tree as a plain one, and the same outputs and gradients."""
    check_remat(block.remat)
    policy = REMAT_POLICIES[block.remat]
    if policy is None:
        return block.forward(x, temb, train)
    forward = nn.remat(type(block).forward, policy=policy, static_argnums=(3,))
    return forward(block, x, temb, train)


def _add_time_bias(h: Array, temb: Array | None, act: Callable[[Array], Array],
                   dtype: Dtype = None) -> Array:
    """h + Dense(act(temb)) as a per-channel bias, computed in ``dtype``; ``temb=None``
    (unconditional) adds nothing.

    Called inside a compact block, so the Dense belongs to that block."""
    if temb is None:
        return h
    bias = nn.Dense(h.shape[-1], kernel_init=default_init(), dtype=dtype)(act(temb))
    return h + bias[:, None, None, :]
