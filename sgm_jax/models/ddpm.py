"""The DDPM U-Net (Ho et al., 2020, App. B) as score_sde's ``models/ddpm.py``.

The defaults are score_sde's CIFAR-10 DDPM configuration (``configs/vp/ddpm/cifar10.py``;
35,218,947 parameters, as score_sde counts them). Its blocks are the NCSN++ ones
(``layerspp``) with DDPM's settings: residual blocks with ``init_scale=0`` and no skip
rescaling, attention likewise, nearest-neighbour / stride-2 resampling without FIR.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax.models import layerspp
from sgm_jax.models.layers import get_activation, sinusoidal_embedding
from sgm_jax.models.ncsnpp import check_unet_fields, check_unet_input
from sgm_jax.models.registry import register_model

Array = jax.Array


@register_model("ddpm")
class DDPM(nn.Module):
    """DDPM's U-Net f(x, cond), channels last; field names are score_sde's ``config.model`` keys.

    Levels have ``nf * ch_mult[i]`` channels and ``num_res_blocks`` residual blocks (two more in
    the middle around an attention block), attention after blocks whose feature map height is in
    ``attn_resolutions``, stride-2 conv / nearest + conv resampling (``resamp_with_conv``) or
    average pooling / nearest. GroupNorm uses ``min(C // 4, 32)`` groups: score_sde uses Flax's
    default 32, the same for every width of 128 channels or more (all its DDPM configs), and
    this also allows narrow test networks.

    Call ``(x, cond, train=False)``: ``x`` ``[B, H, W, C]``; ``cond`` ``[B]`` is embedded with the
    ``nf``-dim sinusoidal embedding (the discrete step, or 999·t for continuous VP / sub-VP), then
    Dense(4nf) → act → Dense(4nf); ignored when ``conditional=False``. ``centered=False`` maps an
    input in [0, 1] to 2x − 1 first. Returns the raw output ``[B, H, W, C]``, in the input's
    dtype. ``dtype`` and ``remat`` are NCSN++'s (:class:`sgm_jax.models.ncsnpp.NCSNpp`).
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    nonlinearity: str = "swish"
    centered: bool = True
    dtype: Any = None
    remat: str = "none"

    def __post_init__(self) -> None:
        check_unet_fields(self)
        if self.conditional and self.nf < 4:
            raise ValueError(f"nf={self.nf} is too small for the sinusoidal embedding; need >= 4")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        levels = len(self.ch_mult)
        cond = jnp.asarray(cond)
        check_unet_input(x, cond, levels)
        act = get_activation(self.nonlinearity, "nonlinearity")
        dtype = x.dtype if self.dtype is None else self.dtype
        attn = functools.partial(layerspp.AttnBlockpp, skip_rescale=False, init_scale=0.0,
                                 dtype=self.dtype)
        resblock = functools.partial(
            layerspp.ResnetBlockDDPMpp, nonlinearity=self.nonlinearity, dropout=self.dropout,
            init_scale=0.0, skip_rescale=False, dtype=self.dtype, remat=self.remat,
        )

        temb = None
        if self.conditional:
            temb = sinusoidal_embedding(cond, self.nf)
            dense = functools.partial(nn.Dense, 4 * self.nf, kernel_init=layerspp.default_init(),
                                      dtype=self.dtype)
            temb = dense()(temb)
            temb = dense()(act(temb)).astype(dtype)

        h = (x if self.centered else 2.0 * x - 1.0).astype(dtype)
        hs = [layerspp.conv(h, self.nf, dtype=self.dtype)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = resblock(out_ch=self.nf * mult)(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                hs.append(h)
            if level != levels - 1:
                hs.append(layerspp.Downsample(with_conv=self.resamp_with_conv,
                                              dtype=self.dtype)(hs[-1]))

        h = resblock()(hs[-1], temb, train)
        h = attn()(h)
        h = resblock()(h, temb, train)

        for level in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                h = resblock(out_ch=self.nf * self.ch_mult[level])(
                    jnp.concatenate([h, hs.pop()], axis=-1), temb, train
                )
            if h.shape[1] in self.attn_resolutions:
                h = attn()(h)
            if level != 0:
                h = layerspp.Upsample(with_conv=self.resamp_with_conv, dtype=self.dtype)(h)

        h = act(layerspp.group_norm(h, self.dtype))
        return layerspp.conv(h, x.shape[-1], init_scale=0.0, dtype=self.dtype).astype(x.dtype)
