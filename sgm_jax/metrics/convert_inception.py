"""Convert pytorch-fid's Inception weights (a PyTorch ``.pth`` state dict) to ``.npz``; no torch.

Usage::

    python -m sgm_jax.metrics.convert_inception \
        pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The ``.pth`` file is read without torch by :func:`sgm_jax.pth.read_torch_state_dict` (a
restricted unpickler that cannot run code; both layouts of ``torch.save``).

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
import os
import sys
from typing import Mapping, Sequence

import numpy as np

from sgm_jax.metrics.inception import check_inception_arrays, inception_weights_hash
from sgm_jax.pth import read_torch_state_dict

__all__ = ["read_torch_state_dict", "torch_to_flax", "convert_inception", "main"]


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
