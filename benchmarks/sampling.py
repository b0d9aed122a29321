"""Sampler speed: seconds per sample and NFE of every sampler of ``sgm_jax.sampling``, and the
share of a batch's time that is not the score model's passes.

Each sampler runs one global batch per call through the programs ``main.py --mode=sample`` runs:
``evaluate.images.BatchSampler`` (a sharded prior draw, the sampler in one jitted program, the samples
fetched to the host as uint8) for the unconditional samplers PC, DDIM and Heun, and
``evaluate.tasks.task_program`` (observation and sampler in one jitted program, the outputs
fetched) for inpainting (PC imputation, centre square) and DPS (2 × 2 average pooling). The
networks are the config's with random parameters (``experiment.init_params``): a pass costs the
same whatever the weights.

All paths are timed interleaved round by round with two units (``benchmarks/timing.py``:
``compare``, ``forward_step``): ``--forward-passes`` score-model passes in one jitted loop, and
as many passes with one VJP each (DPS's unit: its guidance back-propagates through the model).
Reported per sampler: NFE per batch, seconds per batch and per sample, and the **overhead share**
(time − NFE × one unit) / time, per round from times measured within that round (median and range
over rounds; the unit is the forward pass, the VJP pass for DPS), in wall time and in the
process's CPU time (the steadier one on a shared machine). It is what the network's
passes do not explain: the sampler's arithmetic and loop, the prior draw, dispatch, the host
round trip and the uint8 conversion. The first two batches of every path are the warm-up; the
compilations and traces of the second are reported, and must be 0 (a new batch of inputs
compiles nothing).

    python benchmarks/sampling.py --setup digits                   # configs/ve/digits_u.py
    python benchmarks/sampling.py --setup ncsnpp_deep --mock-data  # cifar10_u, NCSN++ deep nf 32

The process is set as ``main.py`` sets its own for the setup's config
(``benchmarks.process_settings``: for NCSN++ freed host memory kept and elementwise fusions in
YNNPACK, for digits neither; the arguments force either); ``--samplers`` times a subset.

Every sampler runs ``--steps`` steps (PC: N = sde.num_scales; DDIM: N; Heun: N levels, 2N − 1
NFE; DPS: N); its seconds per sample at its usual step count (PC 1000, DDIM 50, Heun 18, DPS
1000) are extrapolated linearly in the NFE.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.process_settings import add_process_arguments, set_process_as_main  # noqa: E402
from benchmarks.timing import (BatchPath, CompileEvents, compare, forward_step,  # noqa: E402
                               format_table, image_data, overhead_share, write_json)
from sgm_jax import parallel  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402
from sgm_jax.evaluate.images import BatchSampler  # noqa: E402
from sgm_jax.evaluate.tasks import task_program, test_images  # noqa: E402

FORWARD, VJP = "forward", "forward + VJP"
WARMUP = 2  # batch 0 compiles; batch 1 must not
SETUPS = {  # config, overrides of the network
    "digits": ("configs/ve/digits_u.py", {}),
    "ncsnpp_deep": ("configs/ve/cifar10_u.py", {"model.nf": 32}),
}
#: name: (config overrides, the unit of its overhead share, its usual number of steps)
SAMPLERS = {
    "PC": ({"sampling.method": "pc"}, FORWARD, 1000),
    "DDIM": ({"sampling.method": "ddim"}, FORWARD, 50),
    "Heun": ({"sampling.method": "heun"}, FORWARD, 18),
    "inpaint (PC)": ({"sampling.task": "inpaint", "sampling.mask": "centre_square"}, FORWARD,
                     1000),
    "DPS (pool 2)": ({"sampling.task": "dps", "sampling.operator": "pool"}, VJP, 1000),
}


def _config(args, overrides: dict):
    path, network = SETUPS[args.setup]
    spec = importlib.util.spec_from_file_location("benchmarked_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    steps = {"sde.num_scales": args.steps, "sampling.ddim_steps": args.steps,
             "sampling.heun_steps": args.steps, "sampling.dps_steps": args.steps,
             "training.batch_size": args.batch, "eval.batch_size": args.batch,
             "sampling.num_samples": args.batch}
    for dotted, value in {**network, **steps, **overrides}.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


def _nfe_at(name: str, usual: int) -> float:
    """The NFE of the sampler at its usual step count (PC: 2 per step; Heun: 2N − 1)."""
    return {"PC": 2 * usual, "Heun": 2 * usual - 1, "inpaint (PC)": 2 * usual}.get(name, usual)


def benchmark(args, events: CompileEvents) -> dict:
    mesh = parallel.data_mesh()
    base = build_experiment(_config(args, {}))
    params = parallel.replicate(base.init_params(jax.random.PRNGKey(0)), mesh)
    key = base.eval_key()
    samplers = {name: SAMPLERS[name] for name in args.samplers}
    runs = {FORWARD: forward_step(base, params, mesh, args.batch, args.forward_passes)}
    if any(unit == VJP for _, unit, _ in samplers.values()):
        runs[VJP] = forward_step(base, params, mesh, args.batch, args.forward_passes, "vjp")
    for name, (overrides, _, _) in samplers.items():
        experiment = build_experiment(_config(args, overrides))
        if experiment.task is None:
            sampler = BatchSampler(experiment, params, args.batch, mesh)
            runs[name] = lambda i, s=sampler: s(jax.random.fold_in(key, i))
        else:
            program = task_program(experiment, mesh)
            x = parallel.shard_batch(test_images(experiment, args.batch)[0], mesh)

            def run(i, program=program, x=x):
                shown, samples, nfe = program(params, x, jax.random.fold_in(key, i))
                return jax.device_get(samples), int(nfe)

            runs[name] = run
    paths = {name: BatchPath(run, events) for name, run in runs.items()}
    result = compare(paths, FORWARD, rounds=args.rounds, repeats=args.repeats, warmup=WARMUP)
    for name, path in paths.items():
        row, second = result["steps"][name], path.records[1]
        row.update(second_batch_compiles=second["compiles"], second_batch_traces=second["traces"],
                   first_batch_s=path.records[0]["wall_s"], batch=args.batch)
        if name in (FORWARD, VJP):
            row.update(ms_per_pass=row["median_ms"] / args.forward_passes)
            continue
        _, unit, usual = SAMPLERS[name]
        nfe = statistics.median(r["nfe"] for r in path.records)
        seconds = row["median_ms"] / 1e3
        row.update(nfe=nfe, seconds_per_batch=seconds, seconds_per_sample=seconds / args.batch,
                   usual_nfe=_nfe_at(name, usual),
                   seconds_per_sample_usual=seconds / args.batch
                   * _nfe_at(name, usual) / nfe,
                   **{**overhead_share(result, path, name, unit, args.forward_passes, WARMUP),
                      **overhead_share(result, path, name, unit, args.forward_passes, WARMUP,
                                       "cpu_")})
    return result


def markdown(result: dict, args) -> str:
    lines = ["| sampler | steps | NFE / batch | s / batch | s / sample | overhead share, wall "
             "(range) | overhead share, CPU (range) | usual NFE: s / sample | batch 1 compiles, "
             "traces |", "|---" * 9 + "|"]
    for name, row in result["steps"].items():
        warm = f"{row['second_batch_compiles']}, {row['second_batch_traces']}"
        if name in (FORWARD, VJP):
            lines.append(f"| one {name} pass | | 1 | {row['ms_per_pass'] / 1e3:.3g} | "
                         f"{row['ms_per_pass'] / 1e3 / args.batch:.3g} | | | | {warm} |")
            continue
        shares = " | ".join(
            f"{100 * row[c + 'overhead_share']:.1f} % ({100 * row[c + 'overhead_share_min']:.1f} "
            f"to {100 * row[c + 'overhead_share_max']:.1f})" for c in ("", "cpu_"))
        lines.append(
            f"| {name} | {args.steps} | {row['nfe']:g} | {row['seconds_per_batch']:.3g} "
            f"| {row['seconds_per_sample']:.3g} | {shares} vs {row['overhead_unit']} "
            f"| {row['usual_nfe']:g}: {row['seconds_per_sample_usual']:.3g} | {warm} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=tuple(SETUPS), default="digits")
    parser.add_argument("--samplers", nargs="+", choices=tuple(SAMPLERS), default=list(SAMPLERS),
                        help="the samplers to time (default: all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps of every sampler")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--forward-passes", type=int, default=10)
    parser.add_argument("--mock-data", action="store_true",
                        help="tfds mock images instead of the prepared CIFAR-10")
    parser.add_argument("--out", default=None,
                        help="JSON (default benchmarks/results/sampling_<setup>.json)")
    add_process_arguments(parser)
    args = parser.parse_args(argv)
    applied = set_process_as_main(args, _config(args, {}))  # before JAX starts its threads
    for field in ("batch", "steps", "rounds", "repeats", "forward_passes"):
        if getattr(args, field) < 1:
            raise ValueError(f"--{field.replace('_', '-')} must be an integer >= 1; got "
                             f"{getattr(args, field)}.")
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"sampling_{args.setup}.json")
    events = CompileEvents()
    with contextlib.ExitStack() as stack:
        stack.enter_context(image_data(args.mock_data, max(args.batch, 16)))
        result = benchmark(args, events)
    device = f"{jax.devices()[0].platform} × {jax.device_count()}"
    print(format_table(result, f"Samplers, one batch of {args.batch} per run, {args.setup}, "
                               f"{args.steps} steps, {device}"))
    print()
    print(markdown(result, args))
    write_json(out, {"settings": vars(args) | {"out": os.path.relpath(out, ROOT), **applied},
                     "sampling": result})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
