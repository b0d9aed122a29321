"""Typed reads of ``ml_collections`` config fields, each checked on the way in.

Every reader takes the config and a dotted path (``"training.batch_size"``) and raises
``ValueError`` naming the field, the value found and what is allowed. The experiment builder
(:mod:`sgm_jax.experiment`) reads every field it uses through these, so a config is validated by
building it.

What each read allows can be recorded: inside ``with recording() as allowed:`` every reader
call adds ``{path: text}`` to ``allowed`` (``'integer >= 1'``, ``'one of "ode", "pc"'``, ...;
None for a field read with :func:`get` and checked by nobody), and a caller that validates a
field by hand says what it allows with :func:`record`. docs/config_reference.py builds every
config under configs/ inside a recording to write docs/config.md, the reference of every field.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterator, Sequence

import numpy as np


_RECORDINGS: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar(
    "config_field_recordings", default=())


@contextlib.contextmanager
def recording() -> Iterator[dict[str, str | None]]:
    """Collects what the reads inside the block allow: yields a dict that every reader call fills
    with ``{path: allowed-values text}`` (None: read with :func:`get` only, nothing checked).
    A field read twice with different texts keeps both, joined by "; ". Recordings nest (each
    open one receives every read) and are local to the thread / context."""
    allowed: dict[str, str | None] = {}
    token = _RECORDINGS.set(_RECORDINGS.get() + (allowed,))
    try:
        yield allowed
    finally:
        _RECORDINGS.reset(token)


def record(path: str, allowed: str | None) -> None:
    """Records, in every open :func:`recording`, that ``path`` was read and what it allows: for
    the readers below, and for a caller that validates a field itself (a tuple, a set of names
    matched without case, a network's constructor field). A text replaces an earlier None;
    None never replaces a text."""
    for recorded in _RECORDINGS.get():
        before = recorded.get(path)
        if allowed is None:
            recorded.setdefault(path, None)
        elif before is None:
            recorded[path] = allowed
        elif allowed not in before.split("; "):
            recorded[path] = f"{before}; {allowed}"


def _lookup(config, path: str) -> Any:
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"config has no field {path!r}.") from None
    return node


def get(config, path: str) -> Any:
    """The value at ``path``; ``ValueError`` when the config has no such field. Reading a field
    (not a whole section) records it with nothing checked (None) unless a reader or
    :func:`record` says what it allows."""
    node = _lookup(config, path)
    if not hasattr(node, "items"):  # a section is not a field
        record(path, None)
    return node


def has(config, path: str) -> bool:
    """Whether the config has ``path`` (not a read: nothing is recorded)."""
    try:
        _lookup(config, path)
    except ValueError:
        return False
    return True


def number(config, path: str, *, low=None, high=None, low_open=False, high_open=False,
           infinite: bool = False) -> float:
    """A finite real number within the given bounds (``low_open``/``high_open`` exclude them);
    with ``infinite``, +inf is allowed too (NaN never is)."""
    value = _lookup(config, path)
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number))
    ok = ok and (math.isfinite(float(value)) or (infinite and float(value) == math.inf))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    bounds = " and ".join(s for s in (lo, hi) if s)
    kind = "number (or inf)" if infinite else "finite number"
    if not ok:
        raise ValueError(f"{path} must be a {kind}{' ' + bounds if bounds else ''}; "
                         f"got {value!r}.")
    shown = "number (or inf)" if infinite else "number"
    record(path, f"{shown} {bounds}" if bounds else f"any {kind}")
    return float(value)


def integer(config, path: str, low: int, high: int | None = None) -> int:
    """An integer (not a bool) >= ``low`` (and <= ``high``)."""
    value = _lookup(config, path)
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if ok and high is not None:
        ok = value <= high
    bound = f">= {low}" + ("" if high is None else f" and <= {high}")
    if not ok:
        raise ValueError(f"{path} must be an integer {bound}; got {value!r}.")
    record(path, f"integer {bound}")
    return int(value)


def boolean(config, path: str) -> bool:
    value = _lookup(config, path)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{path} must be True or False; got {value!r}.")
    record(path, "True or False")
    return bool(value)


def setting(config, path: str, absent: bool, override: bool | None = None) -> bool:
    """A boolean setting: ``override`` unless None (a command-line flag over the config), else
    the boolean at ``path``, ``absent`` for a config without the field. The field is read (and
    checked) either way."""
    from_config = boolean(config, path) if has(config, path) else absent
    return from_config if override is None else bool(override)


def choice(config, path: str, allowed: Sequence[str]) -> str:
    """One of the ``allowed`` strings."""
    value = _lookup(config, path)
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{path} must be one of {allowed}; got {value!r}.")
    record(path, choices_text(allowed))
    return value


def string(config, path: str) -> str:
    value = _lookup(config, path)
    if not isinstance(value, str):
        raise ValueError(f"{path} must be a string; got {value!r}.")
    record(path, "string")
    return value


def choices_text(allowed: Sequence[str]) -> str:
    """How :func:`choice` records its ``allowed`` strings: ``one of "a", "b"``."""
    return "one of " + ", ".join(f'"{a}"' for a in allowed)


def multiple_of(path: str, value: int, base: int, base_path: str) -> None:
    """``value`` (read from ``path``) must be a multiple of ``base`` (read from ``base_path``)."""
    if value % base:
        raise ValueError(f"{path}={value} must be a multiple of {base_path}={base}.")
