"""The experiment builder of a DLSM classifier run (the classifier half of the config; the
score half is :func:`sgm_jax.experiment.build_experiment`).

    score = build_experiment(config)                      # the unconditional score model's run
    experiment = build_classifier_experiment(config, score)
    state = train(experiment, workdir, frozen=score_ema_params)       # sgm_jax.train

A DLSM config is a score-model config plus three sections (``add_dlsm_sections`` of
``configs/default_dlsm_cifar10.py``; docs/config.md describes each field):

* ``classifier.model`` (name, condition, network fields), ``classifier.training`` (the schedule
  fields of ``training`` plus the objective: ``objective`` "ce" | "dlsm" | "total", ``ce_weight``,
  ``dlsm_weighting``, ``reduce_mean``, ``eps``; :mod:`sgm_jax.classifier_loss`),
  ``classifier.optim`` (the fields of ``optim``), ``classifier.random_flip`` (the classifier's
  own ``data.random_flip``; images only), ``classifier.score_workdir`` (the run of the
  frozen score model; "" means the classifier run's own workdir, where stage 1 trains it) and
  ``classifier.score_checkpoint`` (its step, −1 the latest);
* ``guidance.method`` "base" | "scaling" | "dlsm" and ``guidance.scale`` α
  (:mod:`sgm_jax.guidance`);
* ``eval.samples_per_class`` and the conditional evaluation's fields (:class:`ConditionalEvalOptions`).

The classifier's randomness comes from the run's seed: its keys are those of
:func:`sgm_jax.experiment.run_keys` folded with :data:`CLASSIFIER_STREAM`, so the score model
and the classifier of one seed never share a key.

**Modes, as the official code** (``run_lib_classifier.py``, ``losses.py``, ``sampling.py``).
The classifier trains in training mode: the BatchNorm ResNet normalises by the statistics of
the perturbed batch and updates its running statistics once per step (``TrainState.model_state``,
:mod:`sgm_jax.checkpoints`), and the DLSM term's likelihood score is the gradient of the batch
sum of log p(y | x̃) (the official ``autograd.grad`` with one-hot ``grad_outputs``), which mixes
examples through the batch statistics exactly as the released training did. This is accepted,
against DESIGN §3.1, because it is the released network and its training; every other use is in
evaluation mode with the running statistics, where examples are independent and per-example
gradients exact: the evaluation loss during training (the official accuracy step runs in
``eval()`` mode), guided sampling and the conditional evaluation (:meth:`logits_model`,
:meth:`posterior_score_model`). The EMA (``classifier.optim.ema_rate``; 0 in the DLSM configs,
which save the raw weights as the official code) averages the parameters only; the running
statistics are used as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sgm_jax import classifier_loss
from sgm_jax import config_fields as cf
from sgm_jax import config_sections as sections
from sgm_jax import data as data_lib
from sgm_jax import guidance, models
from sgm_jax.config_sections import TrainingOptions
from sgm_jax.ema import EMA_WARMUPS
from sgm_jax.experiment import Experiment, run_keys
from sgm_jax.types import Array, LogitsModel, ScoreModel

CLASSIFIER_STREAM = 1


@dataclasses.dataclass(frozen=True)
class ConditionalEvalOptions:
    """The conditional evaluation (``config.eval``; docs/config.md describes each field).

    ``checkpoint`` is the classifier's step (−1: the latest); the score model's is
    ``classifier.score_checkpoint``. Toy data: class-wise P/R/D/C of ``samples_per_class``
    samples per class and the posterior-score errors on a ``grid_size``² grid over
    ``grid_range`` = (x_min, x_max, y_min, y_max) at the noise level σ = ``grid_sigma``. Images:
    the image evaluation of the score model's config on the conditional samples, class-wise
    P/R/D/C and, with ``enable_cas``, the classification accuracy score; without Inception, in
    the space of a feature classifier trained for ``feature_steps`` steps.
    """

    checkpoint: int
    samples_per_class: int
    batch_size: int
    prdc_k: int
    grid_size: int
    grid_range: tuple[float, float, float, float]
    grid_sigma: float
    enable_cas: bool
    cas_steps: int
    cas_batch_size: int
    cas_lr: float
    feature_steps: int


@dataclasses.dataclass(frozen=True)
class ClassifierExperiment:
    """The objects of a classifier run (module docstring), next to its score model's run
    ``score``. ``loss_fn(logits_model, score_model, x0, y, key) -> (loss, aux)``."""

    name: str
    seed: int
    score: Experiment
    data: data_lib.DataSource
    network: nn.Module
    condition: str
    objective: str
    loss_settings: dict
    optimizer: optax.GradientTransformation
    ema_rate: float
    ema_warmup: str
    loss_fn: classifier_loss.ClassifierLossFn
    training: TrainingOptions
    guidance: str
    scale: float
    score_workdir: str
    score_checkpoint: int
    evaluation: ConditionalEvalOptions

    @property
    def is_toy(self) -> bool:
        return self.score.is_toy

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.data.event_shape

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def keys(self) -> dict[str, Array]:
        return classifier_keys(self.seed)

    def eval_key(self) -> Array:
        return jax.random.fold_in(self.score.eval_key(), CLASSIFIER_STREAM)

    def init_params(self, key: Array) -> Any:
        """The network's variables (parameters and, for the ResNet, running statistics) for
        one example of the data's event shape."""
        x = jnp.zeros((1, *self.event_shape), jnp.float32)
        return self.network.init(key, x, jnp.ones((1,), jnp.float32))

    def logits_model(self, variables: Any) -> LogitsModel:
        """``logits_model(x, t) -> [B, num_classes]`` of the classifier with ``variables``
        (parameters and model state, :func:`sgm_jax.checkpoints.eval_variables`) in evaluation
        mode: running statistics, examples independent."""
        condition, network = models.conditioning_fn(self.condition, self.score.sde.marginal_std), self.network
        return lambda x, t: network.apply(variables, x, condition(t))

    def training_logits_model(self, params: Any, model_state: Any,
                              dropout_key: Array) -> Callable[[Array, Array], tuple[Array, Any]]:
        """``(x, t) -> (logits, model_state)`` of the classifier in training mode: batch
        statistics, and the collections of ``model_state`` (mutable) updated by the pass."""
        condition, network = models.conditioning_fn(self.condition, self.score.sde.marginal_std), self.network
        variables, mutable = {**params, **model_state}, list(model_state)
        rngs = {"dropout": dropout_key}
        return lambda x, t: network.apply(variables, x, condition(t), train=True, rngs=rngs,
                                          mutable=mutable)

    def posterior_score_model(self, score_params: Any, variables: Any,
                              labels: Array) -> ScoreModel:
        """The conditional score s(x, t) + α ∇ₓ log p(y | x, t) of the score model with
        ``score_params`` and the classifier with ``variables`` (evaluation mode,
        :meth:`logits_model`) at ``labels`` [B] (guidance α)."""
        return guidance.posterior_score_model(self.score.score_model(score_params),
                                              self.logits_model(variables), labels, self.scale)

    def step_losses(self) -> tuple[classifier_loss.ClassifierLossFn]:
        """The loss of the train steps: a classifier has one kind of step."""
        return (self.loss_fn,)

    def batch_loss(self, params: Any, batch: dict, key: Array, *, model_state: Any = None,
                   loss_fn: classifier_loss.ClassifierLossFn | None = None, frozen: Any = None,
                   dropout_key: Array | None = None) -> tuple[Array, tuple[dict, Any]]:
        """``loss_fn`` (default ``self.loss_fn``) of the classifier with ``params`` and
        ``model_state`` (None: ``{}``) against the frozen score model of the parameters
        ``frozen`` on ``batch`` ("x", "label"): ``(loss, (aux, model_state))``. With
        ``dropout_key`` (training) the classifier runs in training mode and the model state
        comes back updated; without it, in evaluation mode, unchanged (module docstring)."""
        model_state = {} if model_state is None else model_state
        score_model = None if frozen is None else self.score.score_model(frozen)
        if score_model is None and self.objective != "ce":
            raise ValueError(f"classifier.training.objective={self.objective!r} needs the frozen "
                             "score model's parameters (frozen=None was given).")
        loss_fn = loss_fn or self.loss_fn
        x, labels = batch["x"], batch["label"]
        if dropout_key is None:
            loss, aux = loss_fn(self.logits_model({**params, **model_state}), score_model, x,
                                labels, key)
            return loss, (aux, model_state)
        return loss_fn(self.training_logits_model(params, model_state, dropout_key), score_model,
                       x, labels, key, has_state=True)


