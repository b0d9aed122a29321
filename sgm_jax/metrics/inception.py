"""The FID Inception-v3 network in Flax, its input preprocessing, and loading of its weights.

The network is the 2015 TensorFlow Inception graph (``inception-2015-12-05``) that the FID code
of Heusel et al. (TTUR) evaluates, in the form pytorch-fid ports it (``pytorch_fid/inception.py``:
``fid_inception_v3``). It differs from torchvision's Inception-v3 in three places, which this
module follows:

* ``Mixed_5b/5c/5d`` (``FIDInceptionA``), ``Mixed_6b…6e`` (``FIDInceptionC``) and ``Mixed_7b``
  (``FIDInceptionE_1``) average-pool their pool branch over the *valid* pixels of the 3×3 window
  only (``count_include_pad=False``, as TensorFlow's ``SAME`` average pool);
* ``Mixed_7c`` (``FIDInceptionE_2``) max-pools in its pool branch;
* the classifier has 1008 outputs (the graph's ``softmax/logits``).

As in torchvision, every convolution has no bias and is followed by batch normalisation (here in
inference mode, from the stored statistics, ε = 0.001) and a ReLU.

Inputs are preprocessed as pytorch-fid's ``InceptionV3(resize_input=True,
normalize_input=True)``: uint8 images [N, H, W, 3] → float in [0, 1] → bilinear resize to
299 × 299 exactly as ``F.interpolate(mode="bilinear", align_corners=False)`` without antialiasing
(:func:`resize_bilinear`) → 2x − 1 ∈ [−1, 1]. The network returns the 2048-d global average pool
before the classifier (pytorch-fid's block 3, the FID features) and the classifier's 1008 logits
(the output of ``fid_inception_v3``; its bias included).

Convolutions and matrix products run at ``Precision.HIGHEST``, so that they are float32 on every
backend (the default precision on recent GPUs rounds their inputs to TF32's 10-bit mantissa).

Weights come from pytorch-fid's published file, converted once to ``.npz`` by
``python -m sgm_jax.metrics.convert_inception`` (see :mod:`sgm_jax.metrics.convert_inception`
for the layout); :func:`load_inception` reads that file without torch.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sgm_jax import _validation as val
from sgm_jax.pth import file_sha256

Array = jax.Array

__all__ = [
    "FIDInceptionV3",
    "resize_bilinear",
    "preprocess",
    "inception_variable_shapes",
    "check_inception_arrays",
    "load_inception",
    "inception_weights_hash",
    "FID_WEIGHTS_URL",
]

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL_FEATURES = 2048
BN_EPSILON = 1e-3
_HIGHEST = jax.lax.Precision.HIGHEST

WEIGHTS_HELP = (
    "The FID Inception weights are pytorch-fid's pt_inception-2015-12-05-6726825d.pth, published "
    f"at {FID_WEIGHTS_URL} . Download it and convert it once (no torch needed) with\n"
    "    python -m sgm_jax.metrics.convert_inception pt_inception-2015-12-05-6726825d.pth "
    "inception_fid.npz\n"
    "and pass the path of inception_fid.npz.")


# --------------------------------------------------------------------------------------------
# Preprocessing.


def _bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] interpolation matrix of ``F.interpolate(mode="bilinear",
    align_corners=False)`` along one axis.

    Output pixel o samples the input at s = max((o + ½)·r − ½, 0) with r = in/out, between
    pixels i₀ = min(⌊s⌋, in − 1) and i₁ = min(i₀ + 1, in − 1) with weights 1 − λ and
    λ = clip(s − i₀, 0, 1) (PyTorch's ``area_pixel_compute_source_index`` and
    ``guard_index_and_lambda``; no antialiasing when downsampling). As PyTorch's kernel for
    float32 images computes them, r and λ are float32 and s is one fused multiply-add
    fma(r, o + ½, −½) rounded once to float32: these weights equal those of PyTorch 2.14's
    x86-64 CPU kernel exactly, whereas a float64 s moves s by up to 3e-5 pixels at 300-pixel
    sizes and an unfused float32 one by up to one float32 ulp. (The product of r and o + ½ is
    exact in float64, so rounding the float64 value once gives the fma.) Equal sizes give the
    identity.
    """
    f32 = np.float32
    if in_size == out_size:
        return np.eye(out_size, dtype=f32)
    ratio = np.float64(f32(in_size) / f32(out_size))
    src = ((np.arange(out_size) + 0.5) * ratio - 0.5).astype(f32)
    src = np.maximum(src, f32(0))
    lower = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = np.clip(src - lower.astype(f32), f32(0), f32(1))
    weights = np.zeros((out_size, in_size), f32)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), f32(1) - frac)
    np.add.at(weights, (rows, upper), frac)
    return weights


