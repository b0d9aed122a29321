"""Resumable evaluation work: one ``.npz`` file per finished unit of work (a batch of samples, a
likelihood batch, a noise level), written atomically by process 0, plus a progress line with an
ETA.

A killed evaluation started again skips the units whose file exists and recomputes only the
rest; each unit draws its randomness from its own index, so the final numbers are the same as
those of an uninterrupted run.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class ShardStore:
    """A folder of ``<name>.npz`` results. ``get(name, compute)`` returns the stored arrays of
    ``name``, or calls ``compute()`` (every process: it may run a sharded computation), stores
    its result (process 0, atomically: a temporary file renamed into place) and returns it."""

    def __init__(self, directory: str):
        self.directory = directory
        if jax.process_index() == 0:
            os.makedirs(directory, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.npz")

    def done(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def get(self, name: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if self.done(name):
            with np.load(self.path(name)) as stored:
                return {k: stored[k] for k in stored.files}
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        if jax.process_index() == 0:
            temporary = self.path(name) + ".tmp.npz"
            np.savez(temporary, **arrays)
            os.replace(temporary, self.path(name))
        if jax.process_count() > 1:  # the others see the file before they look for the next one
            multihost_utils.sync_global_devices(f"shard {self.directory}/{name}")
        return arrays


class Progress:
    """Logs ``what: i/total, elapsed, ETA`` after each unit (ETA from the units computed in this
    process, so that skipped, already finished units do not distort it)."""

    def __init__(self, what: str, total: int):
        self.what, self.total = what, total
        self.start, self.computed = time.perf_counter(), 0

    def __call__(self, index: int, computed: bool) -> None:
        self.computed += int(computed)
        elapsed = time.perf_counter() - self.start
        left = self.total - index - 1
        eta = elapsed / self.computed * left if self.computed else float("nan")
        message = (f"{self.what}: {index + 1}/{self.total}, {elapsed:.0f} s elapsed, "
                   f"ETA {eta:.0f} s")
        logging.info(message)
        if jax.process_index() == 0:
            print(message, flush=True)
