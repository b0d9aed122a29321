"""The experiment builder of a score model's run: the one place that reads its config
(DESIGN.md §1).

    experiment = build_experiment(config)        # validates every field while reading it
    state = train(experiment, workdir)           # sgm_jax.train
    results = evaluate(experiment, workdir)      # sgm_jax.evaluate

:func:`build_experiment` turns a config (``configs/default_*.py`` schema, docs/config.md) into an
:class:`Experiment`: the data source, the SDE, the network and how it is conditioned, the score
parameterisation, the optimiser, the training loss (and its lazy-QC variant), the sampler and
the training and evaluation options. Training, evaluation and the benchmarks receive these
objects and never read the config again; nothing is loaded while building (the data source
reads its splits on first use). A bad field raises ``ValueError`` naming the field, the value and
what is allowed. The sections both builders read are :mod:`sgm_jax.config_sections`.

Randomness comes from ``config.seed`` only: ``jax.random.PRNGKey(seed)`` splits into the keys
``data`` (the toy training set; the augmentation of images), ``batches`` (the epoch
permutations), ``init`` (the parameters) and ``train`` (``TrainState.key``: step k's loss key is
``fold_in(key, k)``); evaluation draws from ``PRNGKey(seed + 10000)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sgm_jax import config_fields as cf
from sgm_jax import config_sections as sections
from sgm_jax import data as data_lib
from sgm_jax import models
from sgm_jax import sde as sde_lib
from sgm_jax import sde_loss
from sgm_jax.config_sections import TrainingOptions, sde_from_config
from sgm_jax.ema import EMA_WARMUPS
from sgm_jax.models.layerspp import REMAT_POLICIES
from sgm_jax.parallel import check_batch_divisible
from sgm_jax.sampling_builder import SamplingTask, sampler_from_config, task_from_config
from sgm_jax.types import Array, ScoreModel

__all__ = ["Experiment", "ImageEvalOptions", "ToyEvalOptions", "TrainingOptions",
           "build_experiment", "run_keys", "sde_from_config"]

#: ``training.compute_dtype``: the network field ``dtype`` each value sets (float32: none, the
#: network as evaluation and sampling run it).
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
EVAL_SEED_OFFSET = 10_000


@dataclasses.dataclass(frozen=True)
class ToyEvalOptions:
    """The QCSGM toy evaluation protocol (``config.eval`` of the toy configs); the likelihood
    ODE solves with the sampler's tolerances (``sampling.rtol``, ``atol``, ``eps``)."""

    num_points: int
    num_levels: int
    nll_num_points: int
    num_samples: int
    prdc_k: int
    checkpoint: int
    rtol: float
    atol: float
    eps: float


