"""Files in ``torch.save``'s layouts written without torch, for the tests of the ``.pth`` readers.

The pickle is assembled opcode by opcode as ``torch.save`` writes it: a NumPy array becomes
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` with
the storage a persistent id ``("storage", torch.<Type>Storage, key, "cpu", numel[, None])``;
``OrderedDict`` (a state dict), dict, list, tuple, str, int, float, bool and None are pickled as
Python pickles them. Each array gets its own C-contiguous storage unless ``write_pth`` is given
the tensors explicitly (views into shared storages).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

STORAGE_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.int64): "LongStorage"}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _str(text):
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value):
    return pickle.BININT + struct.pack("<i", value)


def _tuple(items):
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _ordered_dict():
    return _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


class TensorRef:
    """A tensor of ``write_pth``: ``(storage key, element offset, size, stride)``."""

    def __init__(self, key, offset, size, stride):
        self.key, self.offset, self.size, self.stride = key, offset, tuple(size), tuple(stride)


class _Pickler:
    def __init__(self, storages, legacy, storage_module):
        self.storages, self.legacy, self.storage_module = storages, legacy, storage_module

    def tensor(self, ref: TensorRef) -> bytes:
        array = self.storages[ref.key]
        storage_type = _global(self.storage_module, STORAGE_TYPES[array.dtype])
        pid = [_str("storage"), storage_type, _str(ref.key), _str("cpu"),
               _int(array.size)] + ([pickle.NONE] if self.legacy else [])
        storage = _tuple(pid) + pickle.BINPERSID
        args = _tuple([storage, _int(ref.offset), _tuple(map(_int, ref.size)),
                       _tuple(map(_int, ref.stride)), pickle.NEWFALSE, _ordered_dict()])
        return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE

    def __call__(self, obj) -> bytes:
        if isinstance(obj, TensorRef):
            return self.tensor(obj)
        if isinstance(obj, collections.OrderedDict):
            items = b"".join(self(k) + self(v) for k, v in obj.items())
            return _ordered_dict() + (pickle.MARK + items + pickle.SETITEMS if obj else b"")
        if isinstance(obj, dict):
            items = b"".join(self(k) + self(v) for k, v in obj.items())
            return pickle.EMPTY_DICT + (pickle.MARK + items + pickle.SETITEMS if obj else b"")
        if isinstance(obj, list):
            items = b"".join(self(v) for v in obj)
            return pickle.EMPTY_LIST + (pickle.MARK + items + pickle.APPENDS if obj else b"")
        if isinstance(obj, tuple):
            return _tuple([self(v) for v in obj])
        if obj is None:
            return pickle.NONE
        if isinstance(obj, bool):
            return pickle.NEWTRUE if obj else pickle.NEWFALSE
        if isinstance(obj, int):
            return _int(obj)
        if isinstance(obj, float):
            return pickle.BINFLOAT + struct.pack(">d", obj)
        if isinstance(obj, str):
            return _str(obj)
        raise TypeError(f"cannot pickle {type(obj).__name__} as torch.save would")

    def dump(self, obj) -> bytes:
        return pickle.PROTO + b"\x02" + self(obj) + pickle.STOP


def write_pth(path, obj, storages, layout="zip", byteorder="little", storage_module="torch"):
    """Write ``obj`` (whose tensors are :class:`TensorRef` into ``storages``, {key: 1-D array})
    in torch.save's zip layout or its legacy (pickle stream) layout."""
    order = "<" if byteorder == "little" else ">"
    if layout == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("archive/data.pkl",
                             _Pickler(storages, False, storage_module).dump(obj))
            archive.writestr("archive/byteorder", byteorder)
            for key, array in storages.items():
                archive.writestr(f"archive/data/{key}", array.astype(array.dtype.newbyteorder(
                    order)).tobytes())
            archive.writestr("archive/version", "3\n")
        return
    out = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, out, protocol=2)
    out.write(_Pickler(storages, True, storage_module).dump(obj))
    keys = sorted(storages)
    pickle.dump(keys, out, protocol=2)
    for key in keys:  # int64 element count, then the little-endian data
        out.write(struct.pack("<q", storages[key].size))
        out.write(storages[key].astype(storages[key].dtype.newbyteorder("<")).tobytes())
    with open(path, "wb") as f:
        f.write(out.getvalue())


def write_arrays_pth(path, obj, layout="zip"):
    """Write ``obj`` with NumPy arrays in place of tensors, each array in its own C-contiguous
    storage (as ``torch.save`` of a state dict or a training checkpoint)."""
    storages = {}

    def refs(value):
        if isinstance(value, np.ndarray):
            array = np.array(value, order="C")
            key = str(len(storages))
            storages[key] = array.reshape(-1)
            return TensorRef(key, 0, array.shape,
                             tuple(s // array.itemsize for s in array.strides))
        if isinstance(value, dict):
            return type(value)((k, refs(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(refs(v) for v in value)
        return value

    write_pth(path, refs(obj), storages, layout)
