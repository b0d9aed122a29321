"""Convert pytorch-fid's Inception weights (a PyTorch ``.pth`` state dict) to ``.npz``; no torch.

Usage::

    python -m sgm_jax.metrics.convert_inception \
        pt_inception-2015-12-05-6726825d.pth inception_fid.npz

**Reading a ``.pth`` file.** ``torch.save`` writes one of two layouts, and both are read here with
the standard library and NumPy:

* the zip layout (PyTorch ≥ 1.6): ``<root>/data.pkl`` is a pickle of the state dict, each
  storage is the raw member ``<root>/data/<key>``, and ``<root>/byteorder`` (when present) says
  ``little`` or ``big``;
* the legacy layout (``_use_new_zipfile_serialization=False``, and every file written by
  PyTorch < 1.6): consecutive pickles of a magic number, a protocol version, system information
  and the state dict, then a pickled list of storage keys, then for each key an int64
  little-endian element count followed by the storage's bytes (always little-endian).

In the state-dict pickle a tensor is the reduction ``torch._utils._rebuild_tensor_v2(storage,
storage_offset, size, stride, requires_grad, backward_hooks)`` and a storage is a persistent id
``("storage", torch.<Type>Storage, key, location, numel[, view])`` (``torch.cuda.<Type>Storage``
for tensors saved on a GPU; the bytes are the same). A restricted
:class:`pickle.Unpickler` resolves only those names, ``collections.OrderedDict`` and
``torch._utils._rebuild_parameter``, and refuses every other global, so loading a file cannot run
code. Each tensor is rebuilt as a NumPy array from its storage, element offset, size and strides
(in elements), in native byte order.

**Layout mapping.** Flax's names are torchvision's module names with ``.`` → ``/``
(:mod:`sgm_jax.metrics.inception`); for every module path ``M``:

* ``M.conv.weight`` [O, I, kh, kw] → ``params/M/conv/kernel`` [kh, kw, I, O] (OIHW → HWIO);
* ``M.bn.weight`` → ``params/M/bn/scale`` and ``M.bn.bias`` → ``params/M/bn/bias`` [C];
* ``M.bn.running_mean`` → ``batch_stats/M/bn/mean`` and ``M.bn.running_var`` →
  ``batch_stats/M/bn/var`` [C] (batch norm is applied from these statistics, ε = 0.001);
* ``M.bn.num_batches_tracked`` (a training counter) is dropped;
* ``fc.weight`` [1008, 2048] → ``params/fc/kernel`` [2048, 1008] (transposed) and ``fc.bias`` →
  ``params/fc/bias`` [1008].

Every array is stored as float32; the result is checked against the network's variables
(:func:`sgm_jax.metrics.inception.check_inception_arrays`) before it is written.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import os
import pickle
import sys
import zipfile
from typing import Mapping, Sequence

import numpy as np

from sgm_jax.metrics.inception import check_inception_arrays, inception_weights_hash

__all__ = ["read_torch_state_dict", "torch_to_flax", "convert_inception", "main"]

#: NumPy element types of the storage classes that state dicts reference.
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "LongStorage": "i8",
    "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "b1",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: str  # a key of np.dtype without byte order, e.g. "f4"


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage the pickle refers to; its bytes are read after unpickling."""

    key: str
    dtype: str
    numel: int
    view: tuple[int, int] | None  # (element offset, size) into the root storage (legacy views)


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_hooks_and_metadata) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2``."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"a tensor refers to {storage!r}, not to a storage.")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_requires_grad_and_hooks):
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals of a tensor state dict; storages become :class:`_StorageRef`."""

    _GLOBALS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:  # location ignored
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name}: only state dicts of tensors (storage "
            f"types {sorted(_STORAGE_DTYPES)}) are read.")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}.")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # (view key, element offset, view size)
            view = (int(view[1]), int(view[2]))
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]), view)


def _unpickle(data: bytes | io.BytesIO):
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    return _StateDictUnpickler(stream).load()


def _tensor_array(ref: _TensorRef, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    """The tensor's elements as a C-contiguous native-order copy (strides in elements)."""
    flat = storages[ref.storage.key]
    if ref.storage.view is not None:
        start, length = ref.storage.view
        flat = flat[start:start + length]
    if len(ref.size) != len(ref.stride):
        raise ValueError(f"tensor size {ref.size} and stride {ref.stride} differ in length.")
    native = flat.dtype.newbyteorder("=")
    if 0 in ref.size:
        return np.zeros(ref.size, native)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= flat.size:
        raise ValueError(
            f"tensor (offset {ref.offset}, size {ref.size}, stride {ref.stride}) reaches past "
            f"its storage of {flat.size} elements.")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size, strides=[s * flat.itemsize for s in ref.stride],
        writeable=False)
    return np.array(view, dtype=native, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)


