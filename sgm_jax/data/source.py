"""The data-source interface and the one batching rule, for toy points and images alike.

A :class:`DataSource` holds the splits of a data set in host memory once they are first used
(uint8 images ``[N, H, W, C]`` or float32 points ``[N, *event]``, with int32 labels) and serves

  * ``train_batch(step)``: this process's rows of global training batch ``step``;
  * ``eval_batches(batch_size, split)``: this process's rows of consecutive evaluation batches,
    the last one padded and marked by a boolean ``"mask"``.

Randomness comes from two keys only. Epoch e = step // steps_per_epoch is the permutation of the
N training examples drawn by ``jax.random.permutation(jax.random.fold_in(batch_key, e), N)``;
batch ``step`` is its (step mod steps_per_epoch)-th block of ``batch_size`` indices (the
remainder of each epoch is dropped), and process p of P takes the rows
[p·B/P, (p+1)·B/P) of that block. Image augmentation (score_sde's random horizontal flip and
uniform dequantisation) of global row r of batch ``step`` uses the key
``fold_in(fold_in(aug_key, step), r)``. Every batch is therefore a pure function of
(keys, step): a resumed run sees exactly the batches it would have seen, and the global batch
does not depend on how many processes share it. All of this is computed on the host CPU device.

Images are mapped to model space as score_sde's ``datasets.get_dataset`` and
``get_data_scaler`` do: x = n/255 ∈ [0, 1] for a stored value n (or (n + u)/256 with uniform
dequantisation), then 2x − 1 when ``centered``. Points are stored in model space.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax._validation import check_choice, check_positive_int

Array = jax.Array
Batch = dict[str, np.ndarray]

#: The split names every source accepts: "train" and "test" (the split evaluation uses; which
#: stored split that is depends on the data set).
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in host memory: ``x``, uint8 images ``[N, H, W, C]`` (values 0–255) or float32
    points ``[N, *event]`` in model space, and int32 ``labels`` ``[N]`` (zeros when unlabelled)."""

    x: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        x, labels = self.x, self.labels
        if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.float32):
            raise ValueError(
                "Split.x must be a NumPy array of dtype uint8 (images) or float32 (points); got "
                f"{type(x).__name__} of dtype {getattr(x, 'dtype', None)}.")
        if x.dtype == np.uint8 and x.ndim != 4:
            raise ValueError(f"uint8 images must have shape [N, H, W, C]; got shape {x.shape}.")
        if x.ndim < 2 or x.shape[0] < 1:
            raise ValueError(f"Split.x must have shape [N, *event] with N >= 1; got {x.shape}.")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.shape != (
                x.shape[0],):
            raise ValueError(
                f"Split.labels must be an int32 NumPy array of shape [N] = ({x.shape[0]},); got "
                f"{getattr(labels, 'dtype', type(labels).__name__)} of shape "
                f"{getattr(labels, 'shape', None)}.")


def _identity(x):
    return x


def _centre(x):
    return x * 2.0 - 1.0


def _uncentre(x):
    return (x + 1.0) / 2.0


def get_data_scaler(centered: bool) -> Callable:
    """score_sde's ``get_data_scaler``: x ∈ [0, 1] ↦ 2x − 1 when ``centered``, else x."""
    return _centre if centered else _identity


def get_data_inverse_scaler(centered: bool) -> Callable:
    """score_sde's ``get_data_inverse_scaler``: x ↦ (x + 1)/2 when ``centered``, else x."""
    return _uncentre if centered else _identity


def to_unit_interval(images: np.ndarray) -> np.ndarray:
    """uint8 values n ↦ float32 n/255 ∈ [0, 1] (score_sde's ``tf.image.convert_image_dtype``),
    computed in NumPy (XLA may turn the division into a multiplication, one ulp off)."""
    return images.astype(np.float32) / np.float32(255.0)


#: Dequantisation noise u is drawn on the grid k/2^16: then n + u (n ≤ 255) is exact in float32,
#: so (n + u)/256 lies in [n/256, (n + 1)/256) without rounding up to the next level.
_NOISE_LEVELS = 2.0**16


@functools.partial(jax.jit, static_argnames=("random_flip", "uniform_dequantization"))
def _augment(images, key, step, rows, *, random_flip: bool, uniform_dequantization: bool):
    """The random part of score_sde's training preprocessing of uint8 images ``[B, H, W, C]``:
    ``(images, u)``, the images flipped left-right with probability ½ each (when
    ``random_flip``) and the dequantisation noise u ~ U[0, 1) of the same shape (when
    ``uniform_dequantization``, else None). Row i uses the key
    ``fold_in(fold_in(key, step), rows[i])``, split into a flip key and a noise key."""
    step_key = jax.random.fold_in(key, step)

    def one(image, row):
        flip_key, noise_key = jax.random.split(jax.random.fold_in(step_key, row))
        if random_flip:
            image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
        if not uniform_dequantization:
            return image, None
        bits = jax.random.bits(noise_key, image.shape, jnp.uint16)
        return image, bits.astype(jnp.float32) / _NOISE_LEVELS

    return jax.vmap(one)(images, rows)


