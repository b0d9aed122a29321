"""Image evaluation speed: samples per second of PC and probability-flow ODE sampling, bits/dim
examples per second, Inception features per second, and the share of a batch's time that is not
the network's forward passes.

Each evaluation path runs one global batch per call through the per-batch programs of
``sgm_jax.evaluate.images`` (``BatchSampler``, ``bpd_batch_fn``) and ``metrics.load_inception``:

* **forward**: ``K`` = ``--forward-passes`` passes of the score model
  ``experiment.score_model(params)(x, t)`` on a batch in one jitted loop (reported per pass):
  the cost of one NFE as the samplers' compiled loops pay it, without a dispatch per pass;
* **forward + JVP**: the same with one ``jax.jvp`` (one Hutchinson probe), the unit of the
  likelihood's vector field;
* **PC**: ``sgm_jax.evaluate.images.BatchSampler`` with the predictor–corrector sampler (``sde.num_scales``
  = ``--pc-steps``): a sharded prior draw, the sampler in one jitted program with the batch
  sharded over the data mesh, the samples fetched to the host as uint8;
  batch i draws from ``fold_in(key, i)``. Its time at score_sde's N = 1000 is extrapolated
  linearly in N (per-batch costs that do not grow with N are scaled too, so the extrapolation
  errs on the slow side);
* **ODE**: the same with ``sampling.method = "ode"`` (diffrax Dopri5 at the config's
  ``sampling.rtol``/``atol``, or ``--ode-tol``); its NFE is the solver's count;
* **BPD**: one batch of the test split through ``sgm_jax.evaluate.images.bpd_batch_fn`` (uniform
  dequantisation and the likelihood with the Hutchinson divergence in one jitted program, at
  ``eval.bpd_rtol``/``bpd_atol``/``bpd_eps`` or ``--bpd-tol``), the values fetched to the host;
* **Inception**: ``metrics.load_inception`` (``--inception-batch`` images per pass, by default
  its 50, as the image evaluation calls it) on ``--inception-images`` uint8 images of the data's size,
  from random weights in the converted ``.npz`` layout unless ``--inception-weights`` names the
  real file (speed does not depend on the weights).

All paths are timed interleaved round by round (``benchmarks/timing.py``: ``compare`` against
the forward pass; ``--repeats`` batches per path and round). Reported per path: the NFE per
batch, seconds per batch, samples (examples, images) per second, and its time in forward passes
(the median per-round ratio to the forward pass, with its range). The **overhead share** of a
batch is (wall − NFE × forward) / wall, per round from the two times measured within that round
(median and range over rounds); for BPD the unit is the forward + JVP pass. It holds what the
network's passes do not explain: the solver's and the scan's bookkeeping, the prior draw,
dispatch, the host round-trip and the uint8 conversion. The first two batches of every path are
the warm-up: the first compiles, and for the second the number of XLA compilations and traces
(JAX's monitoring events) is reported, which must be 0.

Parameters are random (``experiment.init_params``): the cost of a pass does not depend on them,
but the step count of the adaptive ODE and likelihood solves does. score_sde's NCSN++ initialises
its output layer near zero, so an untrained network's probability-flow field is nearly constant
and those solves take few steps; a trained model's take more, over which the per-batch costs
spread, so its overhead share is at most the one measured here.

    python benchmarks/evaluation.py --quick --mock-data          # minutes on a CPU
    python benchmarks/evaluation.py --batch 4 --mock-data        # the full NCSN++ on a CPU
    python benchmarks/evaluation.py --batch 128 --pc-steps 1000  # a GPU

``--mock-data`` feeds tfds mock images when CIFAR-10 is not prepared on the machine.
The process is set as ``main.py`` sets its own for the config (``benchmarks.process_settings``:
host memory, XLA:CPU's fusions; the arguments force either).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
from typing import Callable

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.process_settings import add_process_arguments, set_process_as_main  # noqa: E402
from benchmarks.timing import (BatchPath, CompileEvents, compare, forward_step,  # noqa: E402
                               format_table, image_data, overhead_share, write_json)
from sgm_jax import parallel  # noqa: E402
from sgm_jax.experiment import Experiment, build_experiment  # noqa: E402
from sgm_jax.evaluate.images import BatchSampler, bpd_batch_fn  # noqa: E402
from sgm_jax.metrics import load_inception  # noqa: E402
from sgm_jax.metrics.inception import write_random_inception_weights  # noqa: E402

FORWARD, JVP = "forward", "forward + JVP"
PC, ODE, BPD, INCEPTION = "PC", "ODE", "BPD", "Inception"
REFERENCE_STEPS = 1000  # score_sde's N for CIFAR-10
WARMUP = 2  # batch 0 compiles; batch 1 must not
QUICK = dict(nf=16, num_res_blocks=1, batch=2, pc_steps=4, rounds=3, repeats=5,
             forward_passes=8, inception_images=10, inception_batch=10)
FULL = dict(nf=128, num_res_blocks=None, batch=4, pc_steps=20, rounds=3, repeats=1,
            forward_passes=5, inception_images=100, inception_batch=50)


def _config(args, **overrides):
    """The config file with the benchmark's network width and batch, plus ``overrides``
    ("section.field": value)."""
    spec = importlib.util.spec_from_file_location("evaluated_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.nf = args.nf
    if args.num_res_blocks is not None:
        config.model.num_res_blocks = args.num_res_blocks
    config.training.batch_size = args.batch
    config.eval.batch_size = args.batch
    for path, value in overrides.items():
        section, field = path.split(".")
        config[section][field] = value
    return config


def _sampler_step(experiment: Experiment, params, mesh, batch: int, key) -> Callable:
    """One sample batch as the image evaluation draws it (``sgm_jax.evaluate.images.BatchSampler``: a sharded prior
    draw, the experiment's sampler in one jitted program, the samples fetched as uint8)."""
    sampler = BatchSampler(experiment, params, batch, mesh)
    return lambda i: sampler(jax.random.fold_in(key, i))


def _bpd_step(experiment: Experiment, params, mesh, batch: int, key) -> Callable:
    """Bits/dim of one test batch as the image evaluation computes it (``sgm_jax.evaluate.images.bpd_batch_fn``),
    the values fetched to the host."""
    run = bpd_batch_fn(experiment, mesh)
    rows = next(iter(experiment.data.eval_batches(batch)))
    levels = parallel.shard_batch(
        np.asarray(experiment.data.inverse_scaler(rows["x"]), np.float32), mesh)

    def run_batch(i):
        bpd, nfe = run(params, levels, jax.random.fold_in(key, i))
        return jax.device_get(bpd), int(nfe)

    return run_batch


def _inception_step(weights: str, experiment: Experiment, count: int, batch: int) -> Callable:
    """Pool features and logits of ``count`` random uint8 images of the data's size, ``batch``
    per pass."""
    inception = load_inception(weights, batch_size=batch)
    height, width = experiment.event_shape[:2]
    images = np.random.default_rng(0).integers(0, 256, (count, height, width, 3), np.uint8)

    def run_batch(i):
        return inception(images), 0

    return run_batch


def _summarise(result: dict, steps: dict[str, BatchPath], args) -> dict[str, str]:
    """Complete each row of ``compare``'s result (NFE, throughput, first and second batch,
    overhead share, PC at N = 1000); returns the notes column of the table."""
    notes = {}
    for name, path in steps.items():
        row = result["steps"][name]
        first, second = path.records[0], path.records[1]
        nfe = statistics.mean(r["nfe"] for r in path.records)
        examples = args.inception_images if name == INCEPTION else args.batch
        seconds = row["median_ms"] / 1e3
        row.update(examples_per_batch=examples, seconds_per_batch=seconds,
                   examples_per_s=examples / seconds, first_batch_s=first["wall_s"],
                   first_batch_compiles=first["compiles"],
                   first_batch_compile_s=first["compile_s"], second_batch_s=second["wall_s"],
                   second_batch_compiles=second["compiles"],
                   second_batch_traces=second["traces"], batches=path.records)
        if name in (FORWARD, JVP):
            row.update(passes_per_call=args.forward_passes,
                       ms_per_pass=row["median_ms"] / args.forward_passes)
        elif name != INCEPTION:
            unit = JVP if name == BPD else FORWARD
            row.update(nfe=nfe, ms_per_nfe=row["median_ms"] / nfe,
                       forward_passes=row["ratio_median"] * args.forward_passes,
                       forward_passes_min=row["ratio_min"] * args.forward_passes,
                       forward_passes_max=row["ratio_max"] * args.forward_passes,
                       **overhead_share(result, path, name, unit, args.forward_passes, WARMUP))
        if name == PC:
            scale = REFERENCE_STEPS / args.pc_steps
            row.update(pc_steps=args.pc_steps, nfe_at_n1000=nfe * scale,
                       seconds_per_batch_at_n1000=seconds * scale,
                       examples_per_s_at_n1000=examples / (seconds * scale))
        notes[name] = (f"batch 0 {first['wall_s']:.1f} s ({first['compiles']} compiles), "
                       f"batch 1 {second['wall_s']:.2f} s ({second['compiles']} compiles, "
                       f"{second['traces']} traces)")
    return notes


def _markdown(result: dict, args) -> str:
    """The summary table: throughput, NFE, time in forward passes, overhead share, and the
    first two batches (docs/benchmarks.md's format)."""
    lines = ["| path | batch | NFE / batch | s / batch | per second | ms / NFE "
             "| in forward passes | overhead share | batch 0 / batch 1 s | batch 1 compiles, "
             "traces |", "|---" * 10 + "|"]
    for name, row in result["steps"].items():
        warm = (f"| {row['first_batch_s']:.1f} / {row['second_batch_s']:.2f} "
                f"| {row['second_batch_compiles']}, {row['second_batch_traces']} |")
        if name in (FORWARD, JVP):
            lines.append(f"| {name} (one pass; {args.forward_passes} per timed loop) "
                         f"| {args.batch} | 1 | {row['ms_per_pass'] / 1e3:.3g} | | "
                         f"{row['ms_per_pass']:.1f} | | " + warm)
            continue
        if name == INCEPTION:
            lines.append(f"| {name} | {row['examples_per_batch']} | | "
                         f"{row['seconds_per_batch']:.3g} | {row['examples_per_s']:.3g} images "
                         "| | | " + warm)
            continue
        unit = "samples" if name in (PC, ODE) else "examples"
        label = f"{name} (N = {args.pc_steps})" if name == PC else name
        lines.append(
            f"| {label} | {args.batch} | {row['nfe']:.4g} | {row['seconds_per_batch']:.3g} "
            f"| {row['examples_per_s']:.3g} {unit} | {row['ms_per_nfe']:.1f} "
            f"| {row['forward_passes']:.1f} ({row['forward_passes_min']:.1f}–"
            f"{row['forward_passes_max']:.1f}) "
            f"| {100 * row['overhead_share']:.1f} % ({100 * row['overhead_share_min']:.1f}–"
            f"{100 * row['overhead_share_max']:.1f}) vs {row['overhead_unit']} " + warm)
        if name == PC and args.pc_steps != REFERENCE_STEPS:
            lines.append(
                f"| PC at N = {REFERENCE_STEPS}, extrapolated "
                f"×{REFERENCE_STEPS / args.pc_steps:g} from N = {args.pc_steps} | {args.batch} "
                f"| {row['nfe_at_n1000']:g} "
                f"| {row['seconds_per_batch_at_n1000']:.3g} "
                f"| {row['examples_per_s_at_n1000']:.3g} samples | | | | | |")
    return "\n".join(lines)


def benchmark(args, events: CompileEvents, weights: str) -> dict:
    """Build the paths, time them interleaved, print the tables; returns the result dict."""
    mesh = parallel.data_mesh()
    pc_experiment = build_experiment(_config(args, **{"sampling.method": "pc",
                                                      "sde.num_scales": args.pc_steps}))
    ode_overrides = {"sampling.method": "ode"}
    if args.ode_tol is not None:
        ode_overrides.update({"sampling.rtol": args.ode_tol, "sampling.atol": args.ode_tol})
    if args.bpd_tol is not None:
        ode_overrides.update({"eval.bpd_rtol": args.bpd_tol, "eval.bpd_atol": args.bpd_tol})
    experiment = build_experiment(_config(args, **ode_overrides))
    params = parallel.replicate(experiment.init_params(jax.random.PRNGKey(0)), mesh)
    key, batch, passes = experiment.eval_key(), args.batch, args.forward_passes
    runs = {
        FORWARD: forward_step(experiment, params, mesh, batch, passes, "forward"),
        JVP: forward_step(experiment, params, mesh, batch, passes, "jvp"),
        PC: _sampler_step(pc_experiment, params, mesh, batch, key),
        ODE: _sampler_step(experiment, params, mesh, batch, key),
        BPD: _bpd_step(experiment, params, mesh, batch, key),
        INCEPTION: _inception_step(weights, experiment, args.inception_images,
                                   args.inception_batch),
    }
    steps = {name: BatchPath(run, events) for name, run in runs.items()}
    result = compare(steps, FORWARD, rounds=args.rounds, repeats=args.repeats, warmup=WARMUP)
    notes = _summarise(result, steps, args)
    device = f"{jax.devices()[0].platform} × {jax.device_count()}"
    print(format_table(result, f"Evaluation, one batch per run (forward steps: {passes} passes "
                               f"per loop), batch {batch}, nf {args.nf}, "
                               f"{experiment.network.num_res_blocks} blocks, {device}",
                       notes))
    print()
    print(_markdown(result, args))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "ve",
                                                         "cifar10_ncsnpp_continuous.py"))
    parser.add_argument("--quick", action="store_true",
                        help=f"a tiny network and batch, few steps: {QUICK}")
    parser.add_argument("--nf", type=int)
    parser.add_argument("--num-res-blocks", type=int,
                        help="residual blocks per resolution (default: the config's)")
    parser.add_argument("--batch", type=int, help="global batch of every path")
    parser.add_argument("--pc-steps", type=int,
                        help="sde.num_scales of the PC sampler (its time is extrapolated to 1000)")
    parser.add_argument("--ode-tol", type=float,
                        help="rtol = atol of the ODE sampler (default: the config's)")
    parser.add_argument("--bpd-tol", type=float,
                        help="rtol = atol of the likelihood (default: the config's)")
    parser.add_argument("--inception-images", type=int, help="images per Inception call")
    parser.add_argument("--inception-batch", type=int,
                        help="images per Inception pass (load_inception's batch_size)")
    parser.add_argument("--inception-weights", default="",
                        help="converted FID Inception .npz (default: random weights)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--repeats", type=int, help="timed batches per path and round")
    parser.add_argument("--forward-passes", type=int,
                        help="forward passes per timed call of the forward steps")
    parser.add_argument("--mock-data", action="store_true",
                        help="tfds mock images instead of the prepared CIFAR-10")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "evaluation.json"))
    add_process_arguments(parser)
    args = parser.parse_args(argv)
    for field, value in (QUICK if args.quick else FULL).items():
        if getattr(args, field) is None:
            setattr(args, field, value)
    for field in ("nf", "batch", "pc_steps", "rounds", "repeats", "forward_passes",
                  "inception_images", "inception_batch"):
        if getattr(args, field) < 1:
            raise ValueError(f"--{field.replace('_', '-')} must be an integer >= 1; got "
                             f"{getattr(args, field)}.")
    applied = set_process_as_main(args, _config(args))  # before JAX starts its threads
    events = CompileEvents()
    with contextlib.ExitStack() as stack:
        stack.enter_context(image_data(args.mock_data, args.batch))
        weights = args.inception_weights
        if not weights:
            weights = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()),
                                   "inception_random.npz")
            write_random_inception_weights(weights)
        result = benchmark(args, events, weights)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings["config"] = os.path.relpath(os.path.abspath(args.config), ROOT)
    settings.update(applied)
    write_json(args.out, {"settings": settings, "random_inception_weights": not
                          args.inception_weights, "evaluation": result})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
