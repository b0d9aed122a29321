"""Readers of the config sections that both experiment builders share (the score model's,
:func:`sgm_jax.experiment.build_experiment`, and the DLSM classifier's,
:func:`sgm_jax.classifier_experiment.build_classifier_experiment`): the SDE, a network section,
the optimiser, the training schedule and the data source.

Each reads its fields once, validates them (``ValueError`` naming the field, the value and what
is allowed) and returns the run's object; ``root`` prefixes the paths of a classifier's sections
(``"classifier."``).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import optax

from sgm_jax import config_fields as cf
from sgm_jax import data as data_lib
from sgm_jax import models
from sgm_jax import sde as sde_lib

Array = jax.Array

#: Keys of a network section that describe how the network is used, not the network itself.
USE_KEYS = ("name", "parameterisation", "condition")
#: Network fields that the train step sets, and the training fields that set them
#: (:func:`sgm_jax.experiment.build_experiment`); a network section may not set them.
TRAIN_STEP_FIELDS = {"dtype": "training.compute_dtype", "remat": "training.remat"}
#: What :func:`network` records a constructor field of the network as allowing (the model's
#: name follows): the registered Flax module checks its own fields.
NETWORK_FIELD = "a field of "


#: The fields of the ``sde`` section besides ``name`` and ``num_scales``, per SDE.
SDE_PARAMETERS = {"vesde": ("sigma_min", "sigma_max"), "vpsde": ("beta_min", "beta_max"),
                  "subvpsde": ("beta_min", "beta_max")}


def sde_from_config(config) -> sde_lib.SDE:
    """The SDE of ``config.sde`` (``name``: vesde with ``sigma_min`` < ``sigma_max``, or vpsde /
    subvpsde with ``beta_min`` < ``beta_max``; ``num_scales``), validated field by field. The
    section holds the named SDE's parameters only: another SDE's (``beta_min`` in a VE config)
    would be ignored, and is refused."""
    name = cf.get(config, "sde.name")
    if not isinstance(name, str) or name.lower() not in sde_lib.SDE_NAMES:
        raise ValueError(f"sde.name must be one of {sde_lib.SDE_NAMES}; got {name!r}.")
    cf.record("sde.name", cf.choices_text(sde_lib.SDE_NAMES) + " (any case)")
    name = name.lower()
    allowed = ("name", "num_scales", *SDE_PARAMETERS[name])
    for key, value in cf.get(config, "sde").items():
        if key not in allowed:
            raise ValueError(f"sde.{key}={value!r} is not a parameter of sde.name={name!r}; "
                             f"allowed: {list(allowed)}.")
    n = cf.integer(config, "sde.num_scales", 1)
    if name == "vesde":
        lo = cf.number(config, "sde.sigma_min", low=0, low_open=True)
        hi = cf.number(config, "sde.sigma_max", low=0, low_open=True)
        if lo >= hi:
            raise ValueError(f"sde.sigma_min must be < sde.sigma_max; got sde.sigma_min={lo!r} "
                             f">= sde.sigma_max={hi!r}.")
        kwargs = dict(sigma_min=lo, sigma_max=hi, N=n)
    else:
        lo = cf.number(config, "sde.beta_min", low=0)
        hi = cf.number(config, "sde.beta_max", low=0)
        if lo >= hi:
            raise ValueError(f"sde.beta_min must be < sde.beta_max; got sde.beta_min={lo!r} "
                             f">= sde.beta_max={hi!r}.")
        kwargs = dict(beta_min=lo, beta_max=hi, N=n)
    return sde_lib.get_sde(name, **kwargs)


def network(config, section: str = "model") -> nn.Module:
    """The network ``config.<section>`` describes ("model", or "classifier.model"): its ``name``
    (a registered model) built with every other key of the section as a constructor field
    (lists become tuples), except :data:`USE_KEYS`, plus ``centered = data.centered`` when the
    model has a ``centered`` field (score_sde reads ``config.data.centered`` inside its
    networks). A key that is not a field of the model, a ``centered`` key, or a field the train
    step sets (:data:`TRAIN_STEP_FIELDS`) is refused; each
    field passed is recorded (:func:`sgm_jax.config_fields.record`) as :data:`NETWORK_FIELD`
    followed by the model's name."""
    name = cf.choice(config, f"{section}.name", models.available_models())
    allowed = [f for f in models.model_fields(name) if f not in TRAIN_STEP_FIELDS]
    fields = {}
    for key, value in cf.get(config, section).items():
        if key in USE_KEYS:
            continue
        if key == "centered":
            raise ValueError(f"{section}.centered is not allowed: the network's centered field "
                             "is set from data.centered.")
        if key in TRAIN_STEP_FIELDS and key in models.model_fields(name):
            raise ValueError(f"{section}.{key} is not allowed: the network's {key} field is set "
                             f"from {TRAIN_STEP_FIELDS[key]}.")
        if key not in allowed:
            raise ValueError(f"{section}.{key} is not a field of model {name!r}; allowed: "
                             f"{[f for f in allowed if f != 'centered']}.")
        fields[key] = tuple(value) if isinstance(value, list) else value
        cf.record(f"{section}.{key}", f"{NETWORK_FIELD}{name}")  # the module validates it
    if "centered" in allowed:
        fields["centered"] = cf.boolean(config, "data.centered")
    return models.get_model(name, **fields)


