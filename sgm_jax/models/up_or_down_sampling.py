"""FIR resampling of channels-last images (NHWC), as NCSN++ uses it (StyleGAN2's upfirdn).

``upfirdn2d`` upsamples by zero insertion, pads (or crops), convolves every channel with a 2-D FIR
filter and downsamples by keeping every ``down``-th pixel. The helpers normalise a FIR kernel
(``[1, 3, 3, 1]`` in NCSN++) so that a constant image keeps its value times ``gain``, and the
fused convolutions apply a learnt convolution and the FIR filter with one zero padding at the
input, exactly as score_sde's ``models/up_or_down_sampling.py``. Channels never mix in the FIR
filter and examples never interact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax.models.convolution import conv_general_dilated

Array = jax.Array
Initializer = Callable[..., Array]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _positive_int(value: int, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; it must be a positive integer")


def _correlate_1d(x: Array, taps: np.ndarray, axis: int, down: int) -> Array:
    """Σ_i taps[i] · x[n·down + i] along ``axis`` for every n whose window fits ("valid")."""
    out = (x.shape[axis] - len(taps)) // down + 1
    terms = [float(w) * jax.lax.slice_in_dim(x, i, i + (out - 1) * down + 1, stride=down, axis=axis)
             for i, w in enumerate(taps) if w != 0.0]
    return sum(terms[1:], terms[0])


def _rank_one(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(column, row) with kernel = column ⊗ row when the kernel has rank one (to float64
    rounding), else None."""
    i, j = np.unravel_index(np.argmax(np.abs(kernel)), kernel.shape)
    column, row = kernel[:, j], kernel[i, :] / kernel[i, j]
    if np.allclose(np.outer(column, row), kernel, rtol=1e-12, atol=1e-15 * np.abs(kernel).max()):
        return column, row
    return None


def upfirdn2d(
    x: Array,
    kernel: Array | np.ndarray,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> Array:
    """Upsample, FIR-filter and downsample every channel of ``x`` ``[B, H, W, C]``.

    Per image and channel (StyleGAN2's upfirdn_2d, scipy.signal.upfirdn in 2-D):

    1. insert ``up − 1`` zeros after every pixel along H and W (size ``H·up``);
    2. pad ``pad[0]`` zeros before and ``pad[1]`` after along H and W (negative values crop);
    3. convolve (true convolution, the kernel flipped) with the 2-D ``kernel`` ``[kh, kw]``,
       keeping only outputs whose footprint lies inside the padded image;
    4. keep every ``down``-th pixel.

    The output has size ``(H·up + pad[0] + pad[1] − kh) // down + 1`` along H (likewise W) and the
    dtype of ``x``. The filter is a sum of shifted, strided slices weighted by the kernel's taps
    (a separable kernel, such as NCSN++'s ``[1, 3, 3, 1]`` ⊗ ``[1, 3, 3, 1]``, as two 1-D passes):
    only elementwise work, which XLA fuses, instead of a depthwise convolution, whose gradient is
    slow on CPUs; only the kept outputs are computed. ``kernel`` must be concrete (a NumPy array
    or a constant). Raises ``ValueError`` for a kernel that is not 2-D, a non-positive ``up`` or
    ``down``, or padding that leaves no output.
    """
    _positive_int(up, "up")
    _positive_int(down, "down")
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"kernel has shape {kernel.shape}; a 2-D [kh, kw] FIR kernel is needed")
    if x.ndim != 4:
        raise ValueError(f"x has shape {x.shape}; expected [B, H, W, C]")
    pad0, pad1 = pad
    for axis, k in zip((1, 2), kernel.shape, strict=True):
        if x.shape[axis] * up + pad0 + pad1 < k:
            raise ValueError(
                f"pad={tuple(pad)} leaves {x.shape[axis] * up + pad0 + pad1} pixels along axis "
                f"{axis}, fewer than the kernel size {k}"
            )
    # Zero insertion is interior padding; the trailing up-1 zeros and pad0/pad1 are edge padding.
    spatial = (pad0, pad1 + up - 1, up - 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), spatial, spatial, (0, 0, 0)])
    flipped = kernel[::-1, ::-1]  # a true convolution is a correlation with the flipped kernel
    factors = _rank_one(flipped)
    if factors is not None:
        return _correlate_1d(_correlate_1d(x, factors[0], 1, down), factors[1], 2, down)
    out_h = (x.shape[1] - flipped.shape[0]) // down + 1
    out_w = (x.shape[2] - flipped.shape[1]) // down + 1
    terms = [float(flipped[i, j]) * x[:, i:i + (out_h - 1) * down + 1:down,
                                         j:j + (out_w - 1) * down + 1:down]
             for i in range(flipped.shape[0]) for j in range(flipped.shape[1])
             if flipped[i, j] != 0.0]
    return sum(terms[1:], terms[0])


def setup_kernel(kernel: Sequence[float] | np.ndarray) -> np.ndarray:
    """A FIR kernel as a 2-D float32 array with unit sum.

    A 1-D ``kernel`` k is made separable (the outer product k kᵀ); the result is divided by its
    sum, so filtering a constant image keeps the constant (away from the borders).
    """
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.sum() == 0:
        raise ValueError(
            f"kernel={np.asarray(kernel).tolist()} is not allowed; use a 1-D or square 2-D "
            "kernel with a non-zero sum"
        )
    return k / k.sum()


