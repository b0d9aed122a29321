"""Evaluation and sampling of a trained toy run: ``evaluate(config, workdir)``, ``sample(config, workdir)``.

The QCSGM toy protocol (paper §3.2, official_code_facts §1b), with one deliberate correction:

* **Asym, NAsym, score error** on ``eval.num_points`` training points x₀ perturbed with one shared
  z at the ``eval.num_levels`` times t_l = l / L (l = 1..L): x̃ = c_t x₀ + σ_t z. Asym and NAsym
  come from the exact 2×2 Jacobian (Eqs. 11, A2); the score error ½‖s(x̃, t) − ∇log p_t(x̃)‖²
  uses the Parzen oracle of the *clean* training set at the *same* t as the model (the official
  code re-noises the kernel centres and evaluates the oracle at t = l/11 against the model at
  t = (l+1)/10). Each is averaged over points and then over levels.
* **NLL** in nats of ``eval.nll_num_points`` training points through the probability-flow ODE
  (diffrax, exact divergence, ``sampling.rtol/atol``, from ``sampling.eps`` to 1).
* **Samples** from ``sampling.method`` (``sampling.num_samples`` of them) with their NFE, and
  precision / recall / density / coverage with k = ``eval.prdc_k`` against as many training points.

Results go to ``workdir/eval/metrics_step_<step>.json`` and a printed table; figures (samples over
the data, the model density on a grid, the score field with its rotational part, training
curves) to ``workdir/figures/``. The EMA parameters are evaluated.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax import plots
from sgm_jax.config_validation import model_from_config, sde_from_config
from sgm_jax.likelihood import log_likelihood
from sgm_jax.metrics import asym, average_over_levels, nasym, prdc, score_error
from sgm_jax.sampling import get_sampler
from sgm_jax.train import build_score_model, load_checkpoint, train_data

_EVAL_SEED_OFFSET = 10_000  # evaluation randomness is independent of the training keys


def restore_score_model(config, workdir: str):
    """``(step, sde, score_fn)`` of the chosen checkpoint (``eval.checkpoint``, −1 = latest) of the
    run in ``workdir``: the score function of its EMA parameters, ``score_fn(x, t) -> s``."""
    state = load_checkpoint(config, workdir, config.eval.checkpoint)
    sde = sde_from_config(config)
    score_model = build_score_model(config, model_from_config(config), sde)(state.ema_params)
    return int(state.step), sde, score_model


def sampler_from_config(config, sde):
    """``sample(score_fn, shape, key) -> (samples, nfe)`` for ``config.sampling``."""
    s = config.sampling
    common = dict(sde=sde, eps=s.eps)
    if s.method == "ode":
        return get_sampler("ode", rtol=s.rtol, atol=s.atol, **common)
    if s.method == "pc":
        return get_sampler("pc", predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                           n_steps=s.n_steps, **common)
    return get_sampler(s.method, **common)


def _draw_samples(config, sde, score_model, key, event_shape):
    sampler = sampler_from_config(config, sde)
    shape = (config.sampling.num_samples, *event_shape)
    samples, nfe = jax.jit(lambda k: sampler(score_model, shape, k))(key)
    return np.asarray(samples), int(nfe)


def _level_metrics(sde, score_model, x0, data, key, num_levels):
    z = jax.random.normal(key, x0.shape, x0.dtype)

    @jax.jit
    def at_level(t):
        tb = jnp.full((x0.shape[0],), t, x0.dtype)
        mean, std = sde.marginal_prob(x0, tb)
        x_tilde = mean + std[:, None] * z
        fn = lambda y: score_model(y, tb)  # noqa: E731
        oracle_data = sde.mean_coeff(tb[:1])[0] * data
        return {"asym": asym(fn, x_tilde), "nasym": nasym(fn, x_tilde),
                "score_error": score_error(fn, x_tilde, oracle_data, std)}

    levels = jnp.arange(1, num_levels + 1) / num_levels
    per_level, mean = average_over_levels(at_level, levels)
    return ({k: float(v) for k, v in mean.items()},
            {k: np.asarray(v).tolist() for k, v in per_level.items()}, np.asarray(levels).tolist())


def nll_nats(config, sde, score_fn, x) -> tuple[np.ndarray, int]:
    """Per-point NLL in nats of ``x`` under the probability-flow ODE of ``sde`` and ``score_fn``
    (exact divergence, ``config.sampling`` rtol/atol/eps) and the solver's NFE."""
    s = config.sampling
    logp, _, nfe = jax.jit(lambda x: log_likelihood(
        sde, score_fn, x, divergence="exact", rtol=s.rtol, atol=s.atol, eps=s.eps))(x)
    return -np.asarray(logp), int(nfe)


def _grid(data: np.ndarray, side: int):
    lo, hi = data.min(axis=0), data.max(axis=0)
    margin = 0.1 * (hi - lo)
    xs = np.linspace(lo[0] - margin[0], hi[0] + margin[0], side)
    ys = np.linspace(lo[1] - margin[1], hi[1] + margin[1], side)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def density_on_grid(config, sde, score_model, data: np.ndarray, side: int = 60):
    """The model's log-density (probability-flow ODE, exact divergence) on a ``side``² grid
    spanning ``data``: ``(xs, ys, log_density [side, side])``."""
    xs, ys, grid = _grid(data, side)
    logp = -nll_nats(config, sde, score_model, jnp.asarray(grid))[0]
    return xs, ys, logp.reshape(len(ys), len(xs))


