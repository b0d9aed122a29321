"""Model registry: networks are registered by name and built from explicit constructor fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import flax.linen as nn

_MODELS: dict[str, type[nn.Module]] = {}
_LINEN_INTERNAL_FIELDS = frozenset({"parent", "name"})

M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator registering a linen module under ``name`` (a name is used only once)."""

    def decorate(cls: M) -> M:
        previous = _MODELS.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ValueError(f"model name {name!r} is already registered to {previous.__name__}")
        _MODELS[name] = cls
        return cls

    return decorate


def available_models() -> tuple[str, ...]:
    """The registered model names, sorted."""
    return tuple(sorted(_MODELS))


def model_fields(name: str) -> tuple[str, ...]:
    """The constructor fields of the model registered as ``name``."""
    cls = _lookup(name)
    return tuple(
        f.name for f in dataclasses.fields(cls) if f.init and f.name not in _LINEN_INTERNAL_FIELDS
    )


def get_model(name: str, **fields: Any) -> nn.Module:
    """Build the model registered as ``name`` with the given constructor fields.

    Raises ``ValueError`` for an unknown name (listing the registered ones) or an unknown field
    (listing the model's fields); field values are validated by the model itself.
    """
    allowed = model_fields(name)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} has no field(s) {unknown}; allowed: {list(allowed)}")
    return _lookup(name)(**fields)


def _lookup(name: str) -> type[nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; allowed: {list(available_models())}")
    return _MODELS[name]
