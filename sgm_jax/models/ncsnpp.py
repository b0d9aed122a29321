"""NCSN++ and DDPM++ (Song et al., ICLR 2021, §H / Table 4): one U-Net class, as score_sde's
``models/ncsnpp.py`` (``model.name='ncsnpp'`` for NCSN++, NCSN++ deep, DDPM++ and DDPM++ deep).

The defaults are score_sde's CIFAR-10 NCSN++ continuous configuration
(``configs/ve/cifar10_ncsnpp_continuous.py``); DDPM++ is ``fir=False, progressive_input='none',
embedding_type='positional', centered=True``, the deep variants ``num_res_blocks=8``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.models import layerspp
from sgm_jax.models.layers import ACTIVATIONS, get_activation, sinusoidal_embedding
from sgm_jax.models.registry import register_model

Array = jax.Array

RESBLOCK_TYPES = ("biggan", "ddpm")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
PROGRESSIVE_COMBINE = ("sum", "cat")
ATTENTION_TYPES = ("ddpm",)
EMBEDDING_TYPES = ("fourier", "positional")


#: The computation dtypes of the U-Nets (``dtype``; None: that of the inputs and parameters).
COMPUTE_DTYPES = (None, jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def check_unet_fields(module: nn.Module) -> None:
    """Validate the fields NCSN++ and DDPM share (``ValueError`` naming field, value, allowed)."""
    if module.dtype is not None and jnp.dtype(module.dtype) not in COMPUTE_DTYPES:
        raise ValueError(f"dtype={module.dtype!r} is not allowed; allowed: None, float32, "
                         "bfloat16")
    layerspp.check_remat(module.remat)
    check_positive_int("nf", module.nf)
    if len(module.ch_mult) == 0:
        raise ValueError(
            f"ch_mult={tuple(module.ch_mult)!r} is empty; give one multiplier per level"
        )
    for mult in module.ch_mult:
        check_positive_int("ch_mult entries", mult)
    if isinstance(module.num_res_blocks, bool) or not isinstance(module.num_res_blocks, int) or (
        module.num_res_blocks < 0
    ):
        raise ValueError(f"num_res_blocks must be an integer >= 0; got {module.num_res_blocks!r}.")
    for resolution in module.attn_resolutions:
        check_positive_int("attn_resolutions entries", resolution)
    if not 0.0 <= module.dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1); got {module.dropout!r}.")
    check_choice("nonlinearity", module.nonlinearity, tuple(ACTIVATIONS))


def check_unet_input(x: Array, cond: Array, levels: int) -> None:
    """``x`` ``[B, H, W, C]`` with H, W divisible by 2^(levels − 1) and ``cond`` ``[B]``."""
    if x.ndim != 4:
        raise ValueError(f"x has shape {x.shape}; expected [B, H, W, C] (channels last)")
    if cond.shape != (x.shape[0],):
        raise ValueError(f"cond has shape {cond.shape}; expected [B] = ({x.shape[0]},)")
    factor = 2 ** (levels - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(
            f"image size {x.shape[1]}x{x.shape[2]} is not divisible by 2^{levels - 1} = {factor} "
            f"({levels} levels in ch_mult)"
        )


@register_model("ncsnpp")
class NCSNpp(nn.Module):
    """The NCSN++ / DDPM++ U-Net f(x, cond), channels last; field names are score_sde's
    ``config.model`` keys.

    Levels have ``nf * ch_mult[i]`` channels and ``num_res_blocks`` residual blocks
    (``resblock_type``: ``"biggan"`` resamples inside the block, ``"ddpm"`` uses separate
    Up/Downsample layers); self-attention follows every block whose feature map height is in
    ``attn_resolutions`` (the image size is read from ``x`` at call time) and sits between the
    two middle blocks. ``fir`` selects FIR resampling with ``fir_kernel``; ``progressive`` /
    ``progressive_input`` add the output / input image pyramids (``progressive_combine`` merges
    the input pyramid for ``"input_skip"``); ``skip_rescale`` divides residual sums by √2;
    ``init_scale`` initialises the last conv of each block (0 → 1e-10, nearly zero);
    ``conv_size`` is the kernel size of every 3×3 convolution (score_sde's configs set 3 and its
    code always uses 3).

    Memory and precision (the train step sets them from ``training.compute_dtype`` and
    ``training.remat``): ``dtype`` is the dtype of the activations and convolutions (None: the
    input's; bfloat16 for mixed precision: the parameters stay float32, the time embedding's
    Fourier features, GroupNorm's statistics and attention's softmax are computed in float32, and
    the output is cast back to the input's dtype); ``remat`` names the ``jax.checkpoint`` policy
    of the residual blocks (``layerspp.REMAT_POLICIES``; "none": activations are stored). Neither
    changes the parameters.

    Time: ``embedding_type="fourier"``: ``2 nf`` Gaussian Fourier features (``fourier_scale``,
    a stop-gradient parameter ``W``); ``"positional"``: the ``nf``-dim sinusoidal embedding;
    then Dense(4nf) → act → Dense(4nf), added in every residual block. Unused when
    ``conditional=False`` (no embedding parameters are created then; score_sde still creates
    the Fourier ``W``).

    Call ``(x, cond, train=False)``: ``x`` ``[B, H, W, C]``; ``cond`` ``[B]`` is the scalar the
    network embeds as given: log σ_t for ``"fourier"`` (score_sde takes the log inside; here the
    caller does), 999·t or the discrete step for ``"positional"``. When ``centered=False`` the
    input in [0, 1] is first mapped to 2x − 1. Returns the raw output ``[B, H, W, C]``: the
    division by σ of score_sde's ``scale_by_sigma`` is left to the score parameterisation.
    ``train=True`` applies dropout with the ``'dropout'`` rng collection.
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    attention_type: str = "ddpm"
    init_scale: float = 0.0
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    conv_size: int = 3
    nonlinearity: str = "swish"
    centered: bool = False
    dtype: Any = None
    remat: str = "none"

    def __post_init__(self) -> None:
        check_unet_fields(self)
        check_choice("resblock_type", self.resblock_type, RESBLOCK_TYPES)
        check_choice("progressive", self.progressive, PROGRESSIVE)
        check_choice("progressive_input", self.progressive_input, PROGRESSIVE_INPUT)
        check_choice("progressive_combine", self.progressive_combine, PROGRESSIVE_COMBINE)
        check_choice("attention_type", self.attention_type, ATTENTION_TYPES)
        check_choice("embedding_type", self.embedding_type, EMBEDDING_TYPES)
        if self.embedding_type == "positional" and self.nf < 4:
            raise ValueError(f"nf={self.nf} is too small for the positional embedding; need >= 4")
        if len(self.fir_kernel) == 0 or sum(self.fir_kernel) == 0:
            raise ValueError(f"fir_kernel={list(self.fir_kernel)} needs a non-zero sum")
        if not (math.isfinite(self.init_scale) and self.init_scale >= 0):
            raise ValueError(f"init_scale must be finite and >= 0; got {self.init_scale!r}.")
        if not (math.isfinite(self.fourier_scale) and self.fourier_scale > 0):
            raise ValueError(f"fourier_scale must be finite and > 0; got {self.fourier_scale!r}.")
        check_positive_int("conv_size", self.conv_size)
        if self.conv_size % 2 == 0:
            raise ValueError(f"conv_size={self.conv_size} is not allowed; use an odd size")
        super().__post_init__()

    def _embed(self, cond: Array, act: Callable[[Array], Array]) -> Array | None:
        if not self.conditional:
            return None
        if self.embedding_type == "fourier":
            temb = layerspp.GaussianFourierProjection(self.nf, self.fourier_scale)(cond)
        else:
            temb = sinusoidal_embedding(cond, self.nf)
        dense = functools.partial(nn.Dense, 4 * self.nf, kernel_init=layerspp.default_init(),
                                  dtype=self.dtype)
        temb = dense()(temb)
        return dense()(act(temb))

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        levels = len(self.ch_mult)
        cond = jnp.asarray(cond)
        check_unet_input(x, cond, levels)
        act = get_activation(self.nonlinearity, "nonlinearity")
        fir_kernel = tuple(self.fir_kernel)
        out_dtype = x.dtype
        temb = self._embed(cond.astype(jnp.promote_types(cond.dtype, jnp.float32)), act)
        if temb is not None:
            temb = temb.astype(x.dtype if self.dtype is None else self.dtype)

        attn = functools.partial(
            layerspp.AttnBlockpp, skip_rescale=self.skip_rescale, init_scale=self.init_scale,
            dtype=self.dtype,
        )
        resample = dict(fir=self.fir, fir_kernel=fir_kernel, conv_size=self.conv_size,
                        dtype=self.dtype)
        if self.resblock_type == "ddpm":
            resblock = functools.partial(
                layerspp.ResnetBlockDDPMpp, nonlinearity=self.nonlinearity, dropout=self.dropout,
                init_scale=self.init_scale, skip_rescale=self.skip_rescale,
                conv_size=self.conv_size, dtype=self.dtype, remat=self.remat,
            )
        else:
            resblock = functools.partial(
                layerspp.ResnetBlockBigGANpp, nonlinearity=self.nonlinearity,
                dropout=self.dropout, init_scale=self.init_scale,
                skip_rescale=self.skip_rescale, remat=self.remat, **resample,
            )

        if not self.centered:
            x = 2.0 * x - 1.0
        if self.dtype is not None:
            x = x.astype(self.dtype)
        channels = x.shape[-1]

        # Downsampling path.
        input_pyramid = x
        hs = [layerspp.conv(x, self.nf, self.conv_size, dtype=self.dtype)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = resblock(out_ch=self.nf * mult)(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                hs.append(h)
            if level == levels - 1:
                continue
            if self.resblock_type == "ddpm":
                h = layerspp.Downsample(with_conv=self.resamp_with_conv, **resample)(hs[-1])
            else:
                h = resblock(down=True)(hs[-1], temb, train)
            if self.progressive_input == "input_skip":
                input_pyramid = layerspp.Downsample(with_conv=False, **resample)(input_pyramid)
                h = layerspp.Combine(method=self.progressive_combine, dtype=self.dtype)(
                    input_pyramid, h)
            elif self.progressive_input == "residual":
                input_pyramid = layerspp.Downsample(
                    out_ch=h.shape[-1], with_conv=True, **resample
                )(input_pyramid)
                h = input_pyramid = layerspp.residual_sum(input_pyramid, h, self.skip_rescale)
            hs.append(h)

        h = resblock()(hs[-1], temb, train)
        h = attn()(h)
        h = resblock()(h, temb, train)

        # Upsampling path.
        pyramid = None
        for level in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                skip = hs.pop()
                h = resblock(out_ch=self.nf * self.ch_mult[level])(
                    jnp.concatenate([h, skip], axis=-1), temb, train
                )
            if h.shape[1] in self.attn_resolutions:
                h = attn()(h)

            if self.progressive == "output_skip":
                out = layerspp.conv(
                    act(layerspp.group_norm(h, self.dtype)), channels, self.conv_size,
                    init_scale=self.init_scale, dtype=self.dtype,
                )
                if pyramid is None:
                    pyramid = out
                else:
                    pyramid = layerspp.Upsample(with_conv=False, **resample)(pyramid) + out
            elif self.progressive == "residual":
                if pyramid is None:
                    # score_sde computes this top-level projection but does not add it to h.
                    pyramid = layerspp.conv(
                        act(layerspp.group_norm(h, self.dtype)), h.shape[-1], self.conv_size,
                        dtype=self.dtype,
                    )
                else:
                    pyramid = layerspp.Upsample(
                        out_ch=h.shape[-1], with_conv=True, **resample
                    )(pyramid)
                    h = pyramid = layerspp.residual_sum(pyramid, h, self.skip_rescale)

            if level != 0:
                if self.resblock_type == "ddpm":
                    h = layerspp.Upsample(with_conv=self.resamp_with_conv, **resample)(h)
                else:
                    h = resblock(up=True)(h, temb, train)

        if self.progressive == "output_skip":
            return pyramid.astype(out_dtype)
        h = act(layerspp.group_norm(h, self.dtype))
        h = layerspp.conv(h, channels, self.conv_size, init_scale=self.init_scale,
                          dtype=self.dtype)
        return h.astype(out_dtype)
