"""The results file of an evaluation: ``<run folder>/eval/ckpt_<step>.json`` (DESIGN.md §3.8),
written atomically by process 0, and the table printed beside it.

The run folder is the one whose checkpoint was evaluated: ``WORKDIR`` for a score model,
``WORKDIR/classifier`` for a DLSM run's classifier. Every metric sits under a plain lower-case key
(``fid``, ``is``, ``kid``, ``bpd``, ``nll``, ``asym``, ``nasym``, ``nfe``, ``precision``,
``recall``, ``density``, ``coverage``, ...) beside ``step`` and the settings that produced it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax

from sgm_jax import files

#: The scalar keys printed, in this order, when a result has them.
TABLE_KEYS = ("step", "fid", "is", "kid", "precision", "recall", "density", "coverage", "cas",
              "nfe", "bpd", "nll", "nll_nfe", "score_error", "asym", "nasym")


def results_path(run_folder: str, step: int) -> str:
    """``<run_folder>/eval/ckpt_<step>.json``."""
    return os.path.join(run_folder, "eval", f"ckpt_{step}.json")


def write_results(run_folder: str, step: int, results: dict[str, Any],
                  table: Sequence[str] = TABLE_KEYS) -> str:
    """Write ``results`` to :func:`results_path` (process 0, atomically), print the values of the
    keys ``table`` it has as a table (process 0) and return the path."""
    path = results_path(run_folder, step)
    files.write_json(path, results)
    if jax.process_index() == 0:
        rows = [(key, results[key]) for key in table if key in results]
        width = max(len(key) for key, _ in rows)
        print("\n".join(f"{key:<{width}}  {value:.6g}" if isinstance(value, float)
                        else f"{key:<{width}}  {value}" for key, value in rows))
    return path
