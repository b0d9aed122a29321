"""Read files written by ``torch.save`` without torch: state dicts and whole checkpoints.

    state = read_torch_state_dict("pt_inception-2015-12-05-6726825d.pth")   # {name: ndarray}
    ckpt = read_pth("checkpoint_26.pth", keys=("model", "ema", "step"))   # nested, ndarrays

**The two layouts.** ``torch.save`` writes one of two layouts, and both are read here with the
standard library and NumPy:

* the zip layout (PyTorch ≥ 1.6): ``<root>/data.pkl`` is a pickle of the saved object, each
  storage is the raw member ``<root>/data/<key>``, and ``<root>/byteorder`` (when present) says
  ``little`` or ``big``;
* the legacy layout (``_use_new_zipfile_serialization=False``, and every file written by
  PyTorch < 1.6): consecutive pickles of a magic number, a protocol version, system information
  and the object, then a pickled list of storage keys, then for each key an int64 little-endian
  element count followed by the storage's bytes (always little-endian).

**What the pickle may hold.** A tensor is the reduction ``torch._utils._rebuild_tensor_v2(storage,
storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`` and a storage is a
persistent id ``("storage", torch.<Type>Storage, key, location, numel[, view])``
(``torch.cuda.<Type>Storage`` for tensors saved on a GPU; the bytes are the same). A restricted
:class:`pickle.Unpickler` resolves only those names, ``collections.OrderedDict`` and
``torch._utils._rebuild_parameter``, and refuses every other global, so reading a file cannot
run code. Everything else must be plain pickled data (dicts, lists, tuples, strings, numbers,
booleans, None): the training checkpoints of score_sde_pytorch, QCSBM and DLSM (``model`` and
``optimizer`` state dicts, the EMA's ``{decay, num_updates, shadow_params}``, ``step``) are.
Each tensor is rebuilt as a NumPy array from its storage, element offset, size and strides (in
elements), in native byte order.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["read_pth", "read_torch_state_dict", "file_sha256"]

#: NumPy element types of the storage classes that saved tensors reference.
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: str  # a key of np.dtype without byte order, e.g. "f4"
    name: str


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage the pickle refers to; its bytes are read after unpickling."""

    key: str
    dtype: str
    numel: int
    view: tuple[int, int] | None  # (element offset, size) into the root storage (legacy views)
    type_name: str


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


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of saved tensors; storages become :class:`_StorageRef`."""

    _GLOBALS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:  # location ignored
            return _StorageType(_STORAGE_DTYPES[name], name)
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name}: only tensors (storage types "
            f"{sorted(_STORAGE_DTYPES)}) in plain containers are read.")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}.")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # (view key, element offset, view size)
            view = (int(view[1]), int(view[2]))
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]), view, pid[1].name)


def _unpickle(data: bytes | io.BytesIO):
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    return _RestrictedUnpickler(stream).load()


def _tensor_refs(obj) -> Iterator[_TensorRef]:
    """Every tensor in ``obj``, depth first, in container order."""
    if isinstance(obj, _TensorRef):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _tensor_refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensor_refs(value)


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
    array = np.array(view, dtype=native, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
    if ref.storage.type_name == "BFloat16Storage":  # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _materialise(obj, storages: Mapping[str, np.ndarray]):
    """``obj`` with every tensor replaced by its array (containers keep their type)."""
    if isinstance(obj, _TensorRef):
        return _tensor_array(obj, storages)
    if isinstance(obj, Mapping):
        return type(obj)((key, _materialise(value, storages)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(value, storages) for value in obj)
    return obj


def _select(obj, keys: Sequence[str] | None):
    if keys is None or not isinstance(obj, Mapping):
        return obj
    return type(obj)((key, obj[key]) for key in keys if key in obj)


def _read_zip(path: str, keys: Sequence[str] | None):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is a zip file but not a torch.save archive "
                             f"(expected one data.pkl; found {pickles}).")
        root = pickles[0][:-len("data.pkl")]
        obj = _select(_unpickle(archive.read(pickles[0])), keys)
        order = "<"
        if root + "byteorder" in names:
            mark = archive.read(root + "byteorder").decode().strip()
            if mark not in ("little", "big"):
                raise ValueError(f"{path!r}: unknown byte order {mark!r}.")
            order = "<" if mark == "little" else ">"
        storages = {}
        for ref in _tensor_refs(obj):
            key = ref.storage.key
            if key not in storages:
                raw = archive.read(f"{root}data/{key}")
                storages[key] = np.frombuffer(raw, np.dtype(order + ref.storage.dtype))
    return obj, storages


def _read_legacy(path: str, keys: Sequence[str] | None):
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
    whole = _unpickle(stream)
    storage_keys = _unpickle(stream)
    dtypes = {ref.storage.key: ref.storage.dtype for ref in _tensor_refs(whole)}
    obj = _select(whole, keys)
    wanted = {ref.storage.key for ref in _tensor_refs(obj)}
    storages = {}
    for key in storage_keys:
        count = int(np.frombuffer(stream.read(8), "<i8")[0])
        dtype = np.dtype("<" + dtypes[key])
        size = count * dtype.itemsize
        if key not in wanted:
            stream.seek(size, io.SEEK_CUR)
            continue
        raw = stream.read(size)
        if len(raw) != size:
            raise ValueError(f"{path!r} is truncated in storage {key!r}.")
        storages[key] = np.frombuffer(raw, dtype)
    return obj, storages


def read_pth(path: str | os.PathLike, *, keys: Sequence[str] | None = None) -> Any:
    """The object ``torch.save`` wrote at ``path`` (zip or legacy layout), every tensor as a
    NumPy array; no torch. ``keys``: for a file that holds a mapping, keep only these top-level
    entries (those missing are left out) and read only their tensors' bytes, e.g. a
    checkpoint's ``model`` and ``ema`` without its optimiser state.

    Raises ``FileNotFoundError`` when there is no such file, ``ValueError`` when it is not a
    ``torch.save`` file, and ``pickle.UnpicklingError`` when it holds anything but tensors in
    plain containers (module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist.")
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    obj, storages = reader(path, keys)
    return _materialise(obj, storages)


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``torch.save``'d state dict (a mapping of names to tensors) as ``{name: ndarray}``."""
    state = read_pth(path)
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
        raise ValueError("the file does not hold a state dict (a mapping of names to tensors).")
    return dict(state)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
