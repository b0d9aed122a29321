"""A small time-conditional convolutional U-Net f(x, t) for 32×32×C images (benchmarks).

GroupNorm normalises over the channels and pixels of one example only, so examples never
interact (DESIGN §3.1); there is no batch norm, dropout or attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax.models.convolution import Conv
from sgm_jax.models.layers import broadcast_time, gaussian_fourier_embedding
from sgm_jax.models.registry import register_model

Array = jax.Array


class _ResBlock(nn.Module):
    """GN → swish → conv3 → (+ Dense(temb)) → GN → swish → conv3, plus a (1×1) skip."""

    features: int
    num_groups: int

    @nn.compact
    def __call__(self, x: Array, temb: Array) -> Array:
        h = nn.swish(nn.GroupNorm(num_groups=self.num_groups)(x))
        h = Conv(self.features, (3, 3))(h)
        h = h + nn.Dense(self.features)(nn.swish(temb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(num_groups=self.num_groups)(h))
        h = Conv(self.features, (3, 3))(h)
        if x.shape[-1] != self.features:
            x = Conv(self.features, (1, 1))(x)
        return x + h


@register_model("small_conv")
class SmallConvScoreNet(nn.Module):
    """A U-Net with one residual block per resolution and skip connections.

    Levels have ``nf * m`` channels for m in ``ch_mult``, halving the resolution between levels
    (stride-2 conv down, nearest-neighbour ×2 + conv up), so H and W must be divisible by
    2^(len(ch_mult) − 1). Defaults (nf 32, ch_mult (1, 2, 2)) give about 0.62M parameters for
    C = 3. Time: ``2 * nf`` Gaussian Fourier features of t (``fourier_scale``, 16 as in NCSN++)
    → Dense(4nf) → swish → Dense(4nf), added to every block as a per-channel bias.

    Call: ``x`` ``[B, H, W, C]`` (channels last), ``t`` ``[B]`` or a scalar: the continuous SDE
    time by default (any scalar the caller chooses, e.g. log σ as NCSN++). Returns
    ``[B, H, W, C]``.
    """

    nf: int = 32
    ch_mult: Sequence[int] = (1, 2, 2)
    num_groups: int = 8
    fourier_scale: float = 16.0

    def __post_init__(self) -> None:
        for m in self.ch_mult:
            if (self.nf * m) % self.num_groups:
                raise ValueError(
                    f"num_groups={self.num_groups} must divide every level width nf*ch_mult "
                    f"(nf={self.nf}, ch_mult={tuple(self.ch_mult)})"
                )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, t: Array, train: bool = False) -> Array:
        del train  # no dropout
        batch, height, width, channels = x.shape
        levels = len(self.ch_mult)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(
                f"image size {height}x{width} is not divisible by 2^{levels - 1} "
                f"(ch_mult={tuple(self.ch_mult)})"
            )
        temb = gaussian_fourier_embedding(broadcast_time(t, batch), self.nf, self.fourier_scale)
        temb = nn.Dense(4 * self.nf)(temb.astype(x.dtype))
        temb = nn.Dense(4 * self.nf)(nn.swish(temb))

        h = Conv(self.nf, (3, 3))(x)
        skips = []
        for i, mult in enumerate(self.ch_mult):
            h = _ResBlock(self.nf * mult, self.num_groups)(h, temb)
            skips.append(h)
            if i < levels - 1:
                h = Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
        for i in reversed(range(levels)):
            h = jnp.concatenate([h, skips[i]], axis=-1)
            h = _ResBlock(self.nf * self.ch_mult[i], self.num_groups)(h, temb)
            if i > 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
                h = Conv(c, (3, 3))(h)
        h = nn.swish(nn.GroupNorm(num_groups=self.num_groups)(h))
        return Conv(channels, (3, 3))(h)
