"""The SDEs of Song et al. (2021), "Score-Based Generative Modeling through Stochastic
Differential Equations" (ICLR 2021, arXiv:2011.13456), as the official code ``score_sde`` uses them.

Every SDE here is linear with additive noise (Eq. 5 of the paper),

    dx = a(t) x dt + g(t) dw,        t in [0, T], T = 1,

so its perturbation kernel is Gaussian, p_0t(x(t) | x(0)) = N(c(t) x(0), σ_t² I), with

    VE    (Eq. 9):  a = 0,    g² = d[σ(t)²]/dt = 2 ln(σ_max/σ_min) σ(t)²,   c = 1,
                    σ_t = σ(t) = σ_min (σ_max/σ_min)^t;                     prior N(0, σ_max² I)
    VP    (Eq. 11): a = −½β(t), g² = β(t),                                    c = e^m,
                    σ_t = sqrt(1 − e^{2m});                                  prior N(0, I)
    subVP (§3.4):   a = −½β(t), g² = β(t) (1 − e^{4m}),                       c = e^m,
                    σ_t = 1 − e^{2m};                                        prior N(0, I)

with β(t) = β_0 + t (β_1 − β_0) and m(t) = log c(t) = −¼ t² (β_1 − β_0) − ½ t β_0.
``reverse`` gives the reverse-time SDE (Eq. 6) or the probability-flow ODE (Eq. 13);
``likelihood_weighting`` is λ(t) = g(t)² of Song, Durkan, Murray & Ermon (2021, arXiv:2101.09258).

``x`` is [B, *event] (any event shape) and ``t`` is [B]; per-example coefficients come back as [B].
The SDEs are frozen, hashable dataclasses registered as static pytrees: close over them or pass
them to ``jax.jit`` (as ordinary or static arguments). All methods are jit/vmap/grad-safe and keep
the dtype of their inputs (float32, or float64 under ``jax_enable_x64``).

Where this module deliberately differs from ``score_sde`` (values agree up to rounding):
  * VP/subVP stds use ``expm1`` (1 − e^{2m} loses all digits in float32 as t → 0).
  * The discrete σ_i / β_i of ``discretize`` are computed in closed form at the looked-up index
    instead of from a stored ``linspace`` table, and the index is clipped to [0, N − 1]
    (out-of-range indexing clamps the same way in JAX).
  * The DDPM drift sqrt(1 − β_i) x − x is evaluated as −β_i x / (1 + sqrt(1 − β_i)).
  * The probability-flow ODE returns a zero diffusion of shape [B] instead of the scalar 0.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import jax
import jax.numpy as jnp

from sgm_jax._batch import per_example
from sgm_jax._validation import check_choice, check_positive_int
from sgm_jax.types import ScoreModel

Array = jax.Array
WEIGHTINGS = ("sigma2", "likelihood")


def _finite_float(name: str, value) -> float:
    try:
        if math.isfinite(number := float(value)):
            return number
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{name} must be a finite real number; got {value!r}.")


def _freeze(sde: SDE, **fields: float) -> None:
    """Check N and store the validated fields as plain Python numbers (hashable, static)."""
    check_positive_int("N", sde.N)
    for name, value in {**fields, "N": int(sde.N)}.items():
        object.__setattr__(sde, name, value)


class SDE(abc.ABC):
    """A linear SDE dx = a(t) x dt + g(t) dw on [0, T] with Gaussian perturbation kernels.

    Subclasses define the per-example coefficients ``drift_coeff`` a(t), ``diffusion_coeff``
    g(t), ``mean_coeff`` c(t) and ``marginal_std`` σ_t (all [B] -> [B]), ``prior_std`` and the
    number of discretisation steps ``N``; everything else is derived here.
    """

    N: int

    @property
    def T(self) -> float:
        """End time of the forward SDE."""
        return 1.0

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior N(0, prior_std² I)."""

    @abc.abstractmethod
    def drift_coeff(self, t: Array) -> Array:
        """a(t) [B], the drift being f(x, t) = a(t) x."""

    @abc.abstractmethod
    def diffusion_coeff(self, t: Array) -> Array:
        """g(t) [B]."""

    @abc.abstractmethod
    def mean_coeff(self, t: Array) -> Array:
        """c(t) [B], the kernel mean being c(t) x(0)."""

    @abc.abstractmethod
    def marginal_std(self, t: Array) -> Array:
        """σ_t [B], the std of the perturbation kernel p_0t."""

    def scaled_std(self, t: Array) -> Array:
        """σ̃(t) = σ_t / c(t) [B]: the noise level of the scaled process x(t)/c(t) = x(0) + σ̃ z
        (Karras et al. 2022, Eq. 4: σ(t) of the ODE in x/s(t)). Increasing in t."""
        return self.marginal_std(t) / self.mean_coeff(t)

    @abc.abstractmethod
    def scaled_std_inverse(self, sigma: Array) -> Array:
        """The time t [B] at which :meth:`scaled_std` equals ``sigma`` [B] (> 0)."""

    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(drift f(x, t) [B, *event], diffusion g(t) [B]) of the forward SDE."""
        return per_example(self.drift_coeff(t), x) * x, self.diffusion_coeff(t)

    def marginal_prob(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(mean c(t) x [B, *event], std σ_t [B]) of p_0t(x(t) | x(0) = x)."""
        return per_example(self.mean_coeff(t), x) * x, self.marginal_std(t)

    def prior_sampling(self, key: Array, shape: tuple[int, ...], dtype=float) -> Array:
        """A sample of the prior N(0, prior_std² I) with the given shape."""
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_logp(self, z: Array) -> Array:
        """log N(z; 0, prior_std² I) per example, [B]; the event is every axis but the first."""
        dim, var = math.prod(jnp.shape(z)[1:]), self.prior_std**2
        sq_norm = jnp.sum(z**2, axis=tuple(range(1, jnp.ndim(z))))
        return -0.5 * dim * math.log(2 * math.pi * var) - 0.5 * sq_norm / var

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(f, G) of one forward step x_{i+1} = x_i + f + G z, here Euler–Maruyama with dt = T/N:
        f = f(x, t) dt, G = g(t) sqrt(dt). VE and VP override it with SMLD / DDPM steps."""
        drift, diffusion = self.sde(x, t)
        dt = self.T / self.N
        return drift * dt, diffusion * math.sqrt(dt)

    def _index(self, t: Array) -> tuple[Array, Array]:
        """Step i = trunc(t (N − 1) / T) as in ``score_sde`` (clipped), and i / (N − 1)."""
        t = jnp.asarray(t)
        i = jnp.clip((t * (self.N - 1) / self.T).astype(jnp.int32), 0, self.N - 1)
        return i, i.astype(t.dtype) / max(self.N - 1, 1)

    def likelihood_weighting(self, t: Array) -> Array:
        """λ(t) = g(t)² [B], the weighting that makes the DSM objective bound the NLL."""
        return self.diffusion_coeff(t) ** 2

    def loss_weighting(self, t: Array, weighting: str) -> Array:
        """λ(t) [B] for ``weighting`` "sigma2" (σ_t², the ``score_sde`` default) or
        "likelihood" (g(t)²)."""
        check_choice("weighting", weighting, WEIGHTINGS)
        if weighting == "sigma2":
            return self.marginal_std(t) ** 2
        return self.likelihood_weighting(t)

    def reverse(self, score_model: ScoreModel, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (Eq. 6) or, with ``probability_flow``, the probability-flow ODE
        (Eq. 13) driven by the score model ``score_model(x, t) -> s`` [B, *event]."""
        return ReverseSDE(self, score_model, bool(probability_flow))


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """Reverse-time process of ``forward`` for a score s = ``score_model(x, t)``, in forward time t:

        reverse SDE:        drift f − g² s,    diffusion g   (integrate from t = T down to 0)
        probability flow:   drift f − ½ g² s,  diffusion 0

    ``discretize`` maps the forward step (f, G) to (f − G² s, G), or (f − ½ G² s, 0) for the ODE,
    the update of the reverse-diffusion predictor: x_{i−1} = x_i − rev_f + rev_G z.
    """

    forward: SDE
    score_model: ScoreModel
    probability_flow: bool = False

    def _reverse(self, f: Array, g: Array, x: Array, t: Array) -> tuple[Array, Array]:
        scale = 0.5 if self.probability_flow else 1.0
        rev_f = f - scale * per_example(g**2, x) * self.score_model(x, t)
        return rev_f, jnp.zeros_like(g) if self.probability_flow else g

    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(drift [B, *event], diffusion [B]) of the reverse SDE or probability-flow ODE."""
        return self._reverse(*self.forward.sde(x, t), x, t)

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(rev_f [B, *event], rev_G [B]) of the reverse-diffusion predictor step."""
        return self._reverse(*self.forward.discretize(x, t), x, t)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE (SMLD / NCSN in continuous time, Eq. 9): dx = sqrt(d[σ(t)²]/dt) dw,
    σ(t) = σ_min (σ_max/σ_min)^t.

    As in ``score_sde``, the kernel std is σ(t), not sqrt(σ(t)² − σ_min²): x(0) is taken to be
    data already perturbed at σ_min. ``discretize`` is the SMLD chain (Eq. 8) over the N noise
    levels σ_i = σ_min (σ_max/σ_min)^{i/(N−1)}: f = 0, G = sqrt(σ_i² − σ_{i−1}²) with σ_{−1} = 0.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000

    def __post_init__(self) -> None:
        sigma_min = _finite_float("sigma_min", self.sigma_min)
        sigma_max = _finite_float("sigma_max", self.sigma_max)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"sigma_min must be > 0 and < sigma_max = {sigma_max}; got sigma_min = {sigma_min}.")
        _freeze(self, sigma_min=sigma_min, sigma_max=sigma_max)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def drift_coeff(self, t: Array) -> Array:
        return jnp.zeros_like(t)

    def diffusion_coeff(self, t: Array) -> Array:
        return self.marginal_std(t) * math.sqrt(2 * self._log_ratio)

    def mean_coeff(self, t: Array) -> Array:
        return jnp.ones_like(t)

    def marginal_std(self, t: Array) -> Array:
        return self.sigma_min * jnp.exp(jnp.asarray(t) * self._log_ratio)

    def scaled_std_inverse(self, sigma: Array) -> Array:
        return jnp.log(jnp.asarray(sigma) / self.sigma_min) / self._log_ratio

    def discrete_sigmas(self, t: Array) -> tuple[Array, Array]:
        """(σ_i, σ_{i−1}) [B] of the SMLD chain at the step i of ``t`` (σ_{−1} = 0)."""
        i, u = self._index(t)
        sigma = self.sigma_min * jnp.exp(u * self._log_ratio)
        prev_sigma = jnp.where(i == 0, 0.0, sigma * math.exp(-self._log_ratio / max(self.N - 1, 1)))
        return sigma, prev_sigma

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        sigma, prev_sigma = self.discrete_sigmas(t)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - prev_sigma**2)