def classifier_keys(seed: int) -> dict[str, Array]:
    """The keys of the classifier run of ``seed``: :func:`run_keys` folded with
    :data:`CLASSIFIER_STREAM`."""
    return {k: jax.random.fold_in(v, CLASSIFIER_STREAM) for k, v in run_keys(seed).items()}


def _classifier_network(config, num_classes: int) -> tuple[nn.Module, str]:
    condition = cf.choice(config, "classifier.model.condition", models.CONDITIONS)
    network = sections.network(config, "classifier.model")
    classes = getattr(network, "num_classes", None)
    if classes != num_classes:
        raise ValueError(f"classifier.model.num_classes must equal the data set's number of "
                         f"classes ({num_classes}); got {classes!r}.")
    return network, condition


def _loss(config, sde) -> tuple[dict, classifier_loss.ClassifierLossFn]:
    """The classifier's loss settings (``classifier.training``'s objective fields) and loss."""
    root = "classifier.training."
    settings = dict(
        objective=cf.choice(config, root + "objective", classifier_loss.OBJECTIVES),
        ce_weight=cf.number(config, root + "ce_weight", low=0),
        dlsm_weighting=cf.choice(config, root + "dlsm_weighting", classifier_loss.DLSM_WEIGHTINGS),
        reduce_mean=cf.boolean(config, root + "reduce_mean"),
        eps=cf.number(config, root + "eps", low=0, high=sde.T, low_open=True, high_open=True))
    return settings, classifier_loss.get_classifier_loss_fn(sde, **settings)


