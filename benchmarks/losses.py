"""Training-step cost of every objective in ``sgm_jax.losses``.

For each objective: the median wall time of a jitted step (loss, ``value_and_grad`` w.r.t. the
network parameters, Adam update) after warm-up, and its ratio to the DSM step measured in the
same run. Two set-ups:

* ``toy``: the QCSGM toy MLP (128, 64, 32, Swish) on 2-D data, batch 5000, VE σ ∈ [0.1, 3];
* ``conv``: a small conv score net on 32×32×3 images, batch 64, VE σ ∈ [0.01, 50].

Plus the QC-regularised DSM step (one shared linearisation) against plain DSM, and ISM against
SSM as the dimension D grows (with D separate backward passes as the naive reference).

    python benchmarks/losses.py [--quick] [--json benchmarks/results/losses.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgm_jax import losses
from sgm_jax._jacobian import linearize_score
from sgm_jax.models import get_model
from sgm_jax.models.parameterisation import make_score_fn
from sgm_jax.sde import VESDE

Objective = Callable  # (score_fn, x, key, sigma, data) -> [B]

OBJECTIVES: dict[str, Objective] = {
    "dsm": lambda s, x, k, sig, data: losses.dsm_loss(s, x, k, sig),
    "lcss": lambda s, x, k, sig, data: losses.lcss_loss(s, x, k, sig),
    "fd_ssm": lambda s, x, k, sig, data: losses.fd_ssm_loss(s, x, k),
    "ssm_vr": lambda s, x, k, sig, data: losses.ssm_loss(s, x, k),
    "ssm": lambda s, x, k, sig, data: losses.ssm_loss(s, x, k, variance_reduction=False),
    "esm": lambda s, x, k, sig, data: losses.esm_loss(s, x, data, sig),
    "ism": lambda s, x, k, sig, data: losses.ism_loss(s, x),
    "qc": lambda s, x, k, sig, data: losses.qc_loss(s, x, k),
}


def dsm_with_qc(score_fn, x, key, sigma, data, qc_weight=1.0):
    """DSM + λσ²·QC on the same perturbed points with one shared linearisation (QCSGM Eq. A5)."""
    kz, kv = jax.random.split(key)
    sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    x_tilde, z = losses.perturb(x, kz, sig)
    s, jvp_fn, vjp_fn = linearize_score(score_fn, x_tilde)
    dsm = 0.5 * jnp.sum((s + z / sig) ** 2, axis=tuple(range(1, x.ndim)))
    v = losses.draw_probes(kv, (1, *x.shape), "rademacher", x.dtype)
    return dsm + qc_weight * sigma**2 * losses.qc_from_linearization(jvp_fn, vjp_fn, v)


def make_step(model, objective, sde, data, weight_by_sigma2=True):
    """A jitted Adam step on mean(λ(σ) · objective) with λ = σ² (the QCSGM/score_sde default)."""
    optimizer = optax.adam(2e-4)

    def loss(params, x, key, data):
        kt, kl = jax.random.split(key)
        t = jax.random.uniform(kt, (x.shape[0],), x.dtype, 1e-5, 1.0)
        sigma = sde.marginal_std(t)
        score = make_score_fn(model.apply, params, "u", sde.marginal_std)
        per_example = objective(lambda y: score(y, t), x, kl, sigma, data)
        return jnp.mean(sigma**2 * per_example if weight_by_sigma2 else per_example)

    @jax.jit
    def step(params, opt_state, x, key, data):  # data is an argument: a closed-over array would be
        value, grads = jax.value_and_grad(loss)(params, x, key, data)  # constant-folded by XLA
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return functools.partial(step, data=data), optimizer


def time_step(step, params, opt_state, x, repeats, warmup=2):
    """Median seconds of ``step`` (after ``warmup`` calls, which include compilation)."""
    key = jax.random.PRNGKey(0)
    for i in range(warmup):
        params, opt_state, value = step(params, opt_state, x, jax.random.fold_in(key, i))
    jax.block_until_ready(value)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        params, opt_state, value = step(params, opt_state, x, jax.random.fold_in(key, 100 + i))
        jax.block_until_ready(value)
        times.append(time.perf_counter() - start)
    if not np.isfinite(float(value)):
        raise RuntimeError("non-finite loss during the benchmark")
    return statistics.median(times)


def setups(quick: bool):
    key = jax.random.PRNGKey(0)
    toy_x = jax.random.normal(key, (5000, 2)) * 2.0
    conv_batch = 64
    conv_x = jax.random.normal(key, (conv_batch, 32, 32, 3))
    return {
        "toy": dict(model=get_model("toy_mlp"), x=toy_x, sde=VESDE(0.1, 3.0),
                    data=jax.random.normal(jax.random.fold_in(key, 1), (50_000, 2)) * 2.0,
                    skip={}),
        "conv": dict(model=get_model("small_conv"), x=conv_x, sde=VESDE(0.01, 50.0),
                     data=jax.random.normal(jax.random.fold_in(key, 1), (2_000 if quick else 10_000, 32, 32, 3)),
                     skip={"ism": "D = 3072 JVPs per step; see the ISM-vs-D table"}),
    }


def objective_table(quick: bool) -> list[dict]:
    rows = []
    repeats = 3 if quick else 10
    for name, cfg in setups(quick).items():
        x, model, sde = cfg["x"], cfg["model"], cfg["sde"]
        params = model.init(jax.random.PRNGKey(1), x[:1], jnp.ones((1,)))
        candidates = dict(OBJECTIVES, dsm_qc=dsm_with_qc)
        timings = {}
        for obj_name, objective in candidates.items():
            if obj_name in cfg["skip"]:
                rows.append(dict(setup=name, objective=obj_name, ms=None, ratio_to_dsm=None,
                                 note=cfg["skip"][obj_name]))
                continue
            step, optimizer = make_step(model, objective, sde, cfg["data"])
            timings[obj_name] = time_step(step, params, optimizer.init(params), x, repeats)
            print(f"  {name:5s} {obj_name:7s} {1e3 * timings[obj_name]:9.2f} ms", file=sys.stderr)
        for obj_name, seconds in timings.items():
            rows.append(dict(setup=name, objective=obj_name, ms=1e3 * seconds,
                             ratio_to_dsm=seconds / timings["dsm"], note=""))
    return rows


def naive_trace(score_fn, x):
    """tr J by D reverse-mode passes in sequence (the cost ISM is measured against)."""
    s, vjp_fn = jax.vjp(score_fn, x)
    dim = x.shape[1]

    def body(i, acc):
        e = jnp.broadcast_to(jax.nn.one_hot(i, dim, dtype=x.dtype), x.shape)
        return acc + vjp_fn(e)[0][:, i]

    return 0.5 * jnp.sum(s**2, axis=1) + jax.lax.fori_loop(0, dim, body, jnp.zeros(x.shape[0], x.dtype))


def dimension_table(quick: bool) -> list[dict]:
    rows = []
    dims = (2, 8, 32, 128) if quick else (2, 8, 32, 128, 512)
    sde = VESDE(0.1, 3.0)
    model = get_model("toy_mlp")
    candidates = {
        "ism": OBJECTIVES["ism"],
        "ssm_vr": OBJECTIVES["ssm_vr"],
        "naive_ism": lambda s, x, k, sig, data: naive_trace(s, x),
    }
    for dim in dims:
        x = jax.random.normal(jax.random.PRNGKey(dim), (256, dim))
        params = model.init(jax.random.PRNGKey(1), x[:1], jnp.ones((1,)))
        row = dict(D=dim)
        for name, objective in candidates.items():
            step, optimizer = make_step(model, objective, sde, None)
            row[f"{name}_ms"] = 1e3 * time_step(step, params, optimizer.init(params), x, 3 if quick else 7)
        row["ism_over_ssm"] = row["ism_ms"] / row["ssm_vr_ms"]
        row["naive_over_ism"] = row["naive_ism_ms"] / row["ism_ms"]
        print(f"  D={dim:4d} ism {row['ism_ms']:.2f} ms  ssm {row['ssm_vr_ms']:.2f} ms  "
              f"naive {row['naive_ism_ms']:.2f} ms", file=sys.stderr)
        rows.append(row)
    slope = np.polyfit([r["D"] for r in rows], [r["ism_ms"] for r in rows], 1)[0]
    for r in rows:
        r["ism_ms_per_dim_fit"] = slope
    return rows


def print_tables(objectives: list[dict], dims: list[dict]) -> None:
    print(f"\nObjective step time (jitted value_and_grad + Adam), {jax.devices()[0].platform}")
    print(f"{'setup':6s} {'objective':9s} {'ms/step':>10s} {'× DSM':>7s}  note")
    for r in objectives:
        ms = f"{r['ms']:10.2f}" if r["ms"] is not None else f"{'—':>10s}"
        ratio = f"{r['ratio_to_dsm']:7.2f}" if r["ratio_to_dsm"] is not None else f"{'—':>7s}"
        print(f"{r['setup']:6s} {r['objective']:9s} {ms} {ratio}  {r['note']}")
    print("\nISM (exact trace, D JVPs on one linearisation) vs SSM-VR vs D sequential backward passes, batch 256")
    print(f"{'D':>5s} {'ISM ms':>9s} {'SSM ms':>9s} {'naive ms':>9s} {'ISM/SSM':>8s} {'naive/ISM':>9s}")
    for r in dims:
        print(f"{r['D']:5d} {r['ism_ms']:9.2f} {r['ssm_vr_ms']:9.2f} {r['naive_ism_ms']:9.2f} "
              f"{r['ism_over_ssm']:8.2f} {r['naive_over_ism']:9.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "losses.json"))
    args = parser.parse_args(argv)
    objectives = objective_table(args.quick)
    dims = dimension_table(args.quick)
    print_tables(objectives, dims)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(device=str(jax.devices()[0]), platform=platform.platform(), jax=jax.__version__,
                       quick=args.quick, objectives=objectives, dimensions=dims), f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
