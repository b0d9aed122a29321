"""PyTorch state dicts of the published score networks and classifiers as Flax variables.

    layout = network_layout(network, x, cond)
    variables = state_dict_to_variables(state_dict, layout)      # {"params": …, …}
    ema = parameter_list_to_params(shadow_params, state_dict, layout)

The library's networks compute the functions of the official PyTorch ones given the same
weights; this module maps the weights. Two naming schemes occur in published files:

* **module list** (score_sde_pytorch's ``NCSNpp`` and ``DDPM``, QCSBM's and DLSM's copies of
  them): every layer of the network is ``all_modules.<i>``, appended in the order ``forward``
  uses them. The library's networks create their top-level submodules in the same order, so the
  k-th top-level Flax submodule that has parameters is the k-th ``all_modules`` entry that has
  parameters; the order is read by intercepting the Flax calls (:func:`network_layout`). Below that
  level the PyTorch attribute names are the Flax names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``,
  ``NIN_0``, ``Conv2d_0``, as in score_sde's Flax code). The buffer ``sigmas`` is dropped.
* **named** (DLSM's ``resnet_cond`` classifier, :mod:`sgm_jax.models.classifiers`): the Flax
  path is the PyTorch name without its ``classifier.`` components (the wrapper's and
  ``resnet_cond``'s attribute), each ``name.<digit>`` joined into ``name_<digit>``
  (``classifier.classifier.layer2.0.shortcut.1.running_mean`` → ``layer2_0/shortcut_1``).

A leading ``module.`` (``torch.nn.DataParallel``) is removed in both. Leaves: a 4-D ``weight``
[O, I, kh, kw] is a kernel [kh, kw, I, O] (``kernel`` of ``nn.Conv``, ``weight`` of the FIR
``Conv2d``); a 2-D ``weight`` [out, in] (``nn.Linear``) is ``kernel`` [in, out]; a 1-D
``weight`` is a normalisation's ``scale``; ``bias``, ``W`` and ``b`` (``NIN``, the Gaussian
Fourier frequencies) keep their name and layout; ``running_mean`` / ``running_var`` are the
``batch_stats`` ``mean`` / ``var``; ``num_batches_tracked`` is dropped.

A parameter list in ``model.parameters()`` order (score_sde_pytorch's EMA ``shadow_params``, which
holds the trainable parameters only) follows the state dict's order without its buffers and
without the Gaussian Fourier frequencies, which PyTorch creates with ``requires_grad=False``.

Every mismatch (a count, a name, a shape) raises ``ValueError`` naming the first offending entry
on both sides.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

Array = jax.Array

#: PyTorch buffers that the Flax networks do not have (score_sde's discrete noise levels, the
#: batch-norm step counter).
DROPPED = ("sigmas", "num_batches_tracked")
#: The module class whose parameter PyTorch keeps out of ``parameters()``-based lists.
FROZEN_CLASSES = ("GaussianFourierProjection",)
_MODULE_LIST = re.compile(r"^all_modules\.(\d+)\.(.+)$")


@dataclasses.dataclass(frozen=True)
class NetworkLayout:
    """A network's submodules (``{path: class name}``, in the order of their first call) and its
    variables (``{"<collection>/<path>/<leaf>": shape}``)."""

    modules: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


def network_layout(network: nn.Module, x: Array, cond: Array) -> NetworkLayout:
    """The :class:`NetworkLayout` of ``network`` called on ``x``, ``cond`` (from
    ``jax.eval_shape``: nothing is computed)."""
    modules: dict[str, str] = {}

    def record(next_fun, args, kwargs, context):
        path = "/".join(context.module.path)
        if path and context.method_name == "__call__" and path not in modules:
            modules[path] = type(context.module).__name__
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(network.init, jax.random.key(0), x, cond)
    shapes = {key: tuple(v.shape)
              for key, v in traverse_util.flatten_dict(dict(variables), sep="/").items()}
    return NetworkLayout(modules, shapes)


def _strip_data_parallel(names: Sequence[str]) -> dict[str, str]:
    """``{name without "module.": name}`` (the prefix goes only when every name has it)."""
    if names and all(n.startswith("module.") for n in names):
        return {n[len("module."):]: n for n in names}
    return {n: n for n in names}


def _named_module_path(name: str) -> list[str]:
    """``classifier.classifier.layer2.0.conv1`` → ``["layer2_0", "conv1"]`` (module docstring)."""
    parts = [part for part in name.split(".") if part != "classifier"]
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return out


def _module_list_paths(names: Sequence[str], order: Mapping[str, str],
                       shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """``{torch name: Flax module path + "." + leaf}`` for module-list names (module docstring)."""
    entries: dict[int, list[str]] = {}
    for name in names:
        match = _MODULE_LIST.match(name)
        if match:
            entries.setdefault(int(match.group(1)), []).append(name)
        elif name.split(".")[-1] not in DROPPED:
            raise ValueError(f"unexpected state-dict entry {name!r}: a score network's names are "
                             "all_modules.<i>.<…> (score_sde_pytorch's NCSNpp / DDPM).")
    with_params = {key.split("/")[1] for key in shapes}
    children = [path for path in order if "/" not in path and path in with_params]
    indices = sorted(entries)
    if len(indices) != len(children):
        first = min(len(indices), len(children))
        torch_side = (f"all_modules.{indices[first]} ({entries[indices[first]][0]})"
                      if first < len(indices) else "nothing")
        flax_side = children[first] if first < len(children) else "nothing"
        raise ValueError(
            f"the file's network has {len(indices)} layers with parameters and the config's "
            f"{len(children)}; the first unmatched is {torch_side} in the file against "
            f"{flax_side} in the config's network.")
    paths = {}
    for index, child in zip(indices, children):
        for name in entries[index]:
            rest = _MODULE_LIST.match(name).group(2).split(".")
            paths[name] = "/".join([child, *rest[:-1]]) + "." + rest[-1]
    return paths


def _leaf(torch_name: str, module: str, leaf: str, array: np.ndarray,
          shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, np.ndarray] | None:
    """The Flax variable key (``collection/path/leaf``) and array of one PyTorch entry, or None
    for a dropped buffer."""
    array = np.asarray(array)
    prefix = f"{module}/" if module else ""
    if leaf in DROPPED:
        return None
    if leaf == "weight" and array.ndim == 4:
        name = "kernel" if f"params/{prefix}kernel" in shapes else "weight"
        return f"params/{prefix}{name}", array.transpose(2, 3, 1, 0)
    if leaf == "weight" and array.ndim == 2:
        return f"params/{prefix}kernel", array.T
    if leaf == "weight" and array.ndim == 1:
        return f"params/{prefix}scale", array
    if leaf in ("bias", "W", "b"):
        return f"params/{prefix}{leaf}", array
    if leaf == "running_mean":
        return f"batch_stats/{prefix}mean", array
    if leaf == "running_var":
        return f"batch_stats/{prefix}var", array
    raise ValueError(f"unexpected state-dict entry {torch_name!r} with shape {array.shape}: "
                     "expected weight, bias, W, b, running_mean, running_var or "
                     "num_batches_tracked leaves.")


def torch_paths(names: Sequence[str], layout: NetworkLayout) -> dict[str, tuple[str, str]]:
    """``{torch name: (Flax module path, torch leaf)}`` for the state-dict ``names`` of the
    network of ``layout`` (the scheme is chosen by the names: ``all_modules.…`` or named)."""
    stripped = _strip_data_parallel(names)
    if not any(_MODULE_LIST.match(n) for n in stripped):
        return {original: ("/".join(path[:-1]), path[-1]) for short, original in stripped.items()
                for path in [_named_module_path(short)]}
    params = {k: v for k, v in layout.shapes.items() if k.startswith("params/")}
    mapped = _module_list_paths(list(stripped), layout.modules, params)
    out = {}
    for short, original in stripped.items():
        module, _, leaf = mapped.get(short, "." + short.split(".")[-1]).rpartition(".")
        out[original] = (module, leaf)
    return out


def _entries(state_dict: Mapping[str, np.ndarray], layout: NetworkLayout
             ) -> dict[str, tuple[str, np.ndarray]]:
    """``{torch name: (Flax variable key, array)}``, dropped buffers left out."""
    paths = torch_paths(list(state_dict), layout)
    entries = {}
    for name, array in state_dict.items():
        module, leaf = paths[name]
        converted = _leaf(name, module, leaf, array, layout.shapes)
        if converted is not None:
            entries[name] = converted
    return entries


def _assemble(entries: Mapping[str, tuple[str, np.ndarray]], shapes: Mapping[str, tuple],
              collections: Sequence[str], what: str) -> dict[str, Any]:
    """The variables of ``collections`` from ``{torch name: (Flax key, array)}``, every variable
    filled exactly once with its shape."""
    filled: dict[str, tuple[str, np.ndarray]] = {}
    for torch_name, (key, array) in entries.items():
        if key not in shapes:
            raise ValueError(f"{what} entry {torch_name!r} {list(array.shape)} has no counterpart "
                             f"in the config's network (it would be {key!r}).")
        if tuple(array.shape) != shapes[key]:
            raise ValueError(f"{what} entry {torch_name!r} (as {key!r} {list(array.shape)}) does "
                             f"not fit the config's network, whose {key!r} is "
                             f"{list(shapes[key])}.")
        if key in filled:
            raise ValueError(f"{what} entries {filled[key][0]!r} and {torch_name!r} both map to "
                             f"{key!r}.")
        filled[key] = (torch_name, array)
    wanted = [k for k in shapes if k.split("/")[0] in collections]
    missing = [k for k in wanted if k not in filled]
    if missing:
        raise ValueError(f"{what} has nothing for the config's {missing[0]!r} "
                         f"{list(shapes[missing[0]])} ({len(missing)} variables missing).")
    flat = {k: np.asarray(filled[k][1], np.float32) for k in wanted}
    return traverse_util.unflatten_dict(flat, sep="/")


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], layout: NetworkLayout
                            ) -> dict[str, Any]:
    """The Flax variables (``params`` and, where the network has them, ``batch_stats``) of a
    PyTorch state dict of the network of ``layout`` (module docstring), float32."""
    collections = sorted({k.split("/")[0] for k in layout.shapes})
    return _assemble(_entries(state_dict, layout), layout.shapes, collections, "state-dict")


def trainable_names(state_dict: Mapping[str, np.ndarray], layout: NetworkLayout) -> list[str]:
    """The state dict's names in ``parameters()`` order with ``requires_grad``: without buffers
    and without the parameters of :data:`FROZEN_CLASSES` modules."""
    return [name for name, (key, _) in _entries(state_dict, layout).items()
            if key.startswith("params/")
            and layout.modules.get(key[len("params/"):].rpartition("/")[0]) not in FROZEN_CLASSES]


def parameter_list_to_params(parameters: Sequence[np.ndarray],
                             state_dict: Mapping[str, np.ndarray], layout: NetworkLayout
                             ) -> dict[str, Any]:
    """The Flax ``params`` of a list of arrays in ``parameters()`` order (score_sde_pytorch's EMA
    ``shadow_params``) of the network whose state dict is ``state_dict``: the list's k-th array
    is the k-th of :func:`trainable_names`; the frozen parameters come from ``state_dict``."""
    names = trainable_names(state_dict, layout)
    if len(parameters) != len(names):
        raise ValueError(f"the parameter list holds {len(parameters)} arrays and the network "
                         f"{len(names)} trainable parameters.")
    replaced = dict(state_dict)
    for k, (name, array) in enumerate(zip(names, parameters)):
        array = np.asarray(array)
        if array.shape != np.shape(state_dict[name]):
            raise ValueError(f"the parameter list's array {k} {list(array.shape)} does not fit "
                             f"{name!r} {list(np.shape(state_dict[name]))}.")
        replaced[name] = array
    return state_dict_to_variables(replaced, layout)["params"]
