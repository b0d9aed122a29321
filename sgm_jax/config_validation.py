"""Up-front checks of an experiment config (``configs/default_toy.py`` schema).

``validate_config(config)`` runs before any data, model or checkpoint work and raises
``ValueError`` naming the field (e.g. ``training.objective``), the value and what is allowed.
The allowed names come from the registries themselves (models, SDEs, objectives,
parameterisations, samplers, datasets), so a new registry entry is accepted here without edits.
``sde_from_config`` / ``model_from_config`` build the objects with the same field-named errors.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from sgm_jax import datasets, sampling, sde as sde_lib, sde_loss
from sgm_jax import models
from sgm_jax._validation import check_choice
from sgm_jax.parallel import check_batch_divisible

#: How the network is conditioned: on the SDE time t, or on σ_t (the official toy network).
CONDITIONS = ("t", "sigma")


def _get(config, path: str) -> Any:
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"config has no field {path!r}.") from None
    return node


def _number(config, path: str, *, low=None, high=None, low_open=False, high_open=False) -> float:
    value = _get(config, path)
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


def _int(config, path: str, low: int) -> int:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{path} must be an integer >= {low}; got {value!r}.")
    return int(value)


def _choice(config, path: str, allowed) -> str:
    value = _get(config, path)
    check_choice(path, value, tuple(allowed))
    return value


# The samplers whose arguments the config schema carries (sampling.rtol/atol for "ode";
# predictor/corrector/snr/n_steps for "pc"; eps for all three).
SAMPLING_METHODS = ("ode", "pc", "reverse_sde")


def sde_from_config(config) -> sde_lib.SDE:
    """The SDE of ``config.sde`` (``name`` plus its own fields; ``num_scales`` is N)."""
    name = _get(config, "sde.name")
    allowed = sde_lib.SDE_NAMES
    if not isinstance(name, str) or name.lower() not in allowed:
        raise ValueError(f"sde.name must be one of {allowed}; got {name!r}.")
    name = name.lower()
    n = _int(config, "sde.num_scales", 1)
    if name == "vesde":
        lo = _number(config, "sde.sigma_min", low=0, low_open=True)
        hi = _number(config, "sde.sigma_max", low=0, low_open=True)
        if lo >= hi:
            raise ValueError(
                f"sde.sigma_min must be < sde.sigma_max; got sde.sigma_min={lo!r} >= "
                f"sde.sigma_max={hi!r}.")
        kwargs = dict(sigma_min=lo, sigma_max=hi, N=n)
    else:
        lo = _number(config, "sde.beta_min", low=0)
        hi = _number(config, "sde.beta_max", low=0)
        if lo >= hi:
            raise ValueError(
                f"sde.beta_min must be < sde.beta_max; got sde.beta_min={lo!r} >= "
                f"sde.beta_max={hi!r}.")
        kwargs = dict(beta_min=lo, beta_max=hi, N=n)
    try:
        return sde_lib.get_sde(name, **kwargs)
    except ValueError as err:
        raise ValueError(f"sde ({name}): {err}") from None


def model_from_config(config):
    """The linen module ``config.model.name`` built from the fields in ``config.model.kwargs``."""
    _choice(config, "model.name", models.available_models())
    kwargs = _get(config, "model.kwargs")
    kwargs = kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs)
    try:
        return models.get_model(config.model.name, **kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"model.kwargs: {err}") from None


def validate_config(config, num_devices: int | None = None) -> None:
    """Raise ``ValueError`` (naming field, value and what is allowed) for any invalid field.

    ``num_devices`` is the size of the data mesh (default ``jax.device_count()``, all devices of
    all processes); ``training.batch_size`` must be a multiple of it and of the process count.
    """
    _int(config, "seed", 0)
    # data
    _choice(config, "data.dataset", datasets.TOY_DATASETS)
    num_points = _int(config, "data.num_points", 1)
    # model
    _choice(config, "model.parameterisation", models.PARAMETERISATIONS)
    _choice(config, "model.condition", CONDITIONS)
    model_from_config(config)
    # sde
    sde = sde_from_config(config)
    # training
    _choice(config, "training.objective", sde_loss.OBJECTIVES)
    _choice(config, "training.qc_estimator", sde_loss.QC_ESTIMATORS)
    _choice(config, "training.weighting", sde_lib.WEIGHTINGS)
    _number(config, "training.qc_weight", low=0)
    _int(config, "training.qc_num_vectors", 1)
    _number(config, "training.eps", low=0, high=sde.T, low_open=True, high_open=True)
    batch_size = _int(config, "training.batch_size", 1)
    num_devices = jax.device_count() if num_devices is None else num_devices
    check_batch_divisible(batch_size, num_devices)
    check_batch_divisible(batch_size, jax.process_count())
    if batch_size > num_points:
        raise ValueError(
            f"training.batch_size={batch_size} exceeds data.num_points={num_points}; "
            f"allowed: at most {num_points}.")
    _int(config, "training.n_iters", 0)
    for field in ("log_freq", "snapshot_freq", "keep_checkpoints"):
        _int(config, f"training.{field}", 1)
    # optim
    _number(config, "optim.lr", low=0)
    _number(config, "optim.beta1", low=0, high=1, high_open=True)
    _number(config, "optim.beta2", low=0, high=1, high_open=True)
    _number(config, "optim.eps", low=0, low_open=True)
    _number(config, "optim.weight_decay", low=0)
    _int(config, "optim.warmup", 0)
    _number(config, "optim.grad_clip", low=0)
    _number(config, "optim.ema_rate", low=0, high=1)
    # sampling
    _choice(config, "sampling.method", SAMPLING_METHODS)
    _choice(config, "sampling.predictor", sampling.PREDICTORS)
    _choice(config, "sampling.corrector", sampling.CORRECTORS)
    for field in ("rtol", "atol", "snr"):
        _number(config, f"sampling.{field}", low=0, low_open=True)
    _number(config, "sampling.eps", low=0, high=sde.T, low_open=True, high_open=True)
    _int(config, "sampling.num_samples", 1)
    _int(config, "sampling.n_steps", 0)
    # eval
    for field in ("num_points", "num_levels", "nll_num_points", "prdc_k"):
        _int(config, f"eval.{field}", 1)
    _int(config, "eval.checkpoint", -1)
