"""The experiment builder: the one place that reads a config (DESIGN.md §1).

    experiment = build_experiment(config)        # validates every field while reading it
    state = train(experiment, workdir)           # sgm_jax.train
    results = evaluate(experiment, workdir)      # sgm_jax.evaluate

:func:`build_experiment` turns a config (``configs/default_*.py`` schema, see BUILD.md) into an
:class:`Experiment`: the data source, the SDE, the network and how it is conditioned, the score
parameterisation, the optimiser, the training loss (and its lazy-QC variant), the sampler and
the training and evaluation options. Training, evaluation and the benchmarks receive these
objects and never read the config again. A bad field raises ``ValueError`` naming the field, the
value and what is allowed, before any data, model or checkpoint work.

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
from sgm_jax import data as data_lib
from sgm_jax.ema import EMA_WARMUPS
from sgm_jax import models, sampling
from sgm_jax import sde as sde_lib
from sgm_jax import sde_loss
from sgm_jax.parallel import check_batch_divisible

Array = jax.Array
ScoreModel = Callable[[Array, Array], Array]

#: What the network receives as its conditioning input, a function of t [B] and the SDE:
#: "t" the SDE time, "sigma" σ_t (the official toy network), "log_sigma" log σ_t (NCSN++ with
#: Gaussian Fourier features, score_sde VE continuous), "999t" 999·t (DDPM++ / DDPM with
#: positional features, score_sde VP / sub-VP continuous).
CONDITIONS = ("t", "sigma", "log_sigma", "999t")
#: The samplers whose arguments the config carries.
SAMPLING_METHODS = ("ode", "pc", "reverse_sde")
EVAL_SEED_OFFSET = 10_000


def conditioning_fn(condition: str, sde: sde_lib.SDE) -> Callable[[Array], Array]:
    """``t [B] -> the network's conditioning input [B]`` for ``condition`` (see CONDITIONS)."""
    if condition == "t":
        return lambda t: t
    if condition == "sigma":
        return sde.marginal_std
    if condition == "log_sigma":
        return lambda t: jnp.log(sde.marginal_std(t))
    if condition == "999t":
        return lambda t: 999.0 * t
    raise ValueError(f"model.condition must be one of {CONDITIONS}; got {condition!r}.")


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The training loop's schedule (``config.training``; see BUILD.md for each field)."""

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


