"""Image data: tfds loaders (prepared data only, no download), score_sde's resizing, the digits set.

Each split is loaded whole into host memory as uint8 ``[N, H, W, C]`` with int32 labels and
served by :class:`~sgm_jax.data.source.DataSource` (which converts and augments per batch).
Images whose size differs from ``image_size`` are resized as score_sde's ``datasets.py`` does,
bilinear with antialiasing (``tf.image.resize(..., antialias=True)``; here
``jax.image.resize(..., "linear", antialias=True)``, the same kernel), after score_sde's CelebA
crop. One difference: score_sde keeps the resized images as floats; here they are rounded to the
nearest uint8 (an error of at most 1/510 in [0, 1]), so that every split is stored as uint8
(CelebA at 64×64 takes 2 GB instead of 8 GB) and uniform dequantisation acts on integer levels.

Data sets: name (tfds name; the split behind "test"): largest ``image_size``, classes, channels.
The "test" split is the one score_sde evaluates on, or the only held-out split.

  * cifar10 (cifar10; test): 32, 10 classes, 3 channels
  * cifar100 (cifar100; test): 32, 100 classes (the fine labels), 3 channels
  * svhn_cropped (svhn_cropped; test): 32, 10 classes, 3 channels
  * imagenet32 (imagenet_resized/32x32; validation): 32, 1000 classes, 3 channels
  * celeb_a (celeb_a; validation, as score_sde): 140, unlabelled, 3 channels
  * digits (scikit-learn's load_digits; see below): 16, 10 classes, 1 channel

CelebA's largest size is its 140×140 central crop (score_sde trains at 64).

The digits set is scikit-learn's bundled ``load_digits`` (1,797 8×8 grey images with values
0–16, no download): the values are mapped to 255·v/16 and rounded to uint8, at their own 8×8
(the digits configs) or resized bilinearly (half-pixel centres, the same resize as above) to
``image_size`` up to 16. Bilinear upsampling keeps the strokes smooth (pixel replication would
leave 2×2 blocks) and every value a convex combination of the originals, so inside [0, 255]. Its split is deterministic: example i
(in scikit-learn's order) is a test example when i mod 5 = 4 (359 images), a training example
otherwise (1,438).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.data.source import SPLITS, DataSource, Split, host_cpu

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """One image data set: ``tfds_name`` (None for the bundled digits), the stored splits behind
    "train" and "test" (``splits``), the largest image size it can give (``max_size``),
    ``num_channels``, ``num_classes`` (0: unlabelled) and the side of score_sde's central square
    crop (``crop``, None: no crop)."""

    tfds_name: str | None
    splits: tuple[str, str]
    max_size: int
    num_channels: int
    num_classes: int
    crop: int | None = None


IMAGE_DATASETS: dict[str, ImageDataset] = {
    "cifar10": ImageDataset("cifar10", ("train", "test"), 32, 3, 10),
    "cifar100": ImageDataset("cifar100", ("train", "test"), 32, 3, 100),
    "svhn_cropped": ImageDataset("svhn_cropped", ("train", "test"), 32, 3, 10),
    "imagenet32": ImageDataset("imagenet_resized/32x32", ("train", "validation"), 32, 3, 1000),
    "celeb_a": ImageDataset("celeb_a", ("train", "validation"), 140, 3, 0, crop=140),
    "digits": ImageDataset(None, ("train", "test"), 16, 1, 10),
}

#: Examples per tfds read: each chunk is decoded, cropped and resized before the next is read.
_CHUNK = 1024
#: Every DIGITS_TEST_EVERY-th digit (i mod 5 = 4) is a test example.
DIGITS_TEST_EVERY = 5


@functools.partial(jax.jit, static_argnums=1)
def _resize(images: Array, size: int) -> Array:
    n, _, _, channels = images.shape
    out = jax.image.resize(images.astype(jnp.float32), (n, size, size, channels), "linear",
                           antialias=True)
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Images ``[N, H, W, C]`` (values in [0, 255]) → uint8 ``[N, size, size, C]``: bilinear
    resize with antialiasing (score_sde's ``tf.image.resize(img, [size, size], antialias=True)``)
    rounded to the nearest integer; computed on the host CPU device."""
    with jax.default_device(host_cpu()):
        return np.asarray(_resize(np.asarray(images), size))


def central_crop(images: np.ndarray, size: int) -> np.ndarray:
    """score_sde's ``central_crop``: the ``size``×``size`` square of ``[N, H, W, C]`` images at
    offset ((H − size)//2, (W − size)//2) (CelebA 218×178, size 140: offset (39, 19))."""
    top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
    return images[:, top:top + size, left:left + size]


def _fit(images: np.ndarray, crop: int | None, image_size: int) -> np.ndarray:
    images = images if crop is None else central_crop(images, crop)
    if images.shape[1:3] == (image_size, image_size):
        return images
    return resize_images(images, image_size)


