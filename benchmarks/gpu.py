"""GPU figures of the QCSGM train step, in one run of at most ``--budget`` seconds (default 8
minutes): NCSN++ deep continuous (VE) trained as U, QC and QC with lazy regularisation every 5
steps, at batch 32 and 128, in float32 and bfloat16, and 200 steps of the digits demo.

Per train step (rows ``<variant>, batch <B>, <dtype>``): steps/s, compile seconds, XLA's buffer
assignment of the compiled step (``memory_analysis``: arguments + outputs + temporaries − donated
aliases, the memory the step needs) and the device's peak bytes in use so far in the process
(monotone: rows run smallest first, so a row's figure is its own peak unless an earlier row's
was larger). Each step is the library's train step of the experiment ``build_experiment`` makes
of ``configs/ve/cifar10_{u,qc}.py`` (``sgm_jax.train.TrainStep`` through
``benchmarks.timing.TrainStepRunner``, on a fixed batch): one warm-up call, then ``--steps``
steps timed (lazy QC in whole cycles of 5, so its rate is the amortised one). A row that does not
fit the device's memory is recorded as such and the run goes on; one that would start after the
budget is spent is recorded as skipped.

The digits row trains ``configs/ve/digits_u.py`` for 200 steps through ``sgm_jax.train.train``
(the loop ``main.py --mode=train`` runs: data pipeline, logging, the final checkpoint; no sample
snapshots) in a temporary directory: wall seconds including compilation, the steps/s of the last
logging window (clu's ``steps_per_sec``) and the final loss.

The JSON is rewritten after every row, so a run cut short keeps what it measured.

    python benchmarks/gpu.py --mock-data                     # one GPU, at most 8 minutes
    python benchmarks/gpu.py --mock-data --remat nothing_saveable --batch 128
    python benchmarks/gpu.py --tiny --mock-data              # the same rows at a tiny width (CPU)

``--mock-data`` feeds tfds mock images (the timing does not depend on the pixel values) when
CIFAR-10 is not prepared on the machine; the digits are bundled with scikit-learn.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
from clu import metric_writers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.images import qcsgm_config  # noqa: E402
from benchmarks.timing import (TrainStepRunner, add_image_data_arguments,  # noqa: E402
                               device_peak_mb, image_data, write_json)
from configs.ve.digits_u import get_config as digits_config  # noqa: E402
from sgm_jax import parallel, train  # noqa: E402
from sgm_jax.experiment import COMPUTE_DTYPES, build_experiment  # noqa: E402
from sgm_jax.models.layerspp import REMAT_POLICIES  # noqa: E402

#: name: (config module under configs/ve, training overrides, train steps per timed call)
VARIANTS = {
    "U": ("cifar10_u", {}, 1),
    "QC": ("cifar10_qc", {}, 1),
    "QC, qc_every 5": ("cifar10_qc", {"qc_every": 5}, 5),
}
#: ``--tiny``: the NCSN++ of the rows at this width (one resolution, no attention), the digits
#: network at its width, and the batches, steps and digits steps below: the same code paths in
#: seconds on a CPU.
TINY_MODEL = {"nf": 8, "num_res_blocks": 1, "ch_mult": (1,), "attn_resolutions": ()}
TINY_RUN = {"batch": [8], "steps": 2, "digits_steps": 2}
DIGITS_STEPS = 200


class _Scalars(metric_writers.LoggingWriter):
    """A console writer that also keeps the last value of every scalar."""

    def __init__(self):
        super().__init__()
        self.last: dict[str, float] = {}

    def write_scalars(self, step, scalars):
        super().write_scalars(step, scalars)
        self.last.update({name: float(value) for name, value in scalars.items()})


def step_config(args, module: str, batch: int, dtype: str, training: dict):
    """``configs/ve/<module>.py`` at the run's width and batch, in ``dtype`` with ``--remat``."""
    config = qcsgm_config(module, args, batch, compute_dtype=dtype, remat=args.remat, **training)
    if args.tiny:
        config.model.update(TINY_MODEL)
    return config