def _evaluation(config) -> ConditionalEvalOptions:
    grid_range = tuple(cf.get(config, "eval.grid_range"))
    if len(grid_range) != 4 or not (grid_range[0] < grid_range[1] and grid_range[2] < grid_range[3]):
        raise ValueError(f"eval.grid_range must be (x_min, x_max, y_min, y_max) with x_min < x_max "
                         f"and y_min < y_max; got {grid_range!r}.")
    cf.record("eval.grid_range", "(x_min, x_max, y_min, y_max) with x_min < x_max and "
                                 "y_min < y_max")
    return ConditionalEvalOptions(
        checkpoint=cf.integer(config, "eval.checkpoint", -1),
        samples_per_class=cf.integer(config, "eval.samples_per_class", 1),
        batch_size=cf.integer(config, "eval.batch_size", 1),
        prdc_k=cf.integer(config, "eval.prdc_k", 1),
        grid_size=cf.integer(config, "eval.grid_size", 2),
        grid_range=tuple(float(v) for v in grid_range),
        grid_sigma=cf.number(config, "eval.grid_sigma", low=0, low_open=True),
        enable_cas=cf.boolean(config, "eval.enable_cas"),
        cas_steps=cf.integer(config, "eval.cas_steps", 1),
        cas_batch_size=cf.integer(config, "eval.cas_batch_size", 1),
        cas_lr=cf.number(config, "eval.cas_lr", low=0, low_open=True),
        feature_steps=cf.integer(config, "eval.feature_steps", 1),
    )


def build_classifier_experiment(config, score: Experiment | None = None, *,
                                num_devices: int | None = None) -> ClassifierExperiment:
    """Read and validate the classifier half of ``config`` (module docstring). ``score`` is the
    score model's experiment of the same config (built when not given)."""
    from sgm_jax.experiment import build_experiment
    from sgm_jax.parallel import check_batch_divisible

    if not cf.has(config, "classifier"):
        raise ValueError("the config has no 'classifier' section: it describes an unconditional "
                         "score model, not a DLSM run (see configs/dlsm/).")
    score = build_experiment(config, num_devices=num_devices) if score is None else score
    if score.data.num_classes < 2:
        raise ValueError(f"data.dataset={score.dataset!r} has no class labels; a classifier "
                         "needs a labelled data set.")
    network, condition = _classifier_network(config, score.data.num_classes)
    optimizer, lr = sections.optimizer(config, "classifier.")
    ema_rate = cf.number(config, "classifier.optim.ema_rate", low=0, high=1)
    ema_warmup = cf.choice(config, "classifier.optim.ema_warmup", EMA_WARMUPS)
    training = sections.training(config, lr, 1, "classifier.")
    if training.snapshot_sampling:
        raise ValueError("classifier.training.snapshot_sampling must be False: a classifier run "
                         "draws no samples while training (--mode=sample draws conditional ones).")
    if training.init_from:
        raise ValueError("classifier.training.init_from is not supported: a classifier run "
                         f"starts from its own checkpoints; got {training.init_from!r}.")
    num_devices = jax.device_count() if num_devices is None else num_devices
    check_batch_divisible(training.batch_size, num_devices)
    loss_settings, loss_fn = _loss(config, score.sde)
    objective = loss_settings["objective"]
    method = cf.choice(config, "guidance.method", guidance.GUIDANCE_METHODS)
    scale = cf.number(config, "guidance.scale", low=0, low_open=True)
    guidance.check_guidance(method, scale, objective)
    evaluation = _evaluation(config)
    seed = score.seed
    # the score model's data set (the toy points are drawn from its "data" key), the
    # classifier's own batch order
    keys = {**classifier_keys(seed), "data": run_keys(seed)["data"]}
    data = sections.data_source(config, keys, training.batch_size,
                                random_flip=cf.boolean(config, "classifier.random_flip"))
    return ClassifierExperiment(
        name=f"{score.dataset} classifier ({objective}, {method} guidance α={scale:g})",
        seed=seed, score=score, data=data, network=network, condition=condition,
        objective=objective, loss_settings=loss_settings, optimizer=optimizer,
        ema_rate=ema_rate, ema_warmup=ema_warmup, loss_fn=loss_fn,
        training=training, guidance=method, scale=scale,
        score_workdir=cf.string(config, "classifier.score_workdir"),
        score_checkpoint=cf.integer(config, "classifier.score_checkpoint", -1),
        evaluation=evaluation)
