"""Evaluation of a trained image model (``sgm_jax.evaluate`` dispatches here): samples and their
NFE, FID / IS / KID and precision / recall / density / coverage on Inception features, bits/dim
on the test split, and Asym / NAsym over the diffusion time (QCSGM Tables 3–5, LCSS Table 3,
score_sde's ``--mode=eval``).

* **Samples**: ``eval.num_samples`` from ``sampling.method`` with the EMA parameters, in global
  batches of ``eval.batch_size`` sharded over every device of every process (the starting points
  x_T are drawn sharded; the sampler runs as one SPMD program per batch, so the Langevin
  corrector's batch-averaged step size and an ODE solve's step sizes are those of the whole
  batch, as score_sde's ``pmean``). Batch i uses the key ``fold_in(k_samples, i)``. The NFE of
  every batch is kept; the results report its mean, standard deviation, minimum and maximum.
* **Inception metrics** (``eval.enable_fid``): the FID Inception network
  (``sgm_jax.metrics.load_inception``, weights from ``eval.inception_weights``) on the uint8
  samples; FID against the training split's statistics, IS (``eval.is_splits`` splits), KID
  (``eval.kid_subset_size`` × ``eval.kid_num_subsets``) and PRDC (k = ``eval.prdc_k``) against
  the training split's pool features, the larger set truncated to the smaller (as the DLSM
  evaluation). The training split's features are computed once and cached in ``eval.stats_dir``
  (``--mode=stats`` computes them ahead). Grey images are repeated over 3 channels.
* **Bits/dim** (``eval.enable_bpd``): ``eval.bpd_repeats`` passes over the test split, each
  example uniformly dequantised afresh ((n + u)/256, score_sde), the probability-flow ODE solved
  by Dopri5 at ``eval.bpd_rtol``/``bpd_atol`` from ``eval.bpd_eps`` with the Hutchinson divergence
  (one Rademacher probe), bpd = −log p/(D ln 2) + 8 − log2(scale) (``likelihood.bits_per_dim``).
* **Asym / NAsym over t** (``eval.enable_asym``; QCSGM Eqs. A10–A11, Table 5): test images
  perturbed at t_l = l/L·(1 − 1e-5) + 1e-5, l = 0 … L − 1 (L = ``eval.asym_num_levels``; the
  official t = nl(1 − 1e-5) + 1e-5 for nl ∈ {0, 0.01, …, 0.99}), ``eval.asym_num_vectors``
  Rademacher probes per example; per level the mean and its standard error over the examples,
  then the average over levels. The official script evaluates the raw weights (it never copies
  the EMA); this one, like everything here, the EMA weights.

Every unit of work (a sample batch with its features, a likelihood batch, a noise level) is
stored in ``WORKDIR/eval/ckpt_<step>/<kind>-<digest>/`` as it finishes, the digest naming the
settings the unit depends on (sampler, batch size, Inception weights; likelihood or Asym
settings), so a killed evaluation restarts where it stopped and gives the same numbers, and an
evaluation with other settings computes its own units. The results go to
``WORKDIR/eval/ckpt_<step>.json`` with their settings (:mod:`sgm_jax.evaluate.results`), a table
is printed, and a sample grid written to ``WORKDIR/figures/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from sgm_jax import parallel, plots
from sgm_jax._batch import per_example
from sgm_jax.checkpoints import load_checkpoint
from sgm_jax.likelihood import bits_per_dim, dequantization_offset, log_likelihood, \
    uniform_dequantize
from sgm_jax.metrics import (asym, feature_statistics, frechet_distance, inception_score,
                             inception_weights_hash, kid, load_inception, nasym, prdc)
from sgm_jax.pth import file_sha256
from sgm_jax.evaluate.results import write_results
from sgm_jax.evaluate.store import Progress, ShardStore
from sgm_jax.sampling import check_finite_samples

if TYPE_CHECKING:
    from sgm_jax.experiment import Experiment

Array = jax.Array


def to_uint8(experiment: Experiment, x) -> np.ndarray:
    """Model-space images → uint8 [N, H, W, C] (inverse scaler, clipped to [0, 1], rounded)."""
    x = np.asarray(experiment.data.inverse_scaler(np.asarray(x, np.float32)))
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C]: grey ones (C = 1) repeated over 3 channels, RGB ones as given."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def host_array(x) -> np.ndarray:
    """A (possibly multi-process) global array as one host array on every process."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def check_eval_batch(experiment: Experiment, mesh) -> int:
    """``eval.batch_size``; ``ValueError`` unless it splits evenly over the devices of ``mesh``."""
    batch = experiment.evaluation.batch_size
    if batch % mesh.size:
        raise ValueError(f"eval.batch_size={batch} is not divisible by the number of devices "
                         f"({mesh.size}); allowed: a multiple of {mesh.size}.")
    return batch