def upsample_2d(
    x: Array, kernel: Sequence[float] = (1, 1), factor: int = 2, gain: float = 1.0
) -> Array:
    """Upsample ``[B, H, W, C]`` by ``factor`` with a FIR filter: ``[B, H·f, W·f, C]``.

    The normalised kernel is scaled by ``gain · factor²`` (zero insertion leaves one pixel in
    ``factor²``), so a constant image is multiplied by ``gain`` away from the borders. The
    padding ``((p + 1) // 2 + factor − 1, p // 2)`` with ``p = kh − factor`` centres the filter.
    The default kernel ``[1] * 2`` is nearest-neighbour upsampling by 2.
    """
    _positive_int(factor, "factor")
    k = setup_kernel(kernel) * (gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(
    x: Array, kernel: Sequence[float] = (1, 1), factor: int = 2, gain: float = 1.0
) -> Array:
    """Downsample ``[B, H, W, C]`` by ``factor`` with a FIR filter: ``[B, H // f, W // f, C]``.

    A constant image is multiplied by ``gain`` away from the borders; the padding
    ``((p + 1) // 2, p // 2)`` with ``p = kh − factor`` centres the filter. The default kernel
    ``[1] * 2`` is 2×2 average pooling.
    """
    _positive_int(factor, "factor")
    k = setup_kernel(kernel) * gain
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def naive_upsample_2d(x: Array, factor: int = 2) -> Array:
    """Nearest-neighbour upsampling: every pixel repeated ``factor × factor`` times."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: Array, factor: int = 2) -> Array:
    """Average pooling over non-overlapping ``factor × factor`` windows (H, W divisible)."""
    b, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not divisible by factor={factor}")
    return jnp.mean(x.reshape(b, h // factor, factor, w // factor, factor, c), axis=(2, 4))


def _odd_square(w: Array) -> int:
    size = w.shape[0]
    if w.ndim != 4 or w.shape[1] != size or size % 2 == 0:
        raise ValueError(f"weights have shape {w.shape}; expected [k, k, C_in, C_out] with k odd")
    return size


def upsample_conv_2d(
    x: Array, w: Array, kernel: Sequence[float] = (1, 1), factor: int = 2, gain: float = 1.0
) -> Array:
    """Upsampling by ``factor`` fused with the convolution ``w`` ``[k, k, C_in, C_out]``, k odd.

    A transposed convolution with stride ``factor`` (the zero-inserted input, padded by k − 1 on
    each side, correlated with ``w``) followed by the FIR filter (normalised, times
    ``gain · factor²``): the input is zero-padded once, never between the two operations, so
    this equals FIR upsampling followed by a 'SAME' convolution except within a few pixels of
    the border. Output ``[B, H·f, W·f, C_out]``; for factor 2 the paddings are score_sde's.
    """
    _positive_int(factor, "factor")
    size = _odd_square(w)
    k = setup_kernel(kernel) * (gain * factor**2)
    h = conv_general_dilated(
        x,
        w.astype(x.dtype),
        window_strides=(1, 1),
        padding=[(size - 1, size - 1)] * 2,
        lhs_dilation=(factor, factor),
        dimension_numbers=_DIMENSION_NUMBERS,
    )
    pad0 = (k.shape[0] - factor - size + 2) // 2 + factor - 1
    pad1 = k.shape[0] + factor - size - 1 - pad0
    return upfirdn2d(h, k, pad=(pad0, pad1))


def conv_downsample_2d(
    x: Array, w: Array, kernel: Sequence[float] = (1, 1), factor: int = 2, gain: float = 1.0
) -> Array:
    """The convolution ``w`` ``[k, k, C_in, C_out]`` (k odd) fused with downsampling by ``factor``.

    The FIR filter (normalised, times ``gain``) with padding ``((p + 1) // 2, p // 2)``,
    ``p = kh − factor + k − 1``, then a 'VALID' convolution with stride ``factor``: one zero
    padding at the input, as score_sde. Output ``[B, H // f, W // f, C_out]``.
    """
    _positive_int(factor, "factor")
    size = _odd_square(w)
    k = setup_kernel(kernel) * gain
    p = k.shape[0] - factor + size - 1
    h = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return conv_general_dilated(
        h,
        w.astype(x.dtype),
        window_strides=(factor, factor),
        padding="VALID",
        dimension_numbers=_DIMENSION_NUMBERS,
    )


class Conv2d(nn.Module):
    """A k×k convolution with FIR upsampling (``up``) or downsampling (``down``) by 2 fused in.

    Parameters ``weight`` ``[k, k, C_in, features]`` (``kernel_init``) and, with ``use_bias``,
    ``bias`` ``[features]`` (zeros), named as score_sde's ``Conv2d`` so the parameter trees
    agree. Without ``up`` or ``down`` it is a 'SAME' convolution.
    """

    features: int
    kernel_size: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: tuple[int, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()

    def __post_init__(self) -> None:
        if self.up and self.down:
            raise ValueError("Conv2d: up=True and down=True are exclusive; set at most one")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size} is not allowed; use an odd size >= 1")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        w = self.param("weight", self.kernel_init, shape)
        if self.up:
            y = upsample_conv_2d(x, w, self.resample_kernel)
        elif self.down:
            y = conv_downsample_2d(x, w, self.resample_kernel)
        else:
            y = conv_general_dilated(
                x, w.astype(x.dtype), (1, 1), "SAME", dimension_numbers=_DIMENSION_NUMBERS
            )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
        return y
