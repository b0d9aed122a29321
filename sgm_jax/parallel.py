"""Data parallelism: a 1-D device mesh, batch sharding and multi-host initialisation.

Training is ``jax.jit`` over a :class:`jax.sharding.Mesh` with one axis, ``"data"``: the batch is
split along its leading dimension over every device of every process, the parameters (and the
optimiser state) are replicated, and XLA inserts the gradient all-reduce. This is ``pmap``'s
data parallelism without its leading device axis, and the same code runs on 1 device, 8 forced
CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), one or many GPUs, and
several hosts after ``jax.distributed.initialize()``:

    maybe_initialize_distributed()          # first thing in main(), before any JAX computation
    mesh = data_mesh()                      # all devices of all processes
    params = replicate(params, mesh)
    x = shard_batch(host_local_batch, mesh) # each process passes its own rows

On several hosts each process holds ``batch_size / process_count`` rows of every global batch;
:func:`shard_batch` assembles the global array with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

#: Environment variables that mark a multi-process launch (JAX's own, SLURM, Open MPI).
_COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
_PROCESS_COUNT_ENVS = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: ``jax.devices()``, i.e. every
    device of every process, so the mesh is global after ``jax.distributed.initialize()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device.")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Axis ``batch_axis`` (the batch) split over ``"data"``, all other axes whole."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
    """A pytree of host-local arrays → global ``jax.Array``s sharded over ``"data"`` along
    ``batch_axis`` (0 for ``[B_local, ...]``; 1 for a group of steps ``[n, B_local, ...]``), whose
    global batch size is B = B_local · ``jax.process_count()``.

    On one process the host-local batch is the whole batch. Every leaf's batch size times the
    process count must be divisible by the mesh size (see :func:`check_batch_divisible`).
    """
    sharding = batch_sharding(mesh, batch_axis)

    def put(leaf):
        leaf = np.asarray(leaf)
        if leaf.ndim <= batch_axis:
            raise ValueError(f"shard_batch needs arrays with a batch axis {batch_axis}; got an "
                             f"array of shape {leaf.shape}.")
        global_rows = leaf.shape[batch_axis] * jax.process_count()
        if global_rows % mesh.size:
            raise ValueError(
                f"the global batch of {global_rows} rows cannot be split evenly over the "
                f"{mesh.size} devices of the mesh.")
        global_shape = list(leaf.shape)
        global_shape[batch_axis] = global_rows
        return jax.make_array_from_process_local_data(sharding, leaf, tuple(global_shape))

    return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on every device of ``mesh`` (each process must pass the same
    values, which holds for parameters initialised from the same key)."""
    return jax.device_put(tree, replicated_sharding(mesh))


def check_batch_divisible(batch_size: int, num_devices: int) -> None:
    """Raise ``ValueError`` naming ``training.batch_size`` unless it splits evenly over devices."""
    is_int = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
    if not is_int or batch_size < 1:
        raise ValueError(f"training.batch_size must be an integer >= 1; got {batch_size!r}.")
    if batch_size % num_devices:
        lower = batch_size - batch_size % num_devices
        suggestion = f"{lower} or {lower + num_devices}" if lower else f"{num_devices}"
        raise ValueError(
            f"training.batch_size={batch_size} is not divisible by the number of devices "
            f"({num_devices}); allowed: a multiple of {num_devices}, e.g. {suggestion}.")


def _multi_process_env() -> bool:
    if os.environ.get(_COORDINATOR_ENV):
        return True
    for name in _PROCESS_COUNT_ENVS:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def _use_gloo_cpu_collectives() -> None:
    """Give the CPU backend gloo collectives when it has none, so that one computation can span
    the CPU devices of several processes. Recent JAX releases default to gloo, older ones that
    ``pyproject.toml`` allows to none; a choice of "mpi" is kept. It must be set before
    ``jax.distributed.initialize`` creates the CPU client."""
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def maybe_initialize_distributed() -> bool:
    """Call ``jax.distributed.initialize()`` when the environment describes a multi-process launch.

    That is when ``JAX_COORDINATOR_ADDRESS`` is set (with ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``), or SLURM / Open MPI report more than one task (JAX then reads the cluster
    from their variables), or ``JAX_NUM_PROCESSES`` > 1 alone (JAX detects the rest, e.g. on a
    Cloud TPU pod). CPU collectives are set to gloo first where JAX has none. Must run before any
    JAX computation. Returns whether the process is now part of a distributed run; a
    single-process launch does nothing and returns False.
    """
    if jax.distributed.is_initialized():
        return True
    if not _multi_process_env():
        return False
    _use_gloo_cpu_collectives()
    kwargs = {}
    if os.environ.get(_COORDINATOR_ENV):
        kwargs["coordinator_address"] = os.environ[_COORDINATOR_ENV]
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    return True