def training_curves(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
    """Scalars logged by training, read back from the TensorBoard event files in ``workdir``."""
    from tensorflow.compat.v1.train import summary_iterator
    from tensorflow import make_ndarray

    curves: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        for event in summary_iterator(path):
            for value in event.summary.value:
                number = float(make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                curves.setdefault(value.tag, {})[event.step] = number
    return {tag: (sorted(v), [v[s] for s in sorted(v)]) for tag, v in curves.items()}


def _figures(config, workdir, step, sde, score_model, data, samples):
    figures = os.path.join(workdir, "figures")
    name = f"{config.data.dataset} ({config.model.parameterisation.upper()}, {config.training.objective})"
    paths = [plots.plot_samples(os.path.join(figures, "samples.png"), data[:5000], samples,
                                f"{name}: samples, step {step}")]
    xs, ys, log_density = density_on_grid(config, sde, score_model, data)
    paths.append(plots.plot_density(os.path.join(figures, "density.png"), xs, ys, log_density,
                                    f"{name}: model density"))
    _, _, field = _grid(data, 40)
    t = jnp.full((field.shape[0],), 1.0 / config.eval.num_levels)
    fn = lambda y: score_model(y, t)  # noqa: E731
    scores, rotation = jax.jit(lambda y: (fn(y), asym(fn, y)))(jnp.asarray(field))
    paths.append(plots.plot_score_field(os.path.join(figures, "score_field.png"), field,
                                        np.asarray(scores), np.asarray(rotation),
                                        f"{name}: score at t = {float(t[0]):.2f}"))
    curves = {k: v for k, v in training_curves(workdir).items() if k in ("loss", "objective", "qc")}
    if curves:
        paths.append(plots.plot_curves(os.path.join(figures, "training_curves.png"), curves, name))
    return paths


def _print_table(results: dict[str, Any]) -> None:
    rows = [("step", results["step"]), ("Asym", results["asym"]), ("NAsym", results["nasym"]),
            ("score error", results["score_error"]), ("NLL (nats)", results["nll"]),
            ("NLL NFE", results["nll_nfe"]), ("sampler NFE", results["sampler_nfe"]),
            ("precision", results["precision"]), ("recall", results["recall"]),
            ("density", results["density"]), ("coverage", results["coverage"])]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value:.6g}" if isinstance(value, float)
                    else f"{name:<{width}}  {value}" for name, value in rows))


def evaluate(config, workdir: str) -> dict[str, Any]:
    """Evaluate the chosen checkpoint (``eval.checkpoint``, −1 = latest) of the run in ``workdir``.

    Raises ``ValueError`` when ``workdir`` has no checkpoint. Returns the results dict written
    to ``workdir/eval/metrics_step_<step>.json``.
    """
    step, sde, score_model = restore_score_model(config, workdir)
    data = train_data(config)
    e = config.eval
    key_levels, key_samples = jax.random.split(jax.random.PRNGKey(config.seed + _EVAL_SEED_OFFSET))
    x0 = jnp.asarray(data[: e.num_points])
    means, per_level, levels = _level_metrics(sde, score_model, x0, jnp.asarray(data), key_levels,
                                              e.num_levels)
    nll, nll_nfe = nll_nats(config, sde, score_model, jnp.asarray(data[: e.nll_num_points]))
    samples, sampler_nfe = _draw_samples(config, sde, score_model, key_samples, data.shape[1:])
    quality = prdc(data[: config.sampling.num_samples], samples, nearest_k=e.prdc_k)
    results = {"step": step, **means, "nll": float(np.mean(nll)), "nll_nfe": nll_nfe,
               "sampler": config.sampling.method, "sampler_nfe": sampler_nfe,
               **{k: float(v) for k, v in quality.items()},
               "levels_t": levels, "per_level": per_level}
    results["figures"] = _figures(config, workdir, step, sde, score_model, data, samples)
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"metrics_step_{step}.json"), "w") as f:
        json.dump(results, f, indent=2)
    _print_table(results)
    return results


def sample(config, workdir: str) -> str:
    """Draw ``sampling.num_samples`` samples; write ``samples_step_<step>.npz`` and a PNG plot."""
    step, sde, score_model = restore_score_model(config, workdir)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + _EVAL_SEED_OFFSET), step)
    data = train_data(config)
    samples, nfe = _draw_samples(config, sde, score_model, key, data.shape[1:])
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"samples_step_{step}.npz")
    np.savez(path, samples=samples, nfe=nfe)
    plots.plot_samples(os.path.join(out_dir, f"samples_step_{step}.png"), data[:5000],
                       samples, f"{config.data.dataset}: {samples.shape[0]} samples, NFE {nfe}")
    print(f"wrote {path} ({samples.shape[0]} samples, NFE {nfe})")
    return path