@dataclasses.dataclass(frozen=True)
class ToyEvalOptions:
    """The QCSGM toy evaluation protocol (``config.eval`` of the toy configs)."""

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
    """The image evaluation (``config.eval`` of the image configs; BUILD.md describes each)."""

    checkpoint: int
    batch_size: int
    num_samples: int
    grid_samples: int
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
    """The objects of one run, built from a validated config by :func:`build_experiment`.

    ``loss_fn(score_model, x0, key) -> (loss, aux)`` is the training objective (DESIGN §3.5);
    with lazy regularisation (``training.qc_every`` = k > 1) the train step uses ``qc_loss_fn``
    (the QC weight × k) on every k-th step and ``lazy_loss_fn`` (no QC term) on the others.
    ``sampler(score_model, shape, key) -> (samples, nfe)``.
    """

    name: str
    dataset: str
    config: Any
    seed: int
    data: data_lib.DataSource
    sde: sde_lib.SDE
    network: nn.Module
    condition: str
    parameterisation: str
    optimizer: optax.GradientTransformation
    ema_rate: float
    ema_warmup: str
    loss_fn: sde_loss.LossFn
    qc_loss_fn: sde_loss.LossFn
    lazy_loss_fn: sde_loss.LossFn | None
    sampler: Callable
    sampler_settings: dict
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
        parameterisation. ``train=True`` runs dropout with ``dropout_key``; evaluation and sampling
        use the default, deterministic ``train=False``."""
        condition = conditioning_fn(self.condition, self.sde)
        network = self.network
        if train:
            rngs = {"dropout": dropout_key}

            def apply_fn(p, x, t):
                return network.apply(p, x, condition(t), train=True, rngs=rngs)
        else:
            def apply_fn(p, x, t):
                return network.apply(p, x, condition(t))
        return models.make_score_fn(apply_fn, params, self.parameterisation, self.sde.marginal_std)

    def training_loss_fn(self, with_qc: bool = True) -> sde_loss.LossFn:
        """The loss of a train step: ``qc_loss_fn``, or with lazy regularisation and
        ``with_qc=False`` the loss of the steps without QC, ``lazy_loss_fn``."""
        if with_qc or self.lazy_loss_fn is None:
            return self.qc_loss_fn
        return self.lazy_loss_fn

    def batch_loss(self, params: Any, batch: dict, key: Array, *, model_state: Any = None,
                   loss_fn: sde_loss.LossFn | None = None, frozen: Any = None,
                   dropout_key: Array | None = None) -> tuple[Array, tuple[dict, Any]]:
        """``loss_fn`` (default ``self.loss_fn``) of the score model of ``params`` on
        ``batch["x"]``: ``(loss, (aux, model_state))``. Dropout runs when ``dropout_key`` is
        given (training). Score networks have no model state (their examples never interact,
        DESIGN §3.1): ``model_state`` comes back as given (``{}`` for None). ``frozen`` is unused
        (the train step's slot for a classifier's frozen score model)."""
        del frozen
        score_model = self.score_model(params, train=dropout_key is not None,
                                       dropout_key=dropout_key)
        loss, aux = (loss_fn or self.loss_fn)(score_model, batch["x"], key)
        return loss, (aux, {} if model_state is None else model_state)


def run_keys(seed: int) -> dict[str, Array]:
    """The keys "data", "batches", "init" and "train" of a run with ``seed`` (module docstring)."""
    names = ("data", "batches", "init", "train")
    return dict(zip(names, jax.random.split(jax.random.PRNGKey(seed), len(names))))


# --------------------------------------------------------------------------- reading the config


def sde_from_config(config) -> sde_lib.SDE:
    """The SDE of ``config.sde`` (``name``: vesde with ``sigma_min`` < ``sigma_max``, or vpsde /
    subvpsde with ``beta_min`` < ``beta_max``; ``num_scales``), validated field by field."""
    name = cf.get(config, "sde.name")
    if not isinstance(name, str) or name.lower() not in sde_lib.SDE_NAMES:
        raise ValueError(f"sde.name must be one of {sde_lib.SDE_NAMES}; got {name!r}.")
    name = name.lower()
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


def _data(config, keys: dict[str, Array], batch_size: int,
          random_flip: bool | None = None) -> data_lib.DataSource:
    """The data source of ``config.data`` with global batch ``batch_size``; ``random_flip``
    replaces ``data.random_flip`` (images) when given."""
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


def _network(config) -> nn.Module:
    cf.choice(config, "model.name", models.available_models())
    cf.choice(config, "model.parameterisation", models.PARAMETERISATIONS)
    cf.choice(config, "model.condition", CONDITIONS)
    return models.network_from_config(config)


def _optimizer(config, root: str = "") -> optax.GradientTransformation:
    """Global-norm clipping (``optim.grad_clip``; 0 disables it), then Adam (``optim.lr``,
    ``beta1``, ``beta2``, ``eps``), AdamW when ``optim.weight_decay`` > 0 (decoupled; PyTorch's
    ``Adam(weight_decay=…)`` adds an L2 term instead — the official runs use 0), with score_sde's
    linear warm-up lr·min(step/warmup, 1) when ``optim.warmup`` > 0. ``root`` prefixes the
    fields' paths (``"classifier."`` for a classifier's optimiser)."""
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
    return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


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


def _sampler(config, sde) -> tuple[Callable, dict]:
    """The sampler of ``sampling.method`` and its settings; the fields of every method are
    checked."""
    method = cf.choice(config, "sampling.method", SAMPLING_METHODS)
    eps = cf.number(config, "sampling.eps", low=0, high=sde.T, low_open=True, high_open=True)
    ode = dict(rtol=cf.number(config, "sampling.rtol", low=0, low_open=True),
               atol=cf.number(config, "sampling.atol", low=0, low_open=True))
    # snr < 1: the Langevin corrector's stationary variance grows as 1/(1 − snr²)
    pc = dict(predictor=cf.choice(config, "sampling.predictor", sampling.PREDICTORS),
              corrector=cf.choice(config, "sampling.corrector", sampling.CORRECTORS),
              snr=cf.number(config, "sampling.snr", low=0, high=1, low_open=True, high_open=True),
              n_steps=cf.integer(config, "sampling.n_steps", 1))
    arguments = {"ode": ode, "pc": pc, "reverse_sde": {}}[method]
    return (sampling.get_sampler(method, sde=sde, eps=eps, **arguments),
            {"method": method, "eps": eps, **arguments})


def _training(config, qc_every: int, root: str = "") -> TrainingOptions:
    """The schedule of ``{root}training`` (``root`` "classifier." for a classifier run)."""
    n_jitted = cf.integer(config, f"{root}training.n_jitted_steps", 1)
    options = TrainingOptions(
        batch_size=cf.integer(config, f"{root}training.batch_size", 1),
        lr=cf.number(config, f"{root}optim.lr", low=0),
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


def _toy_evaluation(config, sde) -> ToyEvalOptions:
    return ToyEvalOptions(
        num_points=cf.integer(config, "eval.num_points", 1),
        num_levels=cf.integer(config, "eval.num_levels", 1),
        nll_num_points=cf.integer(config, "eval.nll_num_points", 1),
        num_samples=cf.integer(config, "sampling.num_samples", 1),
        prdc_k=cf.integer(config, "eval.prdc_k", 1),
        checkpoint=cf.integer(config, "eval.checkpoint", -1),
        rtol=cf.number(config, "sampling.rtol", low=0, low_open=True),
        atol=cf.number(config, "sampling.atol", low=0, low_open=True),
        eps=cf.number(config, "sampling.eps", low=0, high=sde.T, low_open=True, high_open=True),
    )


def _image_evaluation(config, sde) -> ImageEvalOptions:
    stats_dir = cf.string(config, "eval.stats_dir")
    return ImageEvalOptions(
        checkpoint=cf.integer(config, "eval.checkpoint", -1),
        batch_size=cf.integer(config, "eval.batch_size", 1),
        num_samples=cf.integer(config, "eval.num_samples", 1),
        grid_samples=cf.integer(config, "sampling.num_samples", 1),
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
    optimizer = _optimizer(config)
    ema_rate = cf.number(config, "optim.ema_rate", low=0, high=1)
    ema_warmup = cf.choice(config, "optim.ema_warmup", EMA_WARMUPS)
    sampler, sampler_settings = _sampler(config, sde)
    training = _training(config, cf.integer(config, "training.qc_every", 1))
    num_devices = jax.device_count() if num_devices is None else num_devices
    check_batch_divisible(training.batch_size, num_devices)
    check_batch_divisible(training.batch_size, jax.process_count())
    evaluation = _toy_evaluation(config, sde) if is_toy else _image_evaluation(config, sde)
    loss_options = _loss_options(config, sde)
    data = _data(config, run_keys(seed), training.batch_size)
    esm_target = data.points if is_toy and loss_options["objective"] == "esm" else None
    loss_fn, qc_loss_fn, lazy_loss_fn = _losses(sde, loss_options, esm_target,
                                                training.qc_every, num_devices)
    parameterisation = cf.get(config, "model.parameterisation")
    objective = cf.get(config, "training.objective")
    return Experiment(
        name=f"{dataset} ({parameterisation}, {objective})", dataset=dataset, config=config,
        seed=seed,
        data=data, sde=sde, network=network, condition=cf.get(config, "model.condition"),
        parameterisation=parameterisation, optimizer=optimizer, ema_rate=ema_rate,
        ema_warmup=ema_warmup,
        loss_fn=loss_fn, qc_loss_fn=qc_loss_fn, lazy_loss_fn=lazy_loss_fn, sampler=sampler,
        sampler_settings=sampler_settings, training=training,
        evaluation=evaluation)