def host_cpu() -> jax.Device:
    """This process's CPU device (in a multi-process run ``jax.devices("cpu")`` lists every
    process's CPUs, and only the local ones can be read)."""
    return jax.local_devices(backend="cpu")[0]


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


class DataSource:
    """Batches of one data set for training and evaluation (see the module docstring).

    Nothing is read when the source is made: each split is loaded on its first use (then kept),
    so building a run's objects reads no data, and a command that needs no training data
    (evaluation of a converted checkpoint, sampling) never loads it. :meth:`load` reads the
    training split at once, for a run that wants a missing data set to fail before its first
    step.

    Args:
      load_split: ``split -> Split`` for ``split`` in :data:`SPLITS`.
      event_shape: the shape of one example, ``(H, W, C)`` for images; every split loaded must
        have it.
      images: True for uint8 images, False for float32 points.
      batch_size: the global training batch size B; it must divide by ``process_count`` and be
        at most the number N of training examples (checked when the training split is loaded).
      batch_key: the key of the epoch permutations.
      aug_key: the key of the augmentation; needed when ``random_flip`` or
        ``uniform_dequantization`` is set.
      random_flip, uniform_dequantization, centered: score_sde's ``data.random_flip``,
        ``uniform_dequantization`` and ``data.centered``; for uint8 images only.
      num_classes: the number of classes (0 when unlabelled).
      process_index, process_count: this process and the number of processes (default
        ``jax.process_index()`` / ``jax.process_count()``).

    Attributes: ``event_shape``, ``num_classes``, ``batch_size`` (global), ``local_batch_size``
    (B / process_count), ``steps_per_epoch`` (N // B), ``process_index``, ``process_count``,
    ``scaler`` / ``inverse_scaler`` (between [0, 1] and model space), ``points`` / ``labels``
    (the training split as stored: float32 points for toy data, uint8 images for images).
    """

    def __init__(
        self,
        load_split: Callable[[str], Split],
        *,
        event_shape: tuple[int, ...],
        images: bool,
        batch_size: int,
        batch_key: Array,
        aug_key: Array | None = None,
        random_flip: bool = False,
        uniform_dequantization: bool = False,
        centered: bool = False,
        num_classes: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        self.process_count = jax.process_count() if process_count is None else process_count
        self.process_index = jax.process_index() if process_index is None else process_index
        check_positive_int("process_count", self.process_count)
        if (isinstance(self.process_index, bool)
                or not isinstance(self.process_index, (int, np.integer))
                or not 0 <= self.process_index < self.process_count):
            raise ValueError(
                f"process_index must be an integer in [0, {self.process_count}); "
                f"got {self.process_index!r}.")
        event_shape = tuple(event_shape)
        if not event_shape or any(isinstance(n, bool) or not isinstance(n, (int, np.integer))
                                  or n < 1 for n in event_shape):
            raise ValueError(f"event_shape must be a non-empty tuple of positive integers; got "
                             f"{event_shape!r}.")
        self.event_shape = tuple(int(n) for n in event_shape)
        self.batch_size = batch_size
        self.local_batch_size = self._local_size("batch_size", batch_size)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or (
                num_classes < 0):
            raise ValueError(f"num_classes must be an integer >= 0; got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self._is_image = _check_bool("images", images)
        self._random_flip = _check_bool("random_flip", random_flip)
        self._dequantize = _check_bool("uniform_dequantization", uniform_dequantization)
        centered = _check_bool("centered", centered)
        if self._is_image and len(self.event_shape) != 3:
            raise ValueError(f"images need event_shape (H, W, C); got {self.event_shape}.")
        if not self._is_image and (self._random_flip or self._dequantize or centered):
            raise ValueError(
                "random_flip, uniform_dequantization and centered apply to uint8 images only; "
                f"got them set ({random_flip}, {uniform_dequantization}, {centered}) for float32 "
                f"points of shape {self.event_shape}.")
        if (self._random_flip or self._dequantize) and aug_key is None:
            raise ValueError(
                "aug_key must be a PRNG key when random_flip or uniform_dequantization is set; "
                "got None.")

        self._load_split = load_split
        self._splits: dict[str, Split] = {}
        self.scaler = get_data_scaler(centered)
        self.inverse_scaler = get_data_inverse_scaler(centered)
        self._batch_key = jax.device_put(batch_key, host_cpu())
        self._aug_key = None if aug_key is None else jax.device_put(aug_key, host_cpu())
        self._rows = self.process_index * self.local_batch_size + np.arange(
            self.local_batch_size)
        self._epoch_permutation = (-1, None)

    def load(self) -> None:
        """Load the training split now (a data set that is not there fails here)."""
        self._split("train")

    @property
    def steps_per_epoch(self) -> int:
        """N // B: the training batches of one epoch (the remainder is dropped)."""
        return self.num_eval_examples("train") // self.batch_size

    @property
    def points(self) -> np.ndarray:
        """The whole training split as stored: float32 points ``[N, *event]`` in model space
        (toy: ``[N, 2]``), or uint8 images ``[N, H, W, C]``."""
        return self._split("train").x

    @property
    def labels(self) -> np.ndarray:
        """The int32 labels ``[N]`` of the training split (zeros when unlabelled)."""
        return self._split("train").labels

    def _local_size(self, name: str, batch_size: int) -> int:
        check_positive_int(name, batch_size)
        if batch_size % self.process_count:
            raise ValueError(
                f"{name}={batch_size} is not divisible by the number of processes "
                f"({self.process_count}); allowed: a multiple of {self.process_count}.")
        return batch_size // self.process_count

    def _split(self, split: str) -> Split:
        check_choice("split", split, SPLITS)
        if split not in self._splits:
            data = self._load_split(split)
            if tuple(data.x.shape[1:]) != self.event_shape or (
                    data.x.dtype == np.uint8) != self._is_image:
                raise ValueError(
                    f"the {split} split holds {data.x.dtype} examples of shape "
                    f"{data.x.shape[1:]}; this source serves "
                    f"{'uint8 images' if self._is_image else 'float32 points'} of shape "
                    f"{self.event_shape}.")
            if split == "train" and self.batch_size > data.x.shape[0]:
                raise ValueError(
                    f"batch_size must be at most the number of training examples "
                    f"({data.x.shape[0]}); got {self.batch_size}.")
            self._splits[split] = data
        return self._splits[split]

    def _permutation(self, epoch: int) -> np.ndarray:
        cached_epoch, permutation = self._epoch_permutation
        if cached_epoch != epoch:
            with jax.default_device(host_cpu()):
                key = jax.random.fold_in(self._batch_key, epoch)
                permutation = np.asarray(jax.random.permutation(key, len(self.labels)))
            self._epoch_permutation = (epoch, permutation)
        return permutation

    def _model_space(self, x: np.ndarray) -> np.ndarray:
        return self.scaler(to_unit_interval(x)) if self._is_image else x

    def train_batch(self, step: int) -> Batch:
        """This process's rows of global training batch ``step``: ``{"x": float32
        [B_local, *event] in model space, "label": int32 [B_local]}``, augmented for images."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an integer >= 0; got {step!r}.")
        epoch, block = divmod(int(step), self.steps_per_epoch)
        index = self._permutation(epoch)[block * self.batch_size + self._rows]
        train = self._split("train")
        x, labels = train.x[index], train.labels[index]
        if not (self._random_flip or self._dequantize):  # both are False for points
            return {"x": self._model_space(x), "label": labels}
        with jax.default_device(host_cpu()):
            x, noise = jax.device_get(_augment(
                x, self._aug_key, np.uint32(step), self._rows.astype(np.uint32),
                random_flip=self._random_flip, uniform_dequantization=self._dequantize))
        # (255·x + u)/256 with x = n/255 is (n + u)/256, exact in float32.
        x = to_unit_interval(x) if noise is None else (x.astype(np.float32) + noise) / 256.0
        return {"x": self.scaler(x), "label": labels}

    def num_eval_examples(self, split: str = "test") -> int:
        """The number of examples of ``split`` ("train" or "test")."""
        return self._split(split).x.shape[0]

    def eval_batches(self, batch_size: int, split: str = "test") -> Iterator[Batch]:
        """This process's rows of the consecutive global batches of ``batch_size`` examples of
        ``split``, in order, without augmentation: ``{"x", "label", "mask"}``. The last batch is
        padded to full size with zeros (x = scaler(0) for images) and ``mask`` (bool) marks the
        real rows, so over all processes every example appears exactly once. Every process
        yields the same number of batches, ⌈N / batch_size⌉."""
        local = self._local_size("batch_size", batch_size)
        data = self._split(split)
        rows = self.process_index * local + np.arange(local)
        return self._eval_iterator(data, batch_size, rows)

    def _eval_iterator(self, data: Split, batch_size: int, rows: np.ndarray) -> Iterator[Batch]:
        num_examples = data.x.shape[0]
        for start in range(0, num_examples, batch_size):
            index = start + rows
            mask = index < num_examples
            x = np.zeros((len(rows), *data.x.shape[1:]), data.x.dtype)
            labels = np.zeros(len(rows), np.int32)
            x[mask], labels[mask] = data.x[index[mask]], data.labels[index[mask]]
            yield {"x": self._model_space(x), "label": labels, "mask": mask}