def _zip_state_dict(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is a zip file but not a torch.save archive "
                             f"(expected one data.pkl; found {pickles}).")
        root = pickles[0][:-len("data.pkl")]
        obj = _unpickle(archive.read(pickles[0]))
        order = "<"
        if root + "byteorder" in names:
            mark = archive.read(root + "byteorder").decode().strip()
            if mark not in ("little", "big"):
                raise ValueError(f"{path!r}: unknown byte order {mark!r}.")
            order = "<" if mark == "little" else ">"
        storages = {}
        for ref in _storage_refs(obj):
            if ref.key not in storages:
                raw = archive.read(f"{root}data/{ref.key}")
                storages[ref.key] = np.frombuffer(raw, np.dtype(order + ref.dtype))
    return obj, storages


def _legacy_state_dict(path: str):
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())
    try:
        magic = _unpickle(stream)
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(
            f"{path!r} is neither a zip nor a legacy torch.save file ({err}).") from err
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path!r} is neither a zip nor a legacy torch.save file.")
    _unpickle(stream)  # protocol version
    _unpickle(stream)  # system information (byte order of the writer; storages are little-endian)
    obj = _unpickle(stream)
    keys = _unpickle(stream)
    refs = {ref.key: ref for ref in _storage_refs(obj)}
    storages = {}
    for key in keys:
        count = int(np.frombuffer(stream.read(8), "<i8")[0])
        dtype = np.dtype("<" + refs[key].dtype)
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"{path!r} is truncated in storage {key!r}.")
        storages[key] = np.frombuffer(raw, dtype)
    return obj, storages


def _storage_refs(obj) -> list[_StorageRef]:
    if not isinstance(obj, Mapping) or not all(
            isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
        raise ValueError("the file does not hold a state dict (a mapping of names to tensors).")
    return [tensor.storage for tensor in obj.values()]


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``torch.save``'d state dict (zip or legacy layout) as ``{name: ndarray}``; no torch."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist.")
    reader = _zip_state_dict if zipfile.is_zipfile(path) else _legacy_state_dict
    obj, storages = reader(path)
    return {name: _tensor_array(ref, storages) for name, ref in obj.items()}


_BN_LEAVES = {"weight": "params/{}/scale", "bias": "params/{}/bias",
              "running_mean": "batch_stats/{}/mean", "running_var": "batch_stats/{}/var"}


def torch_to_flax(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename and transpose a pytorch-fid Inception state dict into the ``.npz`` layout (module
    docstring table); float32 throughout. Unknown entries raise ``ValueError``."""
    out = {}
    for name, value in state_dict.items():
        module, _, leaf = name.rpartition(".")
        path = module.replace(".", "/")
        value = np.asarray(value)
        if module.endswith(".bn") and leaf == "num_batches_tracked":
            continue
        if module.endswith(".conv") and leaf == "weight" and value.ndim == 4:
            out[f"params/{path}/kernel"] = value.transpose(2, 3, 1, 0)
        elif module.endswith(".bn") and leaf in _BN_LEAVES:
            out[_BN_LEAVES[leaf].format(path)] = value
        elif module == "fc" and leaf == "weight" and value.ndim == 2:
            out["params/fc/kernel"] = value.T
        elif module == "fc" and leaf == "bias":
            out["params/fc/bias"] = value
        else:
            raise ValueError(
                f"unexpected state-dict entry {name!r} with shape {value.shape}: expected "
                "<module>.conv.weight, <module>.bn.{weight,bias,running_mean,running_var,"
                "num_batches_tracked} or fc.{weight,bias} (pytorch-fid's fid_inception_v3).")
    return {key: np.array(value, np.float32, order="C") for key, value in out.items()}


def convert_inception(source: str | os.PathLike, destination: str | os.PathLike) -> str:
    """Convert the ``.pth`` at ``source`` into the ``.npz`` at ``destination``; returns the
    SHA-256 of the written file (:func:`sgm_jax.metrics.inception.inception_weights_hash`)."""
    arrays = torch_to_flax(read_torch_state_dict(source))
    check_inception_arrays(arrays, repr(os.fspath(source)))
    with open(destination, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    return inception_weights_hash(destination)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sgm_jax.metrics.convert_inception",
        description="Convert pytorch-fid's FID Inception weights (.pth) to the .npz that "
                    "sgm_jax.metrics.load_inception reads. Needs no torch.")
    parser.add_argument("source", help="pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("destination", help="the .npz to write, e.g. inception_fid.npz")
    args = parser.parse_args(argv)
    digest = convert_inception(args.source, args.destination)
    print(f"wrote {args.destination} (sha256 {digest}) from {args.source} "
          f"(sha256 {inception_weights_hash(args.source)})")


if __name__ == "__main__":
    main(sys.argv[1:])
