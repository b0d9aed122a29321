"""The part of the experiment builder (:mod:`sgm_jax.experiment`) that reads ``config.sampling``:
the unconditional sampler of ``sampling.method`` and the conditional task of ``sampling.task``
for ``--mode=sample``, every field validated (``ValueError`` naming the field, the value and what
is allowed); docs/config.md describes the fields."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sgm_jax import config_fields as cf
from sgm_jax import data as data_lib
from sgm_jax import sampling
from sgm_jax import sde as sde_lib
from sgm_jax.sampling import operators
from sgm_jax.types import Array, ScoreModel

#: The samplers whose arguments the config carries.
SAMPLING_METHODS = ("ode", "pc", "reverse_sde", "ddim", "heun")
#: What ``--mode=sample`` draws (``sampling.task``): unconditional samples, or a conditional task
#: on test images (:class:`SamplingTask`).
SAMPLING_TASKS = ("generate", "inpaint", "colorize", "dps")
#: ``sampling.mask = "random"`` draws its pixels with ``fold_in(PRNGKey(seed), MASK_STREAM)``.
MASK_STREAM = 1


@dataclasses.dataclass(frozen=True)
class SamplingTask:
    """A conditional task of ``--mode=sample`` (``sampling.task``), as pure functions:
    ``observe(x, key)`` the observation of model-space images x [B, H, W, C] (the images
    themselves for inpainting, their grey level for colorization, y = A(x) + n for DPS),
    ``sample(score_model, observation, key) -> (samples [B, H, W, C], nfe)``, ``show(observation)``
    the observation as images of x's shape for the grid; ``settings`` the fields that define it."""

    name: str
    observe: Callable[[Array, Array], Array]
    sample: Callable[[ScoreModel, Array, Array], tuple[Array, Any]]
    show: Callable[[Array], Array]
    settings: dict


def _pc_options(config, sde) -> dict:
    """The PC sampler's fields (``sampling.predictor``, ``corrector``, ``snr``, ``n_steps``,
    ``eps``), also those of inpainting and colorization."""
    predictor = cf.choice(config, "sampling.predictor", sampling.PREDICTORS)
    if predictor == "ancestral" and not isinstance(sde, (sde_lib.VESDE, sde_lib.VPSDE)):
        raise ValueError(f"sampling.predictor='ancestral' needs sde.name 'vesde' or 'vpsde' "
                         f"(score_sde's SMLD and DDPM chains); got {cf.get(config, 'sde.name')!r}. "
                         f"Allowed for it: 'euler_maruyama', 'reverse_diffusion', 'none'.")
    # snr < 1: the Langevin corrector's stationary variance grows as 1/(1 − snr²)
    return dict(predictor=predictor,
                corrector=cf.choice(config, "sampling.corrector", sampling.CORRECTORS),
                snr=cf.number(config, "sampling.snr", low=0, high=1, low_open=True,
                              high_open=True),
                n_steps=cf.integer(config, "sampling.n_steps", 1),
                eps=cf.number(config, "sampling.eps", low=0, high=sde.T, low_open=True,
                              high_open=True))


def sampler_from_config(config, sde) -> tuple[Callable, dict, dict]:
    """The sampler of ``sampling.method``, its settings and the ODE tolerances (``sampling.rtol``,
    ``atol``, ``eps``; the toy likelihood uses them too); the fields of every method are
    checked."""
    method = cf.choice(config, "sampling.method", SAMPLING_METHODS)
    pc = _pc_options(config, sde)
    ode = dict(rtol=cf.number(config, "sampling.rtol", low=0, low_open=True),
               atol=cf.number(config, "sampling.atol", low=0, low_open=True), eps=pc["eps"])
    ddim = dict(num_steps=cf.integer(config, "sampling.ddim_steps", 1),
                eta=cf.number(config, "sampling.eta", low=0, high=1))
    s_min = cf.number(config, "sampling.s_min", low=0)
    heun = dict(num_steps=cf.integer(config, "sampling.heun_steps", 1),
                rho=cf.number(config, "sampling.rho", low=0, low_open=True),
                s_churn=cf.number(config, "sampling.s_churn", low=0), s_min=s_min,
                s_max=cf.number(config, "sampling.s_max", low=s_min, infinite=True),
                s_noise=cf.number(config, "sampling.s_noise", low=0))
    arguments = {"ode": ode, "pc": pc, "reverse_sde": {"eps": pc["eps"]}, "ddim": ddim,
                 "heun": heun}[method]
    return (sampling.get_sampler(method, sde=sde, **arguments),
            {"method": method, **arguments}, ode)