@dataclasses.dataclass(frozen=True)
class ImageEvalOptions:
    """The image evaluation (``config.eval`` of the image configs; docs/config.md describes
    each field)."""

    checkpoint: int
    batch_size: int
    num_samples: int
    centered: bool
    enable_sampling: bool
    enable_fid: bool
    inception_weights: str
    stats_dir: str
    reference_features: str
    prdc_k: int
    kid_subset_size: int
    kid_num_subsets: int
    is_splits: int
    enable_bpd: bool
    bpd_repeats: int
    bpd_num_examples: int
    bpd_rtol: float
    bpd_atol: float
    bpd_eps: float
    enable_asym: bool
    asym_num_levels: int
    asym_num_vectors: int
    asym_num_examples: int


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The objects of one score model's run, built from a validated config by
    :func:`build_experiment`; what :func:`sgm_jax.train.train` needs of a run
    (:class:`sgm_jax.train.Trainable`) and what evaluation and sampling use.

    ``loss_fn(score_model, x0, key) -> (loss, aux)`` is the training objective (DESIGN §3.5),
    built from ``loss_settings`` (the arguments of ``sde_loss.get_sde_loss_fn``);
    with lazy regularisation (``training.qc_every`` = k > 1) the train steps use ``qc_loss_fn``
    (the QC weight × k) on every k-th step and ``lazy_loss_fn`` (no QC term) on the others
    (:meth:`step_losses`). ``sampler(score_model, shape, key) -> (samples, nfe)``;
    ``num_samples`` is the number ``--mode=sample`` draws (``sampling.num_samples``, also the
    image evaluation's sample grid); ``task`` the conditional task of ``--mode=sample``
    (``sampling.task``; None: unconditional samples). ``train_network`` is ``network`` as the
    train step runs it (``training.compute_dtype`` and ``training.remat``; ``network`` itself
    when both are the defaults): the same parameters, evaluated in float32 everywhere else.
    """

    name: str
    dataset: str
    seed: int
    data: data_lib.DataSource
    sde: sde_lib.SDE
    network: nn.Module
    train_network: nn.Module
    condition: str
    parameterisation: str
    optimizer: optax.GradientTransformation
    ema_rate: float
    ema_warmup: str
    loss_settings: dict
    loss_fn: sde_loss.LossFn
    qc_loss_fn: sde_loss.LossFn
    lazy_loss_fn: sde_loss.LossFn | None
    sampler: Callable
    sampler_settings: dict
    num_samples: int
    task: SamplingTask | None
    training: TrainingOptions
    evaluation: ToyEvalOptions | ImageEvalOptions

    @property
    def sampler_method(self) -> str:
        return self.sampler_settings["method"]

    @property
    def is_toy(self) -> bool:
        return isinstance(self.evaluation, ToyEvalOptions)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.data.event_shape

    def keys(self) -> dict[str, Array]:
        """The run's four keys (module docstring), derived from the seed."""
        return run_keys(self.seed)

    def eval_key(self) -> Array:
        return jax.random.PRNGKey(self.seed + EVAL_SEED_OFFSET)

    def init_params(self, key: Array) -> Any:
        """The network's variables for one example of the data's event shape."""
        x = jnp.zeros((1, *self.event_shape), jnp.float32)
        return self.network.init(key, x, jnp.ones((1,), jnp.float32))

    def score_model(self, params: Any, *, train: bool = False,
                    dropout_key: Array | None = None) -> ScoreModel:
        """``score_model(x, t) -> s`` of the network with ``params`` in the experiment's
        parameterisation. ``train=True`` runs ``train_network`` (its compute dtype and
        checkpointing) with dropout from ``dropout_key``; evaluation and sampling use the
        default, deterministic ``train=False`` of ``network``."""
        condition = models.conditioning_fn(self.condition, self.sde.marginal_std)
        network = self.train_network if train else self.network
        if train:
            rngs = {"dropout": dropout_key}

            def apply_fn(p, x, t):
                return network.apply(p, x, condition(t), train=True, rngs=rngs)
        else:
            def apply_fn(p, x, t):
                return network.apply(p, x, condition(t))
        return models.make_score_fn(apply_fn, params, self.parameterisation, self.sde.marginal_std)

    def step_losses(self) -> tuple[sde_loss.LossFn, ...]:
        """The losses of the train steps: ``(qc_loss_fn,)``, or with lazy regularisation the
        loss of the QC steps and that of the others."""
        if self.lazy_loss_fn is None:
            return (self.qc_loss_fn,)
        return self.qc_loss_fn, self.lazy_loss_fn

    def batch_loss(self, params: Any, batch: dict, key: Array, *, model_state: Any = None,
                   loss_fn: sde_loss.LossFn | None = None, frozen: Any = None,
                   dropout_key: Array | None = None) -> tuple[Array, tuple[dict, Any]]:
        """``loss_fn`` (default ``self.loss_fn``) of the score model of ``params`` on
        ``batch["x"]``: ``(loss, (aux, model_state))``. Dropout runs when ``dropout_key`` is
        given (training). A score network has no model state (its examples never interact,
        DESIGN §3.1) and no frozen parameters: ``model_state`` comes back as given (``{}`` for
        None) and ``frozen`` must be None."""
        if frozen is not None:
            raise ValueError("a score model's run has no frozen parameters; frozen must be None.")
        score_model = self.score_model(params, train=dropout_key is not None,
                                       dropout_key=dropout_key)
        loss, aux = (loss_fn or self.loss_fn)(score_model, batch["x"], key)
        return loss, (aux, {} if model_state is None else model_state)


def run_keys(seed: int) -> dict[str, Array]:
    """The keys "data", "batches", "init" and "train" of a run with ``seed`` (module docstring)."""
    names = ("data", "batches", "init", "train")
    return dict(zip(names, jax.random.split(jax.random.PRNGKey(seed), len(names))))


# --------------------------------------------------------------------------- reading the config


def _network(config) -> nn.Module:
    cf.choice(config, "model.parameterisation", models.PARAMETERISATIONS)
    cf.choice(config, "model.condition", models.CONDITIONS)
    return sections.network(config)


def _train_network(config, network: nn.Module) -> nn.Module:
    """``network`` as the train step runs it: with the ``dtype`` of ``training.compute_dtype``
    and the ``remat`` policy of ``training.remat`` (``network`` itself for float32 and "none").
    A network without these fields (the toy and small networks) allows the defaults only."""
    compute_dtype = cf.choice(config, "training.compute_dtype", tuple(COMPUTE_DTYPES))
    remat = cf.choice(config, "training.remat", tuple(REMAT_POLICIES))
    fields = {}
    if compute_dtype != "float32":
        fields["dtype"] = COMPUTE_DTYPES[compute_dtype]
    if remat != "none":
        fields["remat"] = remat
    name = cf.get(config, "model.name")
    for field, path, value in (("dtype", "training.compute_dtype", compute_dtype),
                               ("remat", "training.remat", remat)):
        if field in fields and field not in models.model_fields(name):
            having = [m for m in models.available_models() if field in models.model_fields(m)]
            default = "float32" if field == "dtype" else "none"
            raise ValueError(f"{path}={value!r} needs a network with a {field!r} field "
                             f"({', '.join(having)}); model.name={name!r} has none, so "
                             f"{path} allows only {default!r}.")
    return network.clone(**fields) if fields else network


def _loss_options(config, sde) -> dict:
    """The arguments of ``sde_loss.get_sde_loss_fn`` (read before any data are loaded)."""
    return dict(
        objective=cf.choice(config, "training.objective", sde_loss.OBJECTIVES),
        qc_weight=cf.number(config, "training.qc_weight", low=0),
        qc_num_vectors=cf.integer(config, "training.qc_num_vectors", 1),
        qc_estimator=cf.choice(config, "training.qc_estimator", sde_loss.QC_ESTIMATORS),
        qc_fraction=cf.number(config, "training.qc_fraction", low=0, high=1, low_open=True),
        weighting=cf.choice(config, "training.weighting", sde_lib.WEIGHTINGS),
        perturbation=cf.choice(config, "training.perturbation", sde_loss.PERTURBATIONS),
        reduce_mean=cf.boolean(config, "training.reduce_mean"),
        eps=cf.number(config, "training.eps", low=0, high=sde.T, low_open=True, high_open=True),
        num_projections=cf.integer(config, "training.num_projections", 1),
        projection=cf.choice(config, "training.projection", sde_loss.PROJECTIONS),
        fd_eps=cf.number(config, "training.fd_eps", low=0, low_open=True),
    )


def _losses(sde, options: dict, points, qc_every: int, num_devices: int
            ) -> tuple[sde_loss.LossFn, sde_loss.LossFn, sde_loss.LossFn | None]:
    """The training loss, the loss of a lazy-QC step (QC weight × ``qc_every``) and the loss of
    the other steps (no QC term; None without lazy regularisation). ``points`` is the toy
    training set when the objective is explicit score matching (its target), else None; partial QC
    (``training.qc_fraction``) selects rows within each of the ``num_devices`` batch shards."""
    options = dict(options)
    objective, qc_weight = options.pop("objective"), options.pop("qc_weight")
    if objective == "esm":
        if points is None:
            raise ValueError("training.objective='esm' needs a toy data set (its Parzen target "
                             "sums over the whole training set at every step).")
        options["data"] = jnp.asarray(points)

    def build(weight):
        return sde_loss.get_sde_loss_fn(sde, objective, qc_weight=weight,
                                        qc_groups=num_devices, **options)

    loss_fn = build(qc_weight)
    if qc_every > 1 and qc_weight > 0:
        return loss_fn, build(qc_weight * qc_every), build(0.0)
    return loss_fn, loss_fn, None


def _toy_evaluation(config, tolerances: dict) -> ToyEvalOptions:
    return ToyEvalOptions(
        num_points=cf.integer(config, "eval.num_points", 1),
        num_levels=cf.integer(config, "eval.num_levels", 1),
        nll_num_points=cf.integer(config, "eval.nll_num_points", 1),
        num_samples=cf.integer(config, "eval.num_samples", 1),
        prdc_k=cf.integer(config, "eval.prdc_k", 1),
        checkpoint=cf.integer(config, "eval.checkpoint", -1),
        **tolerances,
    )


def _image_evaluation(config, sde) -> ImageEvalOptions:
    stats_dir = cf.string(config, "eval.stats_dir")
    return ImageEvalOptions(
        checkpoint=cf.integer(config, "eval.checkpoint", -1),
        batch_size=cf.integer(config, "eval.batch_size", 1),
        num_samples=cf.integer(config, "eval.num_samples", 1),
        centered=cf.boolean(config, "data.centered"),
        enable_sampling=cf.boolean(config, "eval.enable_sampling"),
        enable_fid=cf.boolean(config, "eval.enable_fid"),
        inception_weights=cf.string(config, "eval.inception_weights"),
        stats_dir=stats_dir or os.path.join(os.path.expanduser("~"), ".cache", "sgm_jax", "stats"),
        reference_features=cf.string(config, "eval.reference_features"),
        prdc_k=cf.integer(config, "eval.prdc_k", 1),
        kid_subset_size=cf.integer(config, "eval.kid_subset_size", 2),
        kid_num_subsets=cf.integer(config, "eval.kid_num_subsets", 1),
        is_splits=cf.integer(config, "eval.is_splits", 1),
        enable_bpd=cf.boolean(config, "eval.enable_bpd"),
        bpd_repeats=cf.integer(config, "eval.bpd_repeats", 1),
        bpd_num_examples=cf.integer(config, "eval.bpd_num_examples", 0),
        bpd_rtol=cf.number(config, "eval.bpd_rtol", low=0, low_open=True),
        bpd_atol=cf.number(config, "eval.bpd_atol", low=0, low_open=True),
        bpd_eps=cf.number(config, "eval.bpd_eps", low=0, high=sde.T, low_open=True,
                          high_open=True),
        enable_asym=cf.boolean(config, "eval.enable_asym"),
        asym_num_levels=cf.integer(config, "eval.asym_num_levels", 1),
        asym_num_vectors=cf.integer(config, "eval.asym_num_vectors", 1),
        asym_num_examples=cf.integer(config, "eval.asym_num_examples", 0),
    )


def build_experiment(config, *, num_devices: int | None = None) -> Experiment:
    """Read and validate ``config`` and build the run's objects (module docstring).

    ``num_devices`` is the size of the data mesh (default ``jax.device_count()``, every device of
    every process); ``training.batch_size`` must be a multiple of it and of the process count.
    Nothing is loaded: the data source reads its splits on first use
    (:class:`~sgm_jax.data.DataSource`), so evaluation, sampling and checkpoint conversion never
    read the training split, and ``train`` loads it before its first step.
    """
    seed = cf.integer(config, "seed", 0)
    dataset = cf.choice(config, "data.dataset",
                        tuple(data_lib.TOY_DATASETS) + tuple(data_lib.IMAGE_DATASETS))
    is_toy = dataset in data_lib.TOY_DATASETS
    sde = sde_from_config(config)
    network = _network(config)
    train_network = _train_network(config, network)
    optimizer, lr = sections.optimizer(config)
    ema_rate = cf.number(config, "optim.ema_rate", low=0, high=1)
    ema_warmup = cf.choice(config, "optim.ema_warmup", EMA_WARMUPS)
    sampler, sampler_settings, tolerances = sampler_from_config(config, sde)
    training = sections.training(config, lr, cf.integer(config, "training.qc_every", 1))
    num_devices = jax.device_count() if num_devices is None else num_devices
    check_batch_divisible(training.batch_size, num_devices)
    check_batch_divisible(training.batch_size, jax.process_count())
    evaluation = (_toy_evaluation(config, tolerances) if is_toy
                  else _image_evaluation(config, sde))
    loss_options = _loss_options(config, sde)
    data = sections.data_source(config, run_keys(seed), training.batch_size)
    task = task_from_config(config, sde, data.event_shape, seed)
    esm_target = data.points if is_toy and loss_options["objective"] == "esm" else None
    loss_fn, qc_loss_fn, lazy_loss_fn = _losses(sde, loss_options, esm_target,
                                                training.qc_every, num_devices)
    parameterisation = cf.get(config, "model.parameterisation")
    objective = cf.get(config, "training.objective")
    return Experiment(
        name=f"{dataset} ({parameterisation}, {objective})", dataset=dataset, seed=seed,
        data=data, sde=sde, network=network, train_network=train_network, condition=cf.get(config, "model.condition"),
        parameterisation=parameterisation, optimizer=optimizer, ema_rate=ema_rate,
        ema_warmup=ema_warmup, loss_settings=loss_options, loss_fn=loss_fn,
        qc_loss_fn=qc_loss_fn, lazy_loss_fn=lazy_loss_fn, sampler=sampler,
        sampler_settings=sampler_settings,
        num_samples=cf.integer(config, "sampling.num_samples", 1), task=task, training=training,
        evaluation=evaluation)