def resize_bilinear(images: Array, size: tuple[int, int]) -> Array:
    """Resize [N, H, W, C] float images to [N, *size, C] as PyTorch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialias).

    Separable: one [out, in] interpolation matrix per spatial axis (:func:`_bilinear_weights`),
    applied as two HIGHEST-precision contractions.
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape [N, H, W, C]; got shape {images.shape}.")
    dtype = images.dtype
    rows = jnp.asarray(_bilinear_weights(images.shape[1], size[0]), dtype)
    cols = jnp.asarray(_bilinear_weights(images.shape[2], size[1]), dtype)
    out = jnp.einsum("oh,nhwc->nowc", rows, images, precision=_HIGHEST)
    return jnp.einsum("pw,nowc->nopc", cols, out, precision=_HIGHEST)


def preprocess(images: Array) -> Array:
    """uint8 images [N, H, W, 3] → float32 [N, 299, 299, 3] in [−1, 1], as pytorch-fid's
    ``InceptionV3(resize_input=True, normalize_input=True)``: x/255, bilinear resize
    (:func:`resize_bilinear`), then 2x − 1."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return 2.0 * resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE)) - 1.0


# --------------------------------------------------------------------------------------------
# The network. Submodule names are those of torchvision's Inception3, so that a PyTorch state
# dict maps onto the parameters by name alone.


