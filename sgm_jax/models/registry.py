"""Model registry: networks are registered by name and built from explicit constructor fields."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

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


def split_variables(variables: dict) -> tuple[dict, dict]:
    """``(params, model_state)`` of a Flax module's ``variables``: ``{"params": ...}``, what an
    optimiser trains, and the other collections (a BatchNorm network's running statistics
    ``batch_stats``; ``{}`` when there are none). ``{**params, **model_state}`` rejoins them."""
    params = {"params": variables["params"]}
    return params, {name: value for name, value in variables.items() if name != "params"}


def param_count(config: ml_collections.ConfigDict) -> int:
    """The number of parameters of the network ``config.model`` describes (every leaf of
    ``params``, as the experiment builder reads it: :func:`sgm_jax.config_sections.network`).

    Shapes come from ``jax.eval_shape`` of ``init`` on an input
    ``[1, data.image_size, data.image_size, data.num_channels]`` and a condition ``[1]``, so
    nothing is computed. For an image network ``f(x, cond)``.
    """
    from sgm_jax.config_sections import network as read_network  # the builder's reader

    network = read_network(config)
    size = config.data.image_size
    x = jax.ShapeDtypeStruct((1, size, size, config.data.num_channels), jnp.float32)
    cond = jax.ShapeDtypeStruct((1,), jnp.float32)
    variables = jax.eval_shape(network.init, jax.random.key(0), x, cond)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))