def _task_fields(config) -> dict[str, Any]:
    """Every field of the conditional tasks (``sampling.mask``, ``mask_fraction``, ``mask_file``,
    ``operator``, ``pool_factor``, ``blur_sigma``, ``noise_std``, ``zeta``, ``dps_steps``), read
    and checked whatever ``sampling.task`` is, as the fields of every sampler are."""
    fields = dict(
        mask=cf.choice(config, "sampling.mask", operators.MASKS),
        mask_fraction=cf.number(config, "sampling.mask_fraction", low=0, high=1),
        mask_file=cf.string(config, "sampling.mask_file"),
        operator=cf.choice(config, "sampling.operator", operators.OPERATORS),
        pool_factor=cf.integer(config, "sampling.pool_factor", 1),
        blur_sigma=cf.number(config, "sampling.blur_sigma", low=0, low_open=True),
        noise_std=cf.number(config, "sampling.noise_std", low=0),
        zeta=cf.number(config, "sampling.zeta", low=0),
        dps_steps=cf.integer(config, "sampling.dps_steps", 1))
    if fields["mask"] == "file" and not fields["mask_file"]:
        raise ValueError("sampling.mask='file' needs sampling.mask_file, a .npy or .png mask of "
                         "the images' size (1 = known); got ''.")
    return fields


def _mask(fields: dict, event_shape, seed: int) -> Array:
    """The inpainting mask of ``sampling.mask`` ([H, W, 1], 1 = known)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), MASK_STREAM)
    return operators.inpainting_mask(fields["mask"], event_shape,
                                     fraction=fields["mask_fraction"], key=key,
                                     path=fields["mask_file"])


def _dps_operator(fields: dict, event_shape, seed: int) -> tuple[Callable, Callable, dict]:
    """The forward operator of ``sampling.operator``, the function that shows its measurements as
    images, and its settings."""
    kind = fields["operator"]
    settings: dict[str, Any] = {"operator": kind}
    show = lambda y: y  # noqa: E731
    if kind == "mask":
        op = operators.mask_operator(_mask(fields, event_shape, seed))
        settings.update(mask=fields["mask"])
    elif kind == "pool":
        factor = fields["pool_factor"]
        if event_shape[0] % factor or event_shape[1] % factor:
            raise ValueError(f"sampling.pool_factor={factor} must divide the image size "
                             f"{event_shape[:2]}.")
        op = operators.average_pool_operator(factor)
        show = lambda y: jnp.repeat(jnp.repeat(y, factor, 1), factor, 2)  # noqa: E731
        settings.update(pool_factor=factor)
    else:
        op = operators.gaussian_blur_operator(fields["blur_sigma"])
        settings.update(blur_sigma=fields["blur_sigma"])
    return op, show, settings


def task_from_config(config, sde, event_shape, seed: int) -> SamplingTask | None:
    """The conditional task of ``sampling.task`` (None for "generate"), every field of every task
    validated."""
    name = cf.choice(config, "sampling.task", SAMPLING_TASKS)
    fields = _task_fields(config)
    if name == "generate":
        return None
    if len(event_shape) != 3:
        raise ValueError(f"sampling.task={name!r} needs image data; {cf.get(config, 'data.dataset')!r}"
                         f" has points of shape {event_shape}. Allowed: 'generate'.")
    if name == "colorize" and event_shape[-1] != 3:
        raise ValueError(f"sampling.task='colorize' needs RGB images (data.num_channels = 3); got "
                         f"{event_shape[-1]} channel(s). Allowed for them: 'generate', 'inpaint', "
                         f"'dps'.")
    grey = data_lib.get_data_scaler(cf.boolean(config, "data.centered"))(0.5)
    pc = _pc_options(config, sde)
    settings: dict[str, Any] = {"task": name}
    if name == "inpaint":
        mask = _mask(fields, event_shape, seed)
        settings.update(mask=fields["mask"], **pc)

        def sample(score_model, x_known, key):
            sampler = sampling.get_sampler("inpaint", sde=sde, x_known=x_known, mask=mask, **pc)
            return sampler(score_model, x_known.shape, key)

        return SamplingTask(name, lambda x, key: x, sample,
                            lambda x: jnp.where(mask > 0, x, grey), settings)
    if name == "colorize":
        settings.update(pc)

        def sample(score_model, gray, key):
            sampler = sampling.get_sampler("colorize", sde=sde, gray=gray, **pc)
            return sampler(score_model, gray.shape[:-1] + (3,), key)

        return SamplingTask(name, lambda x, key: jnp.mean(x, -1, keepdims=True), sample,
                            lambda g: jnp.repeat(g, 3, -1), settings)
    op, show, op_settings = _dps_operator(fields, event_shape, seed)
    dps = dict(noise_std=fields["noise_std"], zeta=fields["zeta"], num_steps=fields["dps_steps"])
    settings.update(op_settings, **dps)

    def observe(x, key):
        y = op(x)
        return y + dps["noise_std"] * jax.random.normal(key, y.shape, y.dtype)

    def sample(score_model, y, key):
        sampler = sampling.get_sampler("dps", sde=sde, y=y, forward_op=op, **dps)
        return sampler(score_model, (y.shape[0], *event_shape), key)

    return SamplingTask(name, observe, sample, show, settings)