class BasicConv2d(nn.Module):
    """Convolution without bias → batch norm (running statistics, ε = 0.001) → ReLU
    (torchvision's ``BasicConv2d``). ``padding`` is symmetric zero padding per spatial axis."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                    padding=tuple((p, p) for p in self.padding), use_bias=False,
                    precision=_HIGHEST, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_valid(x: Array) -> Array:
    """3×3 average pool, stride 1, padding 1, over valid pixels only (count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_same(x: Array) -> Array:
    """3×3 max pool, stride 1, padding 1 (padding never wins: it is −∞)."""
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_reduce(x: Array) -> Array:
    """3×3 max pool, stride 2, no padding (``nn.MaxPool2d(3, stride=2)``)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
    """35×35 block (``FIDInceptionA``): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_valid(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35×35 → 17×17 reduction (``Mixed_6a``): 3×3/2 | 1×1→3×3→3×3/2 | max-pool/2."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_reduce(x)], axis=-1)


class InceptionC(nn.Module):
    """17×17 block (``FIDInceptionC``) with factorised 7×7 convolutions and an avg-pool branch."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_valid(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17×17 → 8×8 reduction (``Mixed_7a``): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool/2."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_reduce(x)], axis=-1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 branches. ``pool="avg"`` is ``FIDInceptionE_1``
    (``Mixed_7b``, average over valid pixels), ``pool="max"`` is ``FIDInceptionE_2``
    (``Mixed_7c``, max pool)."""

    pool: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        val.check_choice("pool", self.pool, ("avg", "max"))
        b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = _avg_pool_valid(x) if self.pool == "avg" else _max_pool_same(x)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``fid_inception_v3`` on preprocessed images [N, H, W, 3] in [−1, 1].

    Returns ``(pool, logits)``: the global average pool before the classifier [N, 2048] and the
    classifier output [N, num_classes] (dropout is the identity at inference).
    """

    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_reduce(x)
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_reduce(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, precision=_HIGHEST, name="fc")(pool)
        return pool, logits


# --------------------------------------------------------------------------------------------
# Weights.


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0), dummy)
    flat = traverse_util.flatten_dict(shapes, sep="/")
    return tuple((name, tuple(leaf.shape)) for name, leaf in flat.items())


def inception_variable_shapes() -> dict[str, tuple[int, ...]]:
    """Every variable of :class:`FIDInceptionV3` as ``{"collection/module/…/leaf": shape}``.

    These are the keys and shapes of a converted weight file: ``params/…/conv/kernel`` (HWIO),
    ``params/…/bn/{scale,bias}``, ``batch_stats/…/bn/{mean,var}``, ``params/fc/{kernel,bias}``.
    """
    return dict(_variable_shapes())


def write_random_inception_weights(path: str, seed: int = 0) -> str:
    """A weight file in the converted layout with random weights: unit batch-norm variances and
    scales, zero means and biases, kernels N(0, 1/fan_in). For tests and speed benchmarks where
    the real file is not at hand (the network's cost and wiring do not depend on the weights);
    returns ``path``."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in inception_variable_shapes().items():
        if name.endswith(("var", "scale")):
            arrays[name] = np.ones(shape, np.float32)
        elif name.endswith(("mean", "bias")):
            arrays[name] = np.zeros(shape, np.float32)
        else:
            arrays[name] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
                            ).astype(np.float32)
    np.savez(path, **arrays)
    return path


def check_inception_arrays(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Raise ``ValueError`` unless ``arrays`` has exactly the keys and shapes of
    :func:`inception_variable_shapes`; ``source`` names where they came from."""
    expected = inception_variable_shapes()
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong = sorted(f"{k}: {tuple(np.shape(arrays[k]))} (expected {expected[k]})"
                   for k in set(expected) & set(arrays)
                   if tuple(np.shape(arrays[k])) != expected[k])
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source} does not hold the FID Inception weights: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:3]}).\n{WEIGHTS_HELP}")


def _check_weights_path(weights_path) -> str:
    if weights_path is None or not os.fspath(weights_path):
        raise ValueError(f"No Inception weights configured (weights_path={weights_path!r}).\n"
                         f"{WEIGHTS_HELP}")
    path = os.fspath(weights_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception weights file {path!r} does not exist.\n{WEIGHTS_HELP}")
    return path


def inception_weights_hash(weights_path) -> str:
    """SHA-256 (hex) of the weight file, to record which weights produced a result."""
    return file_sha256(_check_weights_path(weights_path))


def _read_variables(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"{path!r} is not a converted Inception .npz file ({err}).\n"
                         f"{WEIGHTS_HELP}") from err
    check_inception_arrays(arrays, repr(path))
    flat = {name: jnp.asarray(value, jnp.float32) for name, value in arrays.items()}
    return traverse_util.unflatten_dict(flat, sep="/")


def load_inception(weights_path, *, batch_size: int = 50
                   ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The FID Inception network with the weights of a converted ``.npz`` file.

    Args:
      weights_path: path of the file written by ``python -m sgm_jax.metrics.convert_inception``
        from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.
      batch_size: the most images per jitted forward pass; pytorch-fid's default is 50. A call
        of N images runs batches of min(batch_size, N) (the last one zero-padded): memory stays
        bounded, a call of fewer images does no padded work (an evaluation's sample units are
        often smaller than 50), and the calls of one size share one compilation.
    Returns:
      ``fn(images) -> (pool, logits)``: ``images`` uint8 [N, H, W, 3] (any H, W; resized to
      299 × 299 as pytorch-fid), ``pool`` float32 [N, 2048] (the FID features) and ``logits``
      float32 [N, 1008], as NumPy arrays.
    Raises:
      ValueError: when ``weights_path`` is None or empty, or the file is not a converted
        Inception file; FileNotFoundError when it does not exist. Both say where to get the
        weights and how to convert them. Record :func:`inception_weights_hash` of the same path
        with results.
    """
    path = _check_weights_path(weights_path)
    val.check_positive_int("batch_size", batch_size)
    variables = jax.device_put(_read_variables(path))
    model = FIDInceptionV3()

    @jax.jit
    def forward(variables, images):
        return model.apply(variables, preprocess(images))

    def fn(images) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError("images must be uint8 with shape [N, H, W, 3]; got dtype "
                             f"{images.dtype} and shape {images.shape}.")
        num = images.shape[0]
        if num == 0:
            return (np.zeros((0, POOL_FEATURES), np.float32),
                    np.zeros((0, NUM_CLASSES), np.float32))
        size = min(batch_size, num)
        pools, logits, pending = [], [], None
        for start in range(0, num, size):
            batch = images[start:start + size]
            if batch.shape[0] < size:
                batch = np.pad(batch, ((0, size - batch.shape[0]),) + ((0, 0),) * 3)
            outputs = forward(variables, batch)  # dispatched before the previous one is fetched
            if pending is not None:
                pools.append(np.asarray(pending[0]))
                logits.append(np.asarray(pending[1]))
            pending = outputs
        pools.append(np.asarray(pending[0]))
        logits.append(np.asarray(pending[1]))
        return np.concatenate(pools)[:num], np.concatenate(logits)[:num]

    return fn