def _not_prepared(name: str, builder) -> FileNotFoundError:
    root = builder.data_dir_root
    return FileNotFoundError(
        f"the tfds data set {name!r} is not prepared in the tfds data_dir {root} (there is no "
        f"{builder.data_path}), and nothing is downloaded at run time. Prepare it on a machine "
        f"with internet access with `tfds build {name} --data_dir=DIR` and copy "
        f"DIR/{name.split('/')[0]} into {root}, or point data_dir= (or the TFDS_DATA_DIR "
        f"environment variable) at a directory that holds the prepared data set.")


def _open(name: str, split: str, data_dir: str | None):
    """``split`` of the tfds data set ``name`` as a tf.data pipeline of chunks, or
    ``FileNotFoundError`` when it is not prepared in ``data_dir`` (tfds's own check, which
    ``tfds.testing.mock_data`` replaces along with the data)."""
    import tensorflow_datasets as tfds  # imports TensorFlow: only when loading

    builder = tfds.builder(name, data_dir=data_dir)
    try:
        return builder.as_dataset(split=split, batch_size=_CHUNK, shuffle_files=False)
    except AssertionError:
        if builder.data_path.exists():
            raise
        raise _not_prepared(name, builder) from None


def _load_tfds(spec: ImageDataset, split: str, image_size: int, data_dir: str | None) -> Split:
    import tensorflow_datasets as tfds

    chunks = _open(spec.tfds_name, spec.splits[SPLITS.index(split)], data_dir)
    images, labels = [], []
    for chunk in tfds.as_numpy(chunks):
        images.append(_fit(chunk["image"], spec.crop, image_size))
        labels.append(chunk.get("label", np.zeros(len(chunk["image"]), np.int32)))
    return Split(np.concatenate(images), np.concatenate(labels).astype(np.int32))


def _load_digits(split: str, image_size: int) -> Split:
    from sklearn.datasets import load_digits

    digits = load_digits()
    is_test = np.arange(len(digits.target)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    keep = is_test if split == "test" else ~is_test
    images = (digits.images[keep, :, :, None] * (255.0 / 16.0)).astype(np.float32)
    if image_size != images.shape[1]:
        images = resize_images(images, image_size)
    else:
        images = np.round(images).astype(np.uint8)
    return Split(images, digits.target[keep].astype(np.int32))


def _check_request(name: str, image_size: int, num_channels: int | None) -> ImageDataset:
    check_choice("image data set", name, sorted(IMAGE_DATASETS))
    spec = IMAGE_DATASETS[name]
    check_positive_int("image_size", image_size)
    if image_size > spec.max_size:
        raise ValueError(
            f"image_size={image_size} is larger than {name} can give; allowed: 1 to "
            f"{spec.max_size}.")
    if num_channels is not None and num_channels != spec.num_channels:
        raise ValueError(
            f"num_channels={num_channels!r} does not match {name}, which has "
            f"{spec.num_channels}; allowed: {spec.num_channels}.")
    return spec


def load_split(name: str, split: str, *, image_size: int, data_dir: str | None = None) -> Split:
    """``split`` ("train" or "test") of the image data set ``name`` of :data:`IMAGE_DATASETS` as
    uint8 ``[N, image_size, image_size, C]`` with int32 labels (zeros for CelebA).

    tfds sets are read from the prepared ``data_dir`` (default: tfds's default, which honours
    ``TFDS_DATA_DIR``) and never downloaded: ``FileNotFoundError`` saying how to prepare the set
    when it is not there. ``ValueError`` for an unknown name or split or an image size the set
    cannot give.
    """
    spec = _check_request(name, image_size, None)
    check_choice("split", split, SPLITS)
    if spec.tfds_name is None:
        return _load_digits(split, image_size)
    return _load_tfds(spec, split, image_size, data_dir)


def image_source(
    name: str,
    *,
    image_size: int,
    batch_size: int,
    batch_key: Array,
    aug_key: Array,
    random_flip: bool,
    uniform_dequantization: bool,
    centered: bool,
    num_channels: int | None = None,
    data_dir: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> DataSource:
    """The data source of the image data set ``name`` (see :data:`IMAGE_DATASETS`), with
    score_sde's preprocessing (``data.random_flip``, ``uniform_dequantization``,
    ``data.centered``). Each split is loaded on its first use (``DataSource.load`` loads the
    training split at once, so that a tfds set that is not prepared fails before a run's first
    step). ``num_channels``, when given, must be the set's channel count. See
    :class:`~sgm_jax.data.source.DataSource`.
    """
    spec = _check_request(name, image_size, num_channels)
    return DataSource(
        functools.partial(load_split, name, image_size=image_size, data_dir=data_dir),
        event_shape=(image_size, image_size, spec.num_channels), images=True,
        batch_size=batch_size, batch_key=batch_key, aug_key=aug_key, random_flip=random_flip,
        uniform_dequantization=uniform_dequantization, centered=centered,
        num_classes=spec.num_classes, process_index=process_index, process_count=process_count)