def optimizer(config, root: str = "") -> tuple[optax.GradientTransformation, float]:
    """``(optimiser, lr)``: global-norm clipping (``optim.grad_clip``; 0 disables it), then Adam
    (``optim.lr``, ``beta1``, ``beta2``, ``eps``), AdamW when ``optim.weight_decay`` > 0
    (decoupled; PyTorch's ``Adam(weight_decay=…)`` adds an L2 term instead — the official runs
    use 0), with score_sde's linear warm-up lr·min(step/warmup, 1) when ``optim.warmup`` > 0."""
    lr = cf.number(config, f"{root}optim.lr", low=0)
    b1 = cf.number(config, f"{root}optim.beta1", low=0, high=1, high_open=True)
    b2 = cf.number(config, f"{root}optim.beta2", low=0, high=1, high_open=True)
    eps = cf.number(config, f"{root}optim.eps", low=0, low_open=True)
    weight_decay = cf.number(config, f"{root}optim.weight_decay", low=0)
    warmup = cf.integer(config, f"{root}optim.warmup", 0)
    clip = cf.number(config, f"{root}optim.grad_clip", low=0)
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else lr
    if weight_decay > 0:
        adam = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        adam = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    return (optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam), lr


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The training loop's schedule (``config.training``; docs/config.md has each field), the
    learning rate it logs and whether ``--mode=train`` evaluates when it ends."""

    batch_size: int
    lr: float
    n_iters: int
    n_jitted_steps: int
    log_freq: int
    eval_freq: int
    snapshot_freq: int
    keep_checkpoints: int
    keep_every: int
    snapshot_sampling: bool
    snapshot_num_samples: int
    qc_every: int
    init_from: str
    init_step: int
    evaluate_after: bool


def training(config, lr: float, qc_every: int, root: str = "") -> TrainingOptions:
    """The schedule of ``{root}training`` (``lr`` the optimiser's), and
    ``training.evaluate_after`` (the run's: a DLSM run evaluates its classifier)."""
    n_jitted = cf.integer(config, f"{root}training.n_jitted_steps", 1)
    options = TrainingOptions(
        batch_size=cf.integer(config, f"{root}training.batch_size", 1),
        lr=lr,
        n_iters=cf.integer(config, f"{root}training.n_iters", 0),
        n_jitted_steps=n_jitted,
        log_freq=cf.integer(config, f"{root}training.log_freq", 1),
        eval_freq=cf.integer(config, f"{root}training.eval_freq", 0),
        snapshot_freq=cf.integer(config, f"{root}training.snapshot_freq", 1),
        keep_checkpoints=cf.integer(config, f"{root}training.keep_checkpoints", 1),
        keep_every=cf.integer(config, f"{root}training.keep_every", 0),
        snapshot_sampling=cf.boolean(config, f"{root}training.snapshot_sampling"),
        snapshot_num_samples=cf.integer(config, f"{root}training.snapshot_num_samples", 1),
        qc_every=qc_every,
        init_from=cf.string(config, f"{root}training.init_from"),
        init_step=cf.integer(config, f"{root}training.init_step", -1),
        evaluate_after=cf.boolean(config, "training.evaluate_after"),
    )
    for field in ("n_iters", "log_freq", "eval_freq", "snapshot_freq", "keep_every"):
        value = getattr(options, field)
        if value:  # score_sde asserts the same: a scan of n steps cannot stop in between
            cf.multiple_of(f"{root}training.{field}", value, n_jitted,
                           f"{root}training.n_jitted_steps")
    if options.qc_every > 1:  # a call of n_jitted_steps steps holds at most one QC step
        cf.multiple_of(f"{root}training.qc_every", options.qc_every, n_jitted,
                       f"{root}training.n_jitted_steps")
    if options.keep_every:
        cf.multiple_of(f"{root}training.keep_every", options.keep_every, options.snapshot_freq,
                       f"{root}training.snapshot_freq")
    return options


def data_source(config, keys: dict[str, Array], batch_size: int,
                random_flip: bool | None = None) -> data_lib.DataSource:
    """The data source of ``config.data`` with global batch ``batch_size`` (nothing is read until
    it is used); ``random_flip`` replaces ``data.random_flip`` (images) when given."""
    dataset = cf.get(config, "data.dataset")
    if dataset in data_lib.TOY_DATASETS:
        num_points = cf.integer(config, "data.num_points", 1)
        if batch_size > num_points:
            raise ValueError(f"training.batch_size={batch_size} exceeds data.num_points="
                             f"{num_points}; allowed: at most {num_points}.")
        return data_lib.toy_source(dataset, num_points=num_points, data_key=keys["data"],
                                   batch_key=keys["batches"], batch_size=batch_size)
    data_dir = cf.string(config, "data.data_dir")
    return data_lib.image_source(
        dataset, image_size=cf.integer(config, "data.image_size", 1), batch_size=batch_size,
        batch_key=keys["batches"], aug_key=keys["data"],
        random_flip=cf.boolean(config, "data.random_flip") if random_flip is None else random_flip,
        uniform_dequantization=cf.boolean(config, "data.uniform_dequantization"),
        centered=cf.boolean(config, "data.centered"),
        num_channels=cf.integer(config, "data.num_channels", 1), data_dir=data_dir or None)
