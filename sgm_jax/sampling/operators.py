"""Masks and linear forward operators A for inverse problems y = A(x) + n (inpainting,
super-resolution, deblurring), as pure JAX functions of images [B, H, W, C].

Masks are 1 where a pixel is known and 0 where it is to be drawn, of shape [H, W, 1] (every
channel of a pixel alike), and broadcast against [B, H, W, C]. The operators are linear maps
``[B, H, W, C] -> [B, *measurement]`` for :func:`sgm_jax.sampling.dps_sampler`.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import check_choice, check_positive, check_positive_int
from sgm_jax.types import Array

ForwardOperator = Callable[[Array], Array]

#: The named masks of :func:`inpainting_mask`: the region named is the one to be drawn.
MASKS = ("left_half", "centre_square", "random", "file")
#: The forward operators of :func:`forward_operator`.
OPERATORS = ("mask", "pool", "blur")


def _check_image_shape(image_shape) -> tuple[int, int]:
    if len(image_shape) != 3 or any(not isinstance(n, (int, np.integer)) or n < 1
                                    for n in image_shape):
        raise ValueError(f"image_shape must be (H, W, C) of positive ints; got {image_shape!r}.")
    return int(image_shape[0]), int(image_shape[1])


def load_mask(path: str, image_shape) -> np.ndarray:
    """A mask [H, W, 1] from a ``.npy`` array ([H, W] or [H, W, 1] of 0/1) or an image file (a
    PNG read with matplotlib, its first channel thresholded at half its range: bright = known)."""
    height, width = _check_image_shape(image_shape)
    if not os.path.exists(path):
        raise ValueError(f"mask file {path!r} does not exist.")
    if path.endswith(".npy"):
        values = np.load(path)
    else:
        import matplotlib.image

        image = np.asarray(matplotlib.image.imread(path), np.float64)
        image = image[..., 0] if image.ndim == 3 else image
        values = (image > 0.5 * (255 if image.max() > 1 else 1)).astype(np.float32)
    values = np.asarray(values, np.float32)
    values = values[..., None] if values.ndim == 2 else values
    if values.shape != (height, width, 1):
        raise ValueError(f"the mask in {path!r} must have shape [{height}, {width}] or "
                         f"[{height}, {width}, 1] (the images' size); got {np.shape(values)}.")
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"the mask in {path!r} must hold 0 (unknown) and 1 (known) only.")
    return values


def inpainting_mask(kind: str, image_shape, *, fraction: float = 0.5, key: Array | None = None,
                    path: str = "") -> np.ndarray:
    """A mask [H, W, 1] (1 known, 0 to draw): ``"left_half"`` hides the ⌊W/2⌋ left columns,
    ``"centre_square"`` the centred ⌊H/2⌋ × ⌊W/2⌋ square, ``"random"`` a uniformly random
    ``fraction`` of the pixels (exactly round(fraction · H W) of them, drawn with ``key``),
    ``"file"`` the mask stored in ``path`` (:func:`load_mask`)."""
    check_choice("mask", kind, MASKS)
    height, width = _check_image_shape(image_shape)
    mask = np.ones((height, width, 1), np.float32)
    if kind == "left_half":
        mask[:, : width // 2] = 0
    elif kind == "centre_square":
        top, left = (height - height // 2) // 2, (width - width // 2) // 2
        mask[top:top + height // 2, left:left + width // 2] = 0
    elif kind == "random":
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction (of the pixels to draw) must lie in [0, 1]; got "
                             f"{fraction!r}.")
        if key is None:
            raise ValueError("a random mask needs a key.")
        hidden = np.asarray(jax.random.permutation(key, height * width))[
            : round(fraction * height * width)]
        mask.reshape(-1)[hidden] = 0
    else:
        mask = load_mask(path, image_shape)
    return mask


def mask_operator(mask) -> ForwardOperator:
    """A(x) = m ⊙ x: the pixels where the mask m (broadcastable to x) is 1, zeros elsewhere."""
    mask = jnp.asarray(mask)
    return lambda x: x * mask.astype(x.dtype)


def average_pool_operator(factor: int) -> ForwardOperator:
    """A(x) = the mean of each k × k block (k = ``factor``): [B, H, W, C] -> [B, H/k, W/k, C],
    H and W multiples of k (super-resolution by k)."""
    check_positive_int("factor", factor)

    def pool(x: Array) -> Array:
        b, h, w, c = x.shape
        if h % factor or w % factor:
            raise ValueError(f"average pooling by {factor} needs H and W divisible by it; got "
                             f"images of shape {x.shape}.")
        return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))

    return pool


def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """The normalised 1-D Gaussian kernel of std ``sigma`` (pixels) with ``size`` taps (odd;
    default 2⌈3σ⌉ + 1)."""
    check_positive("sigma", sigma)
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else size
    check_positive_int("size", size)
    if size % 2 == 0:
        raise ValueError(f"size must be odd (a centred kernel); got {size}.")
    offsets = np.arange(size) - size // 2
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur_operator(sigma: float, size: int | None = None) -> ForwardOperator:
    """A(x) = x convolved with a separable Gaussian of std ``sigma`` pixels (``size`` taps, see
    :func:`gaussian_kernel`), each channel alone, the border replicated: [B, H, W, C] -> same."""
    kernel = gaussian_kernel(sigma, size)
    half = len(kernel) // 2

    def blur(x: Array) -> Array:
        k = jnp.asarray(kernel, x.dtype)
        x = jnp.pad(x, ((0, 0), (half, half), (half, half), (0, 0)), mode="edge")
        h, w = x.shape[1] - 2 * half, x.shape[2] - 2 * half
        x = sum(k[i] * x[:, i:i + h] for i in range(len(kernel)))
        return sum(k[i] * x[:, :, i:i + w] for i in range(len(kernel)))

    return blur


def forward_operator(kind: str, *, mask=None, factor: int = 2, sigma: float = 1.0,
                     size: int | None = None) -> ForwardOperator:
    """The operator of ``kind``: ``"mask"`` (:func:`mask_operator` of ``mask``), ``"pool"``
    (:func:`average_pool_operator` by ``factor``) or ``"blur"`` (:func:`gaussian_blur_operator`
    with ``sigma`` and ``size``)."""
    check_choice("operator", kind, OPERATORS)
    if kind == "mask":
        if mask is None:
            raise ValueError("the 'mask' operator needs a mask.")
        return mask_operator(mask)
    if kind == "pool":
        return average_pool_operator(factor)
    return gaussian_blur_operator(sigma, size)