ScoreModelFactory = Callable[[Any, Array], Callable[[Array, Array], Array]]


class BatchSampler:
    """Sharded sampling of one global batch: ``(uint8 images [B, ...], nfe)`` from a key and,
    for a conditional score, the batch's labels.

    ``score_model(params, labels) -> score_model(x, t)`` builds the score the sampler follows
    from the (replicated) ``params`` and the int32 labels [B] of the batch's rows (replicated;
    row i of x is drawn for ``labels[i]``). The default is the experiment's unconditional score
    model of ``params``, which ignores the labels (then ``labels`` may be omitted).
    """

    def __init__(self, experiment: Experiment, params, batch: int, mesh,
                 score_model: ScoreModelFactory | None = None):
        self.experiment, self.params, self.batch = experiment, params, batch
        shape = (batch, *experiment.event_shape)
        build = score_model or (lambda p, _: experiment.score_model(p))
        repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
        self.prior = jax.jit(lambda k: experiment.sde.prior_sampling(k, shape), out_shardings=shard)
        self.run = jax.jit(
            lambda p, k, x_T, y: experiment.sampler(build(p, y), shape, k, x_T),
            in_shardings=(repl, repl, shard, repl), out_shardings=(shard, repl))

    def __call__(self, key: Array, labels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        labels = np.zeros(self.batch, np.int32) if labels is None else np.asarray(labels, np.int32)
        if labels.shape != (self.batch,):
            raise ValueError(f"labels must have shape [{self.batch}] (one per row of the batch); "
                             f"got shape {labels.shape}.")
        x_T = self.prior(jax.random.fold_in(key, 0))
        samples, nfe = self.run(self.params, jax.random.fold_in(key, 1), x_T, labels)
        samples = host_array(samples)
        check_finite_samples(self.experiment.sampler_method, samples)
        return to_uint8(self.experiment, samples), int(nfe)


# --------------------------------------------------------------------------- Inception features


def _statistics_name(experiment: Experiment) -> str:
    digest = inception_weights_hash(experiment.evaluation.inception_weights)[:16]
    return f"{experiment.dataset}_{experiment.event_shape[0]}px_{digest}"


def read_reference_features(path: str) -> dict[str, np.ndarray]:
    """The published reference features of an ``.npz`` with ``pool_3`` [N, 2048] (score_sde's
    ``assets/stats/*_stats.npz``, QCSBM's ``dataset_stat.npz``; both from TF-GAN's Inception,
    the same network and weights as the library's, whose resizing differs slightly, so FIDs
    against them may differ from those against the library's own statistics in the second
    decimal): ``{"features", "mu", "cov"}``."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"eval.reference_features={path!r} is not a readable .npz ({err}).") \
            from None
    with data:
        if "pool_3" not in data.files:
            raise ValueError(f"eval.reference_features={path!r} holds {data.files}; a reference "
                             "needs 'pool_3' [N, 2048] (score_sde's or QCSBM's statistics files).")
        features = np.asarray(data["pool_3"], np.float64)
    mu, cov = feature_statistics(features)
    return {"features": features, "mu": mu, "cov": cov}


def reference_statistics(experiment: Experiment, inception) -> dict[str, np.ndarray]:
    """Pool features, their mean and covariance of the training split's images as stored (no
    flip, no dequantisation), cached in ``eval.stats_dir`` by data set, size and weight file;
    or those of ``eval.reference_features`` when it names a file."""
    if experiment.evaluation.reference_features:
        return read_reference_features(experiment.evaluation.reference_features)
    store, name = ShardStore(experiment.evaluation.stats_dir), _statistics_name(experiment)
    if not store.done(name):
        print(f"computing the Inception statistics of the training split into {store.path(name)}")

    def compute():
        pool, _ = inception(to_rgb(experiment.data.points))
        mu, cov = feature_statistics(pool)
        return {"features": pool, "mu": mu, "cov": cov}

    return store.get(name, compute)


def inception_metrics(experiment: Experiment, pool, logits, reference, key) -> dict[str, Any]:
    """FID against ``reference`` ("mu", "cov"), IS of ``logits`` (``eval.is_splits``), KID and
    PRDC (k = ``eval.prdc_k``) against ``reference["features"]``, the larger set truncated to the
    smaller for PRDC; ``pool`` and ``reference`` may be the features of any one network."""
    e = experiment.evaluation
    mu, cov = feature_statistics(pool)
    is_mean, is_std = inception_score(logits, splits=e.is_splits)
    kid_mean, kid_std = kid(pool, reference["features"], subset_size=e.kid_subset_size,
                            num_subsets=e.kid_num_subsets, key=key)
    n = min(len(pool), len(reference["features"]))
    quality = prdc(reference["features"][:n], pool[:n], nearest_k=e.prdc_k)
    return {"fid": frechet_distance(mu, cov, reference["mu"], reference["cov"]),
            "is": is_mean, "is_std": is_std, "kid": kid_mean, "kid_std": kid_std,
            **{k: float(v) for k, v in quality.items()}, "prdc_num": n}


def _samples(experiment: Experiment, params, store: ShardStore, key, mesh, inception):
    """All sample batches (computed or loaded): uint8 images, NFE per batch, and the Inception
    pool features and logits when ``inception`` is given."""
    e = experiment.evaluation
    batch = check_eval_batch(experiment, mesh)
    sampler = BatchSampler(experiment, params, batch, mesh)
    num_batches = math.ceil(e.num_samples / batch)
    progress = Progress("sampling", num_batches)
    parts = []
    for i in range(num_batches):
        computed = not store.done(f"samples_{i:05d}")

        def compute(i=i):
            images, nfe = sampler(jax.random.fold_in(key, i))
            out = {"images": images, "nfe": np.asarray(nfe)}
            if inception is not None:
                out["pool"], out["logits"] = inception(to_rgb(images))
            return out

        parts.append(store.get(f"samples_{i:05d}", compute))
        progress(i, computed)
    joined = {k: np.concatenate([p[k] for p in parts])[: e.num_samples]
              for k in parts[0] if k != "nfe"}
    return joined, np.asarray([int(p["nfe"]) for p in parts])


# --------------------------------------------------------------------------- bits/dim


def _test_examples(experiment: Experiment, limit: int, batch: int) -> tuple[int, int]:
    """(examples, batches) of a pass over the test split, limited to ``limit`` examples (0:
    the whole split)."""
    total = experiment.data.num_eval_examples()
    total = min(total, limit) if limit else total
    return total, math.ceil(total / batch)


def bpd_batch_fn(experiment: Experiment, mesh) -> Callable:
    """The jitted ``(params, levels [B, ...] in [0, 1], key) -> (bits/dim [B], nfe)`` of one
    test batch, the batch sharded over ``mesh``: uniform dequantisation inside the sharded
    program (so the noise of a row does not depend on the layout), the probability-flow ODE with
    the Hutchinson divergence (one Rademacher probe) at ``eval.bpd_rtol/atol/eps``."""
    e = experiment.evaluation
    offset = dequantization_offset(centered=e.centered)

    def nll(p, levels, k):
        k_deq, k_probe = jax.random.split(k)
        x = uniform_dequantize(k_deq, levels, centered=e.centered)
        logp, _, nfe = log_likelihood(experiment.sde, experiment.score_model(p), x, k_probe,
                                      divergence="hutchinson", rtol=e.bpd_rtol, atol=e.bpd_atol,
                                      eps=e.bpd_eps)
        return bits_per_dim(logp, experiment.event_shape, offset), nfe

    repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
    return jax.jit(nll, in_shardings=(repl, shard, repl), out_shardings=(shard, repl))


def _bpd(experiment: Experiment, params, store: ShardStore, key, mesh) -> dict[str, Any]:
    e, data = experiment.evaluation, experiment.data
    batch = check_eval_batch(experiment, mesh)
    total, num_batches = _test_examples(experiment, e.bpd_num_examples, batch)
    run = bpd_batch_fn(experiment, mesh)
    progress = Progress("bits/dim", e.bpd_repeats * num_batches)
    values, nfes = [], []
    for r in range(e.bpd_repeats):
        for j, rows in enumerate(data.eval_batches(batch)):
            if j == num_batches:
                break
            name = f"bpd_{r:02d}_{j:05d}"
            computed = not store.done(name)

            def compute(r=r, j=j, rows=rows):
                k = jax.random.fold_in(jax.random.fold_in(key, r), j)
                levels = np.asarray(data.inverse_scaler(rows["x"]), np.float32)  # n/255 in [0, 1]
                bpd, nfe = run(params, parallel.shard_batch(levels, mesh), k)
                valid = j * batch + np.arange(batch) < total
                return {"bpd": host_array(bpd)[valid], "nfe": np.asarray(nfe)}

            stored = store.get(name, compute)
            values.append(stored["bpd"])
            nfes.append(int(stored["nfe"]))
            progress(r * num_batches + j, computed)
    values = np.concatenate(values)
    return {"bpd": float(values.mean()), "bpd_sem": float(values.std(ddof=1) / math.sqrt(values.size))
            if values.size > 1 else 0.0, "bpd_num": int(values.size), "bpd_nfe_mean": float(np.mean(nfes))}


# --------------------------------------------------------------------------- Asym / NAsym over t


def asym_levels(num_levels: int) -> np.ndarray:
    """t_l = l/L·(1 − 1e-5) + 1e-5 for l = 0 … L − 1 (the official real-world levels)."""
    return np.arange(num_levels) / num_levels * (1 - 1e-5) + 1e-5


def _asym_over_time(experiment: Experiment, params, store: ShardStore, key, mesh) -> dict[str, Any]:
    e, data, sde = experiment.evaluation, experiment.data, experiment.sde
    batch = check_eval_batch(experiment, mesh)
    total, num_batches = _test_examples(experiment, e.asym_num_examples, batch)
    repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)

    def at_level(p, x0, t, k):
        k_z, k_v = jax.random.split(k)
        tb = jnp.full((x0.shape[0],), t, x0.dtype)
        mean, std = sde.marginal_prob(x0, tb)
        x_tilde = mean + per_example(std, x0) * jax.random.normal(k_z, x0.shape)
        score_model = experiment.score_model(p)
        fn = lambda y: score_model(y, tb)  # noqa: E731
        return (asym(fn, x_tilde, k_v, num_vectors=e.asym_num_vectors),
                nasym(fn, x_tilde, k_v, num_vectors=e.asym_num_vectors))

    run = jax.jit(at_level, in_shardings=(repl, shard, repl, repl), out_shardings=(shard, shard))
    levels = asym_levels(e.asym_num_levels)
    progress = Progress("Asym over t", len(levels))
    per_level = []
    for l, t in enumerate(levels):
        name = f"asym_{l:03d}"
        computed = not store.done(name)

        def compute(l=l, t=t):
            a, n = [], []
            for j, rows in enumerate(data.eval_batches(batch)):
                if j == num_batches:
                    break
                k = jax.random.fold_in(jax.random.fold_in(key, l), j)
                out = run(params, parallel.shard_batch(rows["x"], mesh), jnp.float32(t), k)
                valid = j * batch + np.arange(batch) < total
                a.append(host_array(out[0])[valid])
                n.append(host_array(out[1])[valid])
            return {"asym": np.concatenate(a), "nasym": np.concatenate(n)}

        stored = store.get(name, compute)
        per_level.append({name: (float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)))
                          for name, v in stored.items()})
        progress(l, computed)
    return {
        "asym": float(np.mean([p["asym"][0] for p in per_level])),
        "nasym": float(np.mean([p["nasym"][0] for p in per_level])),
        "asym_over_t": {"t": levels.tolist(),
                        "asym_mean": [p["asym"][0] for p in per_level],
                        "asym_sem": [p["asym"][1] for p in per_level],
                        "nasym_mean": [p["nasym"][0] for p in per_level],
                        "nasym_sem": [p["nasym"][1] for p in per_level]},
        "asym_num": total,
    }


# --------------------------------------------------------------------------- entry points


def _settings(experiment: Experiment, inception_hash: str | None) -> dict[str, Any]:
    e = experiment.evaluation
    return {"sampler": experiment.sampler_method, "sampling": experiment.sampler_settings,
            "sde_num_scales": experiment.sde.N,  # the PC sampler's steps
            "num_samples": e.num_samples, "batch_size": e.batch_size,
            "inception_weights_sha256": inception_hash,
            "reference": (f"{e.reference_features} (sha256 {file_sha256(e.reference_features)})"
                          if e.reference_features else "training split"),
            "bpd": {"repeats": e.bpd_repeats, "num_examples": e.bpd_num_examples,
                    "rtol": e.bpd_rtol, "atol": e.bpd_atol, "eps": e.bpd_eps,
                    "divergence": "hutchinson (1 Rademacher probe)", "dequantization": "uniform"},
            "asym": {"levels": e.asym_num_levels, "num_vectors": e.asym_num_vectors,
                     "num_examples": e.asym_num_examples},
            "prdc_k": e.prdc_k, "kid": [e.kid_subset_size, e.kid_num_subsets],
            "is_splits": e.is_splits, "params": "ema"}


def check_ready(experiment: Experiment, *, conditional: bool = False) -> None:
    """Fail now, not after a long training run, when this evaluation could not run: the FID
    Inception weights are missing (Inception metrics on), ``eval.reference_features`` names no
    file, or a conditional evaluation is given one (it needs the labelled training split)."""
    e = experiment.evaluation
    if e.enable_sampling and e.enable_fid:
        inception_weights_hash(e.inception_weights)  # says where to get the file when it is not
    if e.reference_features and conditional:
        raise ValueError(
            f"eval.reference_features={e.reference_features!r} is for unconditional "
            "evaluation: the class-wise metrics need the labelled training split as their "
            "reference; set eval.reference_features=''.")
    if e.reference_features and not os.path.isfile(e.reference_features):
        raise FileNotFoundError(f"eval.reference_features={e.reference_features!r} does not "
                                "exist.")


def _inception(experiment: Experiment):
    """The Inception function, or None when the Inception metrics are off. Fails at once (before
    any sampling) when they are on and the weights are missing."""
    e = experiment.evaluation
    return load_inception(e.inception_weights) if e.enable_sampling and e.enable_fid else None


def evaluate(experiment: Experiment, workdir: str, *, mesh=None) -> dict[str, Any]:
    """Evaluate the checkpoint ``eval.checkpoint`` (−1: the latest) of the image run in
    ``workdir`` (module docstring); returns the results written to ``eval/ckpt_<step>.json``."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    e = experiment.evaluation
    inception = _inception(experiment)
    inception_hash = None if inception is None else inception_weights_hash(e.inception_weights)
    settings = _settings(experiment, inception_hash)
    state = load_checkpoint(experiment, workdir, e.checkpoint, mesh=mesh)
    state_step, params = int(state.step), state.ema_params
    folder = os.path.join(workdir, "eval", f"ckpt_{state_step}")

    def store(kind: str, *fields: str) -> ShardStore:
        """The units of ``kind``, in a folder named after the settings they depend on, so that
        an evaluation with other settings never reuses them."""
        keyed = {name: settings[name] for name in ("batch_size", *fields)}
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
        return ShardStore(os.path.join(folder, f"{kind}-{digest}"))

    k_samples, k_bpd, k_asym, k_kid = jax.random.split(experiment.eval_key(), 4)
    results: dict[str, Any] = {"step": state_step}
    if e.enable_sampling:
        samples, nfes = _samples(experiment, params,
                                 store("samples", "sampling", "sde_num_scales",
                                       "inception_weights_sha256"),
                                 k_samples, mesh, inception)
        results.update(nfe=float(nfes.mean()), nfe_std=float(nfes.std()), nfe_min=int(nfes.min()),
                       nfe_max=int(nfes.max()), nfe_per_batch=nfes.tolist())
        if jax.process_index() == 0:
            grid = samples["images"][: experiment.num_samples].astype(np.float32) / 255.0
            results["figures"] = [plots.save_image_grid(
                os.path.join(workdir, "figures", f"samples_ckpt_{state_step}.png"), grid)]
        if inception is not None:
            reference = reference_statistics(experiment, inception)
            results.update(inception_metrics(experiment, samples["pool"], samples["logits"],
                                              reference, k_kid))
    if e.enable_bpd:
        results.update(_bpd(experiment, params, store("bpd", "bpd"), k_bpd, mesh))
    if e.enable_asym:
        results.update(_asym_over_time(experiment, params, store("asym", "asym"), k_asym, mesh))
    results["settings"] = settings
    write_results(workdir, state_step, results)
    return results


