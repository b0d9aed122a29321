"""Image-scale training speed: the QCSGM network (NCSN++ deep continuous, VE) trained as U, C and
QC, the cheaper QC schedules, and several steps per dispatch.

Every step is the library's own train step (``sgm_jax.train.TrainStep`` of the experiment that
``configs/ve/cifar10_{u,c,qc}.py`` builds, through ``benchmarks.timing.TrainStepRunner``), timed
interleaved round by round (``benchmarks/timing.py``): the median per-round ratio to U with its
range. Compile time is that of ``jit(...).lower(...).compile()``; memory is XLA's buffer
assignment of the compiled step (``memory_analysis``: arguments + outputs + temporaries, less the
donated aliases), and on a GPU also the device's peak bytes in use.

* U, C (energy gradient: one more backward pass), QC (λ = 1e-4, K = 1, fused with DSM);
* QC on a quarter of each device's examples (``training.qc_fraction = 0.25``) and lazy QC
  (``training.qc_every`` = 4 or 5): each timed unit is one cycle of the lazy schedule (k
  consecutive steps; 4 for the other variants), and the ratios are per step, so the lazy ratio is
  the amortised one;
* U with activation checkpointing of the residual blocks (``training.remat``: the policies
  ``nothing_saveable`` and ``conv_saveable``): the step-time cost of recomputing their forward
  pass;
* ``n_jitted_steps``: U with 5 steps in one dispatch against 5 dispatches of one step;
* ``flops``: XLA's FLOP count per train step of every variant above (the lowered programs,
  nothing compiled or run: about half a minute per variant at full width on a CPU, at any
  batch), and its ratio to U: what the time ratios would be where the step is bound by
  arithmetic.

    python benchmarks/images.py                      # full network, batch 32 and 128 (a GPU)
    python benchmarks/images.py --batch 4 --mock-data --sections qc --variants c qc
    python benchmarks/images.py --batch 4 --mock-data --sections qc --variants qc_fraction qc_every
    python benchmarks/images.py --batch 4 --mock-data --sections qc --variants qc_every5
    python benchmarks/images.py --batch 8 --mock-data --sections qc --variants remat remat_conv
                                                     # full network on a CPU, in three runs
    python benchmarks/images.py --nf 32 --num-res-blocks 2 --batch 8 --mock-data   # reduced width
    python benchmarks/images.py ... --sections jitted     # only the steps-per-dispatch table
    python benchmarks/images.py --mock-data --sections flops   # FLOPs at full width, any machine

``--mock-data`` feeds tfds mock images (timing does not depend on the pixel values) when
CIFAR-10 is not prepared on the machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import (TrainStepRunner, add_image_data_arguments,  # noqa: E402
                               compare_runners, device_peak_mb, format_table, image_data,
                               train_step_gflops, write_json)
from sgm_jax import parallel  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402

CYCLE = 4  # steps per timed unit of the variants without lazy QC
JITTED = 5  # steps per dispatch in the n_jitted_steps comparison (score_sde's CIFAR-10 value)
VARIANTS = {  # name: (config module, training overrides)
    "U": ("cifar10_u", {}),
    "C": ("cifar10_c", {}),
    "QC": ("cifar10_qc", {}),
    "QC, qc_fraction 0.25": ("cifar10_qc", {"qc_fraction": 0.25}),
    "QC, qc_every 4": ("cifar10_qc", {"qc_every": 4}),
    "QC, qc_every 5": ("cifar10_qc", {"qc_every": 5}),
    "U, remat nothing_saveable": ("cifar10_u", {"remat": "nothing_saveable"}),
    "U, remat conv_saveable": ("cifar10_u", {"remat": "conv_saveable"}),
}
#: ``--variants`` names of VARIANTS (U is always timed: it is the reference of every ratio).
VARIANT_FLAGS = dict(zip(["u", "c", "qc", "qc_fraction", "qc_every", "qc_every5", "remat",
                          "remat_conv"], VARIANTS))


def qcsgm_config(module: str, args, batch: int, **training):
    """``configs/ve/<module>.py`` at the width of ``args.nf`` / ``args.num_res_blocks``, global
    batch ``batch``, one step per dispatch, with the ``training`` fields overridden."""
    config = importlib.import_module(f"configs.ve.{module}").get_config()
    config.model.nf = args.nf
    config.model.num_res_blocks = args.num_res_blocks
    config.training.batch_size = batch
    config.training.n_jitted_steps = 1
    for field, value in training.items():
        config.training[field] = value
    return config


def benchmark(args, batch: int, mesh) -> dict:
    out = {}
    if "qc" in args.sections:
        out["qc"] = qc_table(args, batch, mesh)
    if "jitted" in args.sections:
        out["n_jitted_steps"] = jitted_table(args, batch, mesh)
    if "flops" in args.sections:
        out["flops"] = flops_table(args, batch, mesh)
    return out


def _cycle(overrides: dict) -> int:
    """Steps per timed unit (and per FLOP count) of a variant: one cycle of its lazy schedule."""
    return overrides.get("qc_every", CYCLE)


def _variants(args) -> dict:
    names = {"U", *(VARIANT_FLAGS[v] for v in args.variants)}
    return {name: spec for name, spec in VARIANTS.items() if name in names}


def qc_table(args, batch: int, mesh) -> dict:
    runs, notes = {}, {}
    for name, (module, overrides) in _variants(args).items():
        experiment = build_experiment(qcsgm_config(module, args, batch, **overrides))
        runs[name] = TrainStepRunner(experiment, mesh, calls=_cycle(overrides))
        notes[name] = (f"{runs[name].steps} steps per unit, "
                       f"compile {runs[name].compile_seconds:.1f} s, "
                       f"memory {runs[name].memory_mb or float('nan'):.0f} MiB")
        print(f"  {name}: {notes[name]}", flush=True)
    result = compare_runners(runs, "U", rounds=args.rounds, repeats=1, warmup=1)
    result["peak_device_mb"] = device_peak_mb()
    print(format_table(result, f"Train step (ratios per step), batch {batch}, nf "
                               f"{args.nf}, {args.num_res_blocks} blocks, "
                               f"{jax.devices()[0].platform} × {jax.device_count()}", notes))
    return result


def flops_table(args, batch: int, mesh) -> dict:
    gflop = {name: train_step_gflops(
                 build_experiment(qcsgm_config(module, args, batch, **overrides)), mesh,
                 steps=_cycle(overrides))
             for name, (module, overrides) in _variants(args).items()}
    print(f"XLA FLOPs per train step (lazy QC amortised over its cycle), batch {batch}, "
          f"nf {args.nf}, {args.num_res_blocks} blocks")
    for name, value in gflop.items():
        print(f"  {name:22s} {value:12.1f} GFLOP  {value / gflop['U']:5.2f} × U")
    return {"gflop_per_step": gflop, "ratio_to_u": {k: v / gflop["U"] for k, v in gflop.items()}}


def jitted_table(args, batch: int, mesh) -> dict:
    experiment = build_experiment(qcsgm_config("cifar10_u", args, batch, n_jitted_steps=JITTED))
    jitted = {f"U, {JITTED} dispatches": TrainStepRunner(experiment, mesh, calls=JITTED),
              f"U, n_jitted_steps {JITTED}": TrainStepRunner(experiment, mesh,
                                                             steps_per_call=JITTED)}
    scan = compare_runners(jitted, f"U, {JITTED} dispatches", rounds=args.rounds, repeats=1,
                           warmup=1)
    print(format_table(scan, f"Several steps per dispatch (lax.scan), batch {batch}"))
    return scan


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--nf", type=int, default=128)
    parser.add_argument("--num-res-blocks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sections", nargs="+", default=["qc", "jitted", "flops"],
                        choices=["qc", "jitted", "flops"],
                        help="U / C / QC and the cheaper QC schedules; several steps per "
                             "dispatch; FLOP counts")
    parser.add_argument("--variants", nargs="+", default=list(VARIANT_FLAGS),
                        choices=list(VARIANT_FLAGS),
                        help="the models of the qc and flops sections (U always): more than three "
                             "full-width train states and programs at once need more than 24 GiB "
                             "of host memory on a CPU")
    add_image_data_arguments(parser, "images.json")
    args = parser.parse_args(argv)
    mesh = parallel.data_mesh()
    results = {}
    with image_data(args.mock_data, max(args.batch) * JITTED):
        for batch in args.batch:
            results[f"batch_{batch}"] = benchmark(args, batch, mesh)
    write_json(args.json, {"nf": args.nf, "num_res_blocks": args.num_res_blocks,
                           "mock_data": args.mock_data, **results})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
