"""Evaluation and sampling of a trained 2-D toy run (``sgm_jax.evaluate`` dispatches here).

The QCSGM toy protocol (paper §3.2, official_code_facts §1b), with one deliberate correction:

* **Asym, NAsym, score error** on ``eval.num_points`` training points x₀ perturbed with one shared
  z at the ``eval.num_levels`` times t_l = l / L (l = 1..L): x̃ = c_t x₀ + σ_t z. Asym and NAsym
  come from the exact 2×2 Jacobian (Eqs. 11, A2); the score error ½‖s(x̃, t) − ∇log p_t(x̃)‖²
  uses the Parzen oracle of the *clean* training set at the *same* t as the model (the official
  code re-noises the kernel centres and evaluates the oracle at t = l/11 against the model at
  t = (l+1)/10). Each is averaged over points and then over levels.
* **NLL** in nats of ``eval.nll_num_points`` training points through the probability-flow ODE
  (diffrax, exact divergence, ``sampling.rtol/atol``, from ``sampling.eps`` to 1).
* **Samples** from ``sampling.method`` (``eval.num_samples`` of them) with their NFE, and
  precision / recall / density / coverage with k = ``eval.prdc_k`` against as many training points.

Results go to ``workdir/eval/ckpt_<step>.json`` (:mod:`sgm_jax.evaluate.results`; the sampler's
NFE as ``nfe``, the likelihood ODE's as ``nll_nfe``) and a printed table; figures (samples over
the data, the model density on a grid, the score field with its rotational part, training
curves) to ``workdir/figures/``. The EMA parameters are evaluated.
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from sgm_jax import plots
from sgm_jax.checkpoints import restore_score_model
from sgm_jax.evaluate.results import write_results
from sgm_jax.likelihood import log_likelihood
from sgm_jax.metrics import asym, average_over_levels, nasym, prdc, score_error

if TYPE_CHECKING:
    from sgm_jax.experiment import Experiment


def _draw_samples(experiment: Experiment, score_model, key, num_samples: int):
    shape = (num_samples, *experiment.event_shape)
    samples, nfe = jax.jit(lambda k: experiment.sampler(score_model, shape, k))(key)
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


def nll_nats(experiment: Experiment, score_model, x) -> tuple[np.ndarray, int]:
    """Per-point NLL in nats of ``x`` under the probability-flow ODE of the experiment's SDE and
    ``score_model`` (exact divergence, the toy evaluation's rtol/atol/eps) and the solver's NFE."""
    e = experiment.evaluation
    logp, _, nfe = jax.jit(lambda x: log_likelihood(
        experiment.sde, score_model, x, divergence="exact", rtol=e.rtol, atol=e.atol,
        eps=e.eps))(x)
    return -np.asarray(logp), int(nfe)


def _grid(data: np.ndarray, side: int):
    lo, hi = data.min(axis=0), data.max(axis=0)
    margin = 0.1 * (hi - lo)
    xs = np.linspace(lo[0] - margin[0], hi[0] + margin[0], side)
    ys = np.linspace(lo[1] - margin[1], hi[1] + margin[1], side)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def density_on_grid(experiment: Experiment, score_model, side: int = 60):
    """The model's log-density (probability-flow ODE, exact divergence) on a ``side``² grid
    spanning the training data: ``(xs, ys, log_density [side, side])``."""
    xs, ys, grid = _grid(experiment.data.points, side)
    logp = -nll_nats(experiment, score_model, jnp.asarray(grid))[0]
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


def _figures(experiment: Experiment, workdir, step, score_model, samples):
    figures = os.path.join(workdir, "figures")
    name, data = experiment.name, experiment.data.points
    paths = [plots.plot_samples(os.path.join(figures, "samples.png"), data[:5000], samples,
                                f"{name}: samples, step {step}")]
    xs, ys, log_density = density_on_grid(experiment, score_model)
    paths.append(plots.plot_density(os.path.join(figures, "density.png"), xs, ys, log_density,
                                    f"{name}: model density"))
    _, _, field = _grid(data, 40)
    t = jnp.full((field.shape[0],), 1.0 / experiment.evaluation.num_levels)
    fn = lambda y: score_model(y, t)  # noqa: E731
    scores, rotation = jax.jit(lambda y: (fn(y), asym(fn, y)))(jnp.asarray(field))
    paths.append(plots.plot_score_field(os.path.join(figures, "score_field.png"), field,
                                        np.asarray(scores), np.asarray(rotation),
                                        f"{name}: score at t = {float(t[0]):.2f}"))
    curves = {k: v for k, v in training_curves(workdir).items()
              if k in ("loss", "objective", "qc", "qc_share")}
    if curves:
        paths.append(plots.plot_curves(os.path.join(figures, "training_curves.png"), curves, name))
    return paths


def evaluate(experiment: Experiment, workdir: str) -> dict[str, Any]:
    """Evaluate the checkpoint ``eval.checkpoint`` (−1: the latest) of the toy run in ``workdir``.

    Raises ``ValueError`` when ``workdir`` has no checkpoint. Returns the results dict written
    to ``workdir/eval/ckpt_<step>.json``.
    """
    e = experiment.evaluation
    step, score_model = restore_score_model(experiment, workdir, e.checkpoint)
    data = experiment.data.points
    key_levels, key_samples = jax.random.split(experiment.eval_key())
    x0 = jnp.asarray(data[: e.num_points])
    means, per_level, levels = _level_metrics(experiment.sde, score_model, x0, jnp.asarray(data),
                                              key_levels, e.num_levels)
    nll, nll_nfe = nll_nats(experiment, score_model, jnp.asarray(data[: e.nll_num_points]))
    samples, nfe = _draw_samples(experiment, score_model, key_samples, e.num_samples)
    quality = prdc(data[: e.num_samples], samples, nearest_k=e.prdc_k)
    results = {"step": step, **means, "nll": float(np.mean(nll)), "nll_nfe": nll_nfe,
               "nfe": nfe, **{k: float(v) for k, v in quality.items()},
               "levels_t": levels, "per_level": per_level,
               "settings": {"sampler": experiment.sampler_method,
                            "sampling": experiment.sampler_settings,
                            "num_points": e.num_points, "num_levels": e.num_levels,
                            "nll_num_points": e.nll_num_points, "num_samples": e.num_samples,
                            "prdc_k": e.prdc_k, "params": "ema"}}
    if jax.process_index() == 0:
        results["figures"] = _figures(experiment, workdir, step, score_model, samples)
    write_results(workdir, step, results)
    return results


def sample(experiment: Experiment, workdir: str) -> str:
    """Draw ``sampling.num_samples`` samples; write ``samples_step_<step>.npz`` and a PNG."""
    step, score_model = restore_score_model(experiment, workdir, experiment.evaluation.checkpoint)
    key = jax.random.fold_in(experiment.eval_key(), step)
    samples, nfe = _draw_samples(experiment, score_model, key, experiment.num_samples)
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"samples_step_{step}.npz")
    np.savez(path, samples=samples, nfe=nfe)
    plots.plot_samples(os.path.join(out_dir, f"samples_step_{step}.png"),
                       experiment.data.points[:5000], samples,
                       f"{experiment.name}: {samples.shape[0]} samples, NFE {nfe}")
    print(f"wrote {path} ({samples.shape[0]} samples, NFE {nfe})")
    return path