def sample(experiment: Experiment, workdir: str, *, mesh=None) -> str:
    """``sampling.num_samples`` samples of the EMA model: ``samples/samples_step_<step>.npz``
    (uint8 images and the NFE) and a PNG grid beside it."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    e = experiment.evaluation
    state = load_checkpoint(experiment, workdir, e.checkpoint, mesh=mesh)
    step = int(state.step)
    batch = math.ceil(experiment.num_samples / mesh.size) * mesh.size
    images, nfe = BatchSampler(experiment, state.ema_params, batch, mesh)(
        jax.random.fold_in(experiment.eval_key(), step))
    images = images[: experiment.num_samples]
    path = os.path.join(workdir, "samples", f"samples_step_{step}.npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, images=images, nfe=nfe)
        plots.save_image_grid(path.replace(".npz", ".png"), images.astype(np.float32) / 255.0)
        print(f"wrote {path} ({len(images)} samples, NFE {nfe})")
    return path


def compute_statistics(experiment: Experiment) -> str:
    """``--mode=stats``: the training split's Inception statistics, cached (see
    :func:`reference_statistics`); returns the cache file."""
    inception = load_inception(experiment.evaluation.inception_weights)
    reference_statistics(experiment, inception)
    return ShardStore(experiment.evaluation.stats_dir).path(_statistics_name(experiment))
