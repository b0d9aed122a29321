"""Memory of the QCSGM train step (NCSN++ deep continuous, VE) under the memory options: the
compute dtype (``training.compute_dtype``), activation checkpointing of the residual blocks
(``training.remat``) and donation of the train state, with the step-time cost of checkpointing.

Memory is XLA's buffer assignment of the compiled train step (``jit(...).lower(...).compile()
.memory_analysis()``): deterministic for a program and a backend, so it needs no idle machine.
Per program: the arguments (train state and batch), the outputs (new state and metrics), the
part of the outputs that aliases donated arguments, the temporaries (activations kept for the
backward pass, gradients, workspace) and their sum less the aliased bytes, the step's footprint
(what :class:`benchmarks.timing.TrainStepRunner` reports as ``memory_mb``).

XLA:CPU schedules the recomputation of a checkpointed block as early as the stored activation
would have been made (jax-ml/jax#19822), so its temporaries do not show what checkpointing saves
on an accelerator. The ``residuals`` column does: the bytes of the values JAX keeps from the
forward pass for the backward pass of the training loss (the leaves of the ``jax.vjp``
function of the loss in the parameters, the parameters themselves excluded), before XLA fuses
or reschedules anything. The step is the
library's (``sgm_jax.train.TrainStep`` of the experiment that ``configs/ve/cifar10_{u,qc}.py``
builds), lowered on the shapes of its state and batch: nothing is allocated or run. Without
donation is the same step function jitted again without ``donate_argnums`` (and without the
sharding annotations, which change nothing on one device).

``--time`` also times the float32 U step under each checkpoint policy against none, interleaved
round by round (:func:`benchmarks.timing.compare_runners`; report the load average with it).

    python benchmarks/memory.py --batch 8 --mock-data                   # the table of
                                                                        # docs/benchmarks.md
    python benchmarks/memory.py --batch 8 --mock-data --configs u --dtypes float32 --time 3
    python benchmarks/memory.py --nf 16 --num-res-blocks 1 --batch 2 --mock-data   # seconds
    python benchmarks/memory.py --batch 128 --mock-data --residuals-only           # traced only

On XLA:CPU a bfloat16 convolution may run through float32 copies of its operands, so the CPU's
bfloat16 temporaries bound what an accelerator needs from above.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.images import qcsgm_config  # noqa: E402
from benchmarks.timing import (TrainStepRunner, abstract_step_arguments,  # noqa: E402
                               add_image_data_arguments, compare_runners, format_table,
                               image_data, write_json)
from sgm_jax import parallel  # noqa: E402
from sgm_jax.experiment import COMPUTE_DTYPES, build_experiment  # noqa: E402
from sgm_jax.models.layerspp import REMAT_POLICIES  # noqa: E402
from sgm_jax.train import TrainStep  # noqa: E402

MIB = 2**20
CONFIGS = {"u": "cifar10_u", "qc": "cifar10_qc"}


def memory_mib(compiled) -> dict[str, float]:
    """XLA's buffer assignment of a compiled program in MiB: ``arguments``, ``outputs``,
    ``aliased`` (outputs written into donated arguments), ``temporaries`` and ``footprint`` =
    arguments + outputs + temporaries − aliased."""
    m = compiled.memory_analysis()
    figures = dict(arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes,
                   aliased=m.alias_size_in_bytes, temporaries=m.temp_size_in_bytes)
    figures["footprint"] = (figures["arguments"] + figures["outputs"] + figures["temporaries"]
                            - figures["aliased"])
    return {k: v / MIB for k, v in figures.items()}


def residual_mib(experiment, arguments) -> float:
    """The MiB that the backward pass of the experiment's training loss (its first step loss,
    dropout on) keeps from the forward pass, at the shapes of ``arguments`` (state, batch,
    frozen): the leaves of the loss's ``jax.vjp`` function less the parameters; traced, not
    computed."""
    state, batch, _ = arguments
    key = jax.random.PRNGKey(0)

    def backward(params, batch):
        def loss(p):
            return experiment.batch_loss(p, batch, key, loss_fn=experiment.step_losses()[0],
                                         dropout_key=key)[0]

        return jax.vjp(loss, params)[1]

    leaves = jax.tree.leaves(jax.eval_shape(backward, state.params, batch))
    size = sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
    params = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state.params))
    return (size - params) / MIB


def analyse(experiment, mesh, donate: bool = True, residuals_only: bool = False) -> dict:
    """:func:`memory_mib` of the largest program of the experiment's train step (one step per
    dispatch; with lazy QC the QC program), with its compile seconds and the loss's
    :func:`residual_mib`; ``donate=False`` compiles the same step function without donating the
    state; ``residuals_only`` gives the residuals alone (nothing compiled)."""
    arguments = abstract_step_arguments(experiment)
    if residuals_only:
        return {"residuals": residual_mib(experiment, arguments)}
    rows = []
    for program in TrainStep(experiment, mesh, 1).programs:
        start = time.perf_counter()
        if not donate:
            program = jax.jit(program.__wrapped__)
        compiled = program.lower(*arguments).compile()
        rows.append({**memory_mib(compiled), "compile_s": time.perf_counter() - start})
    return {**max(rows, key=lambda row: row["footprint"]),
            "residuals": residual_mib(experiment, arguments)}


def memory_table(args, mesh) -> dict:
    """The figures of every (config, dtype, policy), and without donation for each (config,
    dtype) without checkpointing."""
    table = {}
    print(f"{'step':40s} {'args':>8s} {'outputs':>8s} {'aliased':>8s} {'temps':>8s} "
          f"{'footprnt':>8s} {'residual':>8s} {'compile':>8s}  (MiB, s)")
    for config in args.configs:
        for dtype in args.dtypes:
            for remat in args.remat:
                variants = [True] + ([False] if remat == "none" and not args.residuals_only
                                     else [])
                for donate in variants:
                    name = f"{config.upper()}, {dtype}, remat {remat}" + (
                        "" if donate else ", not donated")
                    experiment = build_experiment(qcsgm_config(
                        CONFIGS[config], args, args.batch, compute_dtype=dtype, remat=remat))
                    row = table[name] = analyse(experiment, mesh, donate, args.residuals_only)
                    cells = [row.get(k) for k in ("arguments", "outputs", "aliased",
                                                  "temporaries", "footprint", "residuals",
                                                  "compile_s")]
                    print(f"{name:40s} " + " ".join(
                        "       —" if c is None else f"{c:8.0f}" for c in cells), flush=True)
    return table


def time_table(args, mesh) -> dict:
    """The float32 U step under each policy of ``args.remat`` against none."""
    runners = {}
    for remat in dict.fromkeys(["none", *args.remat]):
        experiment = build_experiment(qcsgm_config("cifar10_u", args, args.batch, remat=remat))
        runners[f"remat {remat}"] = TrainStepRunner(experiment, mesh)
    result = compare_runners(runners, "remat none", rounds=args.time, repeats=1, warmup=1)
    print(format_table(result, f"U step under checkpoint policies, batch {args.batch}, nf "
                               f"{args.nf}, {args.num_res_blocks} blocks, "
                               f"{jax.devices()[0].platform}"))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--nf", type=int, default=128)
    parser.add_argument("--num-res-blocks", type=int, default=8)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--dtypes", nargs="+", default=list(COMPUTE_DTYPES),
                        choices=list(COMPUTE_DTYPES))
    parser.add_argument("--remat", nargs="+", default=list(REMAT_POLICIES),
                        choices=list(REMAT_POLICIES))
    parser.add_argument("--time", type=int, default=0, metavar="ROUNDS",
                        help="also time the float32 U step under each policy (ROUNDS "
                             "interleaved rounds; 0: no timing)")
    parser.add_argument("--residuals-only", action="store_true",
                        help="only the backward pass's residuals: traced, nothing compiled")
    add_image_data_arguments(parser, "memory.json")
    args = parser.parse_args(argv)
    mesh = parallel.data_mesh()
    with image_data(args.mock_data, args.batch):
        result = {"memory_mib": memory_table(args, mesh)}
        if args.time:
            result["time"] = time_table(args, mesh)
    write_json(args.json, {"batch": args.batch, "nf": args.nf,
                           "num_res_blocks": args.num_res_blocks, **result})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
