"""Typed reads of ``ml_collections`` config fields, each checked on the way in.

Every reader takes the config and a dotted path (``"training.batch_size"``) and raises
``ValueError`` naming the field, the value found and what is allowed. The experiment builder
(:mod:`sgm_jax.experiment`) reads every field it uses through these, so a config is validated by
building it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def get(config, path: str) -> Any:
    """The value at ``path``; ``ValueError`` when the config has no such field."""
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"config has no field {path!r}.") from None
    return node


def has(config, path: str) -> bool:
    try:
        get(config, path)
    except ValueError:
        return False
    return True


def number(config, path: str, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number within the given bounds (``low_open``/``high_open`` exclude them)."""
    value = get(config, path)
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number))
    ok = ok and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        allowed = " and ".join(s for s in (lo, hi) if s) or "any finite number"
        raise ValueError(f"{path} must be a finite number {allowed}; got {value!r}.")
    return float(value)


def integer(config, path: str, low: int, high: int | None = None) -> int:
    """An integer (not a bool) >= ``low`` (and <= ``high``)."""
    value = get(config, path)
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = f">= {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{path} must be an integer {bound}; got {value!r}.")
    return int(value)


def boolean(config, path: str) -> bool:
    value = get(config, path)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{path} must be True or False; got {value!r}.")
    return bool(value)


def choice(config, path: str, allowed: Sequence[str]) -> str:
    """One of the ``allowed`` strings."""
    value = get(config, path)
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{path} must be one of {allowed}; got {value!r}.")
    return value


def string(config, path: str) -> str:
    value = get(config, path)
    if not isinstance(value, str):
        raise ValueError(f"{path} must be a string; got {value!r}.")
    return value


def multiple_of(path: str, value: int, base: int, base_path: str) -> None:
    """``value`` (read from ``path``) must be a multiple of ``base`` (read from ``base_path``)."""
    if value % base:
        raise ValueError(f"{path}={value} must be a multiple of {base_path}={base}.")