@dataclasses.dataclass(frozen=True)
class _LinearBetaSDE(SDE):
    """Shared part of VP and subVP: β(t) = β_0 + t (β_1 − β_0), drift −½β(t) x, mean e^{m(t)} x."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

    def __post_init__(self) -> None:
        beta_min = _finite_float("beta_min", self.beta_min)
        beta_max = _finite_float("beta_max", self.beta_max)
        if beta_min < 0:
            raise ValueError(f"beta_min must be >= 0; got beta_min = {beta_min}.")
        if beta_max <= beta_min:
            raise ValueError(
                f"beta_max must be > beta_min = {beta_min}; got beta_max = {beta_max}.")
        _freeze(self, beta_min=beta_min, beta_max=beta_max)

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t: Array) -> Array:
        """β(t) [B]."""
        return self.beta_min + jnp.asarray(t) * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Array) -> Array:
        """m(t) = −∫_0^t ½β = −¼ t² (β_1 − β_0) − ½ t β_0, [B]."""
        t = jnp.asarray(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def time_at_log_mean_coeff(self, m: Array) -> Array:
        """The t ≥ 0 [B] with m(t) = ``m`` (≤ 0): the positive root of ¼Δβ t² + ½β_0 t + m = 0,
        written as 2|m| / (½β_0 + sqrt(¼β_0² + Δβ|m|)) (no cancellation as m → 0)."""
        a = -jnp.asarray(m)
        half_b0 = 0.5 * self.beta_min
        return 2 * a / (half_b0 + jnp.sqrt(half_b0**2 + (self.beta_max - self.beta_min) * a))

    def discrete_beta(self, t: Array) -> Array:
        """β_i [B] of the DDPM chain (Song et al. Eq. 10) at the step i of ``t``:
        β_min/N + i (β_max − β_min)/(N (N − 1)) (score_sde's ``discrete_betas``)."""
        _, u = self._index(t)
        return (self.beta_min + u * (self.beta_max - self.beta_min)) / self.N

    def drift_coeff(self, t: Array) -> Array:
        return -0.5 * self.beta(t)

    def mean_coeff(self, t: Array) -> Array:
        return jnp.exp(self.log_mean_coeff(t))


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBetaSDE):
    """Variance-preserving SDE (DDPM in continuous time, Eq. 11): dx = −½β(t) x dt + sqrt(β(t)) dw.

    ``discretize`` is the DDPM chain (Eq. 10) with the N discrete betas
    β_i = β_min/N + i (β_max − β_min) / (N (N − 1)): f = (sqrt(1 − β_i) − 1) x, G = sqrt(β_i).
    """

    def diffusion_coeff(self, t: Array) -> Array:
        return jnp.sqrt(self.beta(t))

    def marginal_std(self, t: Array) -> Array:
        return jnp.sqrt(-jnp.expm1(2 * self.log_mean_coeff(t)))

    def scaled_std(self, t: Array) -> Array:
        """σ̃(t) = sqrt(e^{−2m(t)} − 1) (Karras et al. 2022, Table 1, VP)."""
        return jnp.sqrt(jnp.expm1(-2 * self.log_mean_coeff(t)))

    def scaled_std_inverse(self, sigma: Array) -> Array:
        return self.time_at_log_mean_coeff(-0.5 * jnp.log1p(jnp.asarray(sigma) ** 2))

    def check_ddpm_steps(self) -> None:
        """``ValueError`` unless β_max < N, i.e. every β_i of the DDPM chain is < 1."""
        if self.beta_max >= self.N:
            raise ValueError(
                f"the DDPM discretisation needs beta_max < N (steps β_i < 1); got beta_max = "
                f"{self.beta_max}, N = {self.N}. Use more steps or an Euler–Maruyama step.")

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        self.check_ddpm_steps()
        beta = self.discrete_beta(t)
        f = per_example(-beta / (1 + jnp.sqrt(1 - beta)), x) * x
        return f, jnp.sqrt(beta)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class subVPSDE(_LinearBetaSDE):
    """Sub-VP SDE (§3.4): dx = −½β(t) x dt + sqrt(β(t) (1 − e^{−2∫_0^t β})) dw, whose kernel
    variance (1 − e^{2m})² never exceeds the VP one. ``discretize`` is Euler–Maruyama (as in
    ``score_sde``, which has no dedicated discrete chain for it)."""

    def diffusion_coeff(self, t: Array) -> Array:
        return jnp.sqrt(-self.beta(t) * jnp.expm1(4 * self.log_mean_coeff(t)))

    def marginal_std(self, t: Array) -> Array:
        return -jnp.expm1(2 * self.log_mean_coeff(t))

    def scaled_std(self, t: Array) -> Array:
        """σ̃(t) = (1 − e^{2m}) / e^m = 2 sinh(−m(t))."""
        return 2 * jnp.sinh(-self.log_mean_coeff(t))

    def scaled_std_inverse(self, sigma: Array) -> Array:
        return self.time_at_log_mean_coeff(-jnp.arcsinh(0.5 * jnp.asarray(sigma)))


_SDES: dict[str, type[SDE]] = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": subVPSDE}
SDE_NAMES: tuple[str, ...] = tuple(_SDES)


def get_sde(name: str, **kwargs) -> SDE:
    """The SDE registered as ``name`` ("vesde", "vpsde", "subvpsde"; case-insensitive), built
    from its constructor fields, e.g. ``get_sde("vesde", sigma_max=50., N=1000)``."""
    cls = _SDES.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"sde name must be one of {tuple(_SDES)}; got {name!r}.")
    fields = tuple(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for sde {name!r}; its fields are {fields}.")
    return cls(**kwargs)
