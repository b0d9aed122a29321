"""The ``torch.save`` reader (``sgm_jax.pth``) on files written without torch
(``tests/pth_writer.py``): both layouts, views into shared storages, byte orders, nested training
checkpoints, reading some entries only, and refusing anything but tensors in plain containers."""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np
import pytest

from pth_writer import TensorRef, write_arrays_pth, write_pth
from sgm_jax.pth import file_sha256, read_pth, read_torch_state_dict


@pytest.mark.parametrize("layout,byteorder,storage_module", [
    ("zip", "little", "torch"), ("zip", "big", "torch"), ("legacy", "little", "torch"),
    ("legacy", "little", "torch.cuda")])
def test_reader_rebuilds_tensors_from_storages_offsets_and_strides(tmp_path, layout, byteorder,
                                                                    storage_module):
    rng = np.random.default_rng(0)
    storages = {"0": np.arange(24, dtype=np.float32) * 0.5, "1": np.array([7], np.int64),
                "2": rng.normal(size=5)}
    tensors = collections.OrderedDict([
        ("whole", TensorRef("0", 0, (2, 3, 4), (12, 4, 1))),
        ("transposed_view", TensorRef("0", 1, (3, 2), (1, 3))),  # shares "0", non-contiguous
        ("scalar", TensorRef("1", 0, (), ())),
        ("float64", TensorRef("2", 0, (5,), (1,))),
    ])
    path = tmp_path / "synthetic.pth"
    write_pth(path, tensors, storages, layout, byteorder, storage_module)
    got = read_torch_state_dict(path)
    assert list(got) == list(tensors)
    np.testing.assert_array_equal(got["whole"], storages["0"].reshape(2, 3, 4))
    want_view = np.array([[storages["0"][1 + i + 3 * j] for j in range(2)] for i in range(3)])
    np.testing.assert_array_equal(got["transposed_view"], want_view)
    assert got["scalar"].shape == () and got["scalar"] == 7 and got["scalar"].dtype == np.int64
    np.testing.assert_array_equal(got["float64"], storages["2"])
    assert got["whole"].dtype == np.float32 and got["whole"].dtype.isnative


def test_reader_refuses_globals_other_than_tensors(tmp_path):
    payload = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"os\nsystem\n" + pickle.MARK
               + pickle.BINUNICODE + (4).to_bytes(4, "little") + b"true" + pickle.TUPLE
               + pickle.REDUCE + pickle.STOP)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load the global os.system"):
        read_torch_state_dict(path)


def _checkpoint(rng):
    """A training checkpoint as score_sde_pytorch saves one: state dicts, the EMA's list of
    tensors, Adam's state keyed by parameter index with a tensor step, hyperparameters."""
    model = collections.OrderedDict([("module.a.weight", rng.normal(size=(2, 3))),
                                     ("module.a.bias", rng.normal(size=3))])
    return {
        "optimizer": {"state": {0: {"step": np.array(5.0), "exp_avg": rng.normal(size=(2, 3))}},
                      "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "amsgrad": False,
                                        "foreach": None, "params": [0, 1]}]},
        "model": model,
        "ema": {"decay": 0.999, "num_updates": 12, "shadow_params": [rng.normal(size=(2, 3)),
                                                                     rng.normal(size=3)]},
        "step": 12,
    }


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_nested_checkpoint_reads_back_whole(tmp_path, layout):
    want = _checkpoint(np.random.default_rng(1))
    path = tmp_path / "checkpoint_1.pth"
    write_arrays_pth(path, want, layout)
    got = read_pth(path)
    assert isinstance(got["model"], collections.OrderedDict)
    assert list(got["model"]) == list(want["model"]) and got["step"] == 12
    np.testing.assert_array_equal(got["model"]["module.a.weight"], want["model"]["module.a.weight"])
    for g, w in zip(got["ema"]["shadow_params"], want["ema"]["shadow_params"], strict=True):
        np.testing.assert_array_equal(g, w)
    assert got["ema"]["decay"] == 0.999 and got["ema"]["num_updates"] == 12
    assert got["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert got["optimizer"]["state"][0]["step"] == 5.0


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_keys_keep_some_entries_and_read_only_their_storages(tmp_path, layout, monkeypatch):
    want = _checkpoint(np.random.default_rng(2))
    path = tmp_path / "checkpoint_2.pth"
    write_arrays_pth(path, want, layout)
    read = []
    original = np.frombuffer
    monkeypatch.setattr(np, "frombuffer", lambda raw, dtype: read.append(len(raw)) or original(
        raw, dtype))
    got = read_pth(path, keys=("model", "step", "missing"))
    assert list(got) == ["model", "step"]
    model_bytes = sum(a.nbytes for a in want["model"].values())
    assert sum(n for n in read if n != 8) == model_bytes  # (8: the legacy element counts)


def test_a_state_dict_must_be_a_flat_mapping_of_tensors(tmp_path):
    path = tmp_path / "checkpoint.pth"
    write_arrays_pth(path, _checkpoint(np.random.default_rng(3)))
    with pytest.raises(ValueError, match="does not hold a state dict"):
        read_torch_state_dict(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pth(tmp_path / "nothing.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(ValueError, match="neither a zip nor a legacy torch.save file"):
        read_pth(tmp_path / "text.pth")


def test_file_sha256_is_hashlibs(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 5000)  # more than one 1 MiB block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