def step_row(args, mesh, variant: str, batch: int, dtype: str) -> dict:
    """Steps/s, compile seconds and memory of one train step (module docstring)."""
    module, training, cycle = VARIANTS[variant]
    experiment = build_experiment(step_config(args, module, batch, dtype, training))
    runner = TrainStepRunner(experiment, mesh, calls=cycle)
    jax.block_until_ready(runner())  # warm-up: the first dispatch of every program
    calls = max(1, -(-args.steps // runner.steps))
    start = time.perf_counter()
    for _ in range(calls):
        metrics = runner()
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    return dict(steps=calls * runner.steps, seconds=seconds,
                steps_per_s=calls * runner.steps / seconds, compile_s=runner.compile_seconds,
                xla_memory_mib=runner.memory_mb, device_peak_mib=device_peak_mb(),
                loss=float(jax.device_get(metrics["loss"])))


def digits_row(args) -> dict:
    """``args.digits_steps`` steps of the digits demo through the train loop (module
    docstring)."""
    config = digits_config()
    steps = args.digits_steps
    config.training.n_iters = steps
    config.training.log_freq = steps // 2
    config.training.snapshot_freq = steps
    config.training.snapshot_sampling = False
    config.training.eval_freq = 0
    if args.tiny:
        config.model.update(TINY_MODEL)
    experiment = build_experiment(config)
    writer = _Scalars()
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        train.train(experiment, workdir, writer=writer)
        seconds = time.perf_counter() - start
    return dict(steps=steps, seconds=seconds, steps_per_s=writer.last.get("steps_per_sec"),
                loss=writer.last["loss"], device_peak_mib=device_peak_mb())


def _is_out_of_memory(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def run(args) -> dict:
    """Every row within the budget, the JSON rewritten after each (module docstring)."""
    mesh = parallel.data_mesh()
    start = time.perf_counter()
    rows: dict[str, dict] = {}
    settings = dict(budget_s=args.budget, steps=args.steps, remat=args.remat, tiny=args.tiny,
                    model=TINY_MODEL if args.tiny else {"nf": args.nf,
                                                        "num_res_blocks": args.num_res_blocks},
                    mock_data=args.mock_data)
    jobs = [("digits demo", digits_row, (args,))]
    jobs += [(f"{variant}, batch {batch}, {dtype}", step_row, (args, mesh, variant, batch, dtype))
             for batch in sorted(args.batch) for dtype in reversed(args.dtypes)
             for variant in args.variants]
    with image_data(args.mock_data, max(args.batch)):
        for name, function, arguments in jobs:
            if time.perf_counter() - start > args.budget:
                rows[name] = {"skipped": f"the budget of {args.budget} s was spent"}
            else:
                try:
                    rows[name] = function(*arguments)
                except Exception as error:  # noqa: BLE001 (a row that does not fit is a result)
                    if not _is_out_of_memory(error):
                        raise
                    rows[name] = {"out_of_memory": str(error).splitlines()[0]}
            print(f"{name:36s} {_format(rows[name])}", flush=True)
            write_json(args.json, {"settings": settings, "rows": rows,
                                   "elapsed_s": time.perf_counter() - start})
    return rows


def _format(row: dict) -> str:
    if "skipped" in row or "out_of_memory" in row:
        return next(iter(row.values()))
    rate = "—" if row["steps_per_s"] is None else f"{row['steps_per_s']:.2f}"
    cells = [f"{rate} steps/s", f"loss {row['loss']:.4g}"]
    if "compile_s" in row:
        cells.append(f"compile {row['compile_s']:.1f} s")
    if row.get("xla_memory_mib") is not None:
        cells.append(f"XLA {row['xla_memory_mib']:.0f} MiB")
    if row.get("device_peak_mib") is not None:
        cells.append(f"peak {row['device_peak_mib']:.0f} MiB")
    return ", ".join(cells)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--dtypes", nargs="+", default=list(COMPUTE_DTYPES),
                        choices=list(COMPUTE_DTYPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--remat", default="none", choices=list(REMAT_POLICIES),
                        help="training.remat of every row")
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per row")
    parser.add_argument("--digits-steps", type=int, default=DIGITS_STEPS)
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds after which no further row starts")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny network, batch 8, 2 steps, 2 digits steps (a CPU test)")
    add_image_data_arguments(parser, "gpu.json")
    args = parser.parse_args(argv)
    if args.tiny:
        for field, value in TINY_RUN.items():
            setattr(args, field, value)
    args.nf, args.num_res_blocks = 128, 8  # qcsgm_config's width: NCSN++ deep
    rows = run(args)
    print(f"\nwrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
