"""Interleaved timing of jitted steps, so that ratios between them hold on a noisy machine.

Timing one step for a block of repeats and then the next one for another block lets a change in
the machine's load (other processes, thermal or frequency changes) land on one step only, and the
ratio between the two absorbs all of it. Here the compared steps run round by round instead:

* a common warm-up runs every step ``warmup`` times (compilation included);
* each of ``rounds`` rounds runs every step ``repeats`` times in a row, the order of the steps
  rotated by one place from round to round (so no step always follows the same one);
* a step's time in a round is the median of its repeats there, and its ratio to the baseline in
  that round is the quotient of the two round times, both measured within seconds of each other.

Reported per step: the median over all its runs (ms), and against the baseline the **median of
the per-round ratios** with their range (min–max). A load change between rounds moves the times
but hardly the per-round ratios; a wide range says that the load changed within a round.

The same is reported for the CPU time of this process (all its threads, ``time.process_time``):
other processes competing for the cores stretch the wall time of a step much more than the CPU
time it consumes (caches and memory bandwidth stay shared, so it is not immune either). On an
idle machine the two agree; on an accelerator only the wall time means anything.

The steps compared are the library's own train steps: :class:`TrainStepRunner` compiles
``sgm_jax.train.TrainStep(experiment, mesh, steps_per_call)`` for an
experiment of ``sgm_jax.experiment.build_experiment`` and runs it on a fixed batch.

    from benchmarks.timing import TrainStepRunner, compare, format_table, write_json

    steps = {"dsm": TrainStepRunner(build_experiment(dsm_config)),
             "dsm_qc": TrainStepRunner(build_experiment(qc_config))}
    result = compare(steps, baseline="dsm", rounds=10, repeats=3)
    print(format_table(result, "DSM + QC against DSM"))
    write_json("benchmarks/results/x.json", {"qc": result})
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from sgm_jax import parallel
from sgm_jax.checkpoints import init_state
from sgm_jax.train import TrainStep

if TYPE_CHECKING:
    import argparse

    from sgm_jax.classifier_experiment import ClassifierExperiment
    from sgm_jax.experiment import Experiment


class TrainStepRunner:
    """``calls`` dispatches of the library's compiled train step of ``experiment``, the state
    threaded from one call to the next (the step donates it).

    The step is ``sgm_jax.train.TrainStep(experiment, mesh, steps_per_call)`` (``mesh`` defaults
    to :func:`sgm_jax.parallel.data_mesh`, every device), started from ``init_state(experiment)``
    replicated over the mesh, on a fixed batch: the data source's training batch 0
    (``steps_per_call`` = 1) or batches 0 … n − 1 stacked to ``[n, B, ...]`` (n =
    ``steps_per_call`` > 1), sharded as the train loop shards it. Each call runs the program the
    train loop would run at the runner's step (with lazy QC, the QC call at the steps
    ``qc_every`` divides). A classifier experiment trains against the frozen score model of the
    parameters ``frozen``. Every program is compiled ahead of time
    (``jit(...).lower(...).compile()``) when the runner is built.

    Attributes: ``steps`` (train steps per call of the runner, ``steps_per_call * calls``),
    ``compile_seconds`` (all programs), ``memory_mb`` (the largest XLA buffer assignment of a
    program: arguments + outputs + temporaries − donated aliases; None where the backend gives
    no analysis), ``gflop_per_step`` (XLA's FLOP count of the programs one call of the runner
    dispatches from step 0, per train step: with lazy QC and ``calls`` = ``qc_every`` the
    amortised count; None where the backend gives no analysis) and ``state`` (the current
    ``TrainState``). Calling the runner returns the metrics of its last dispatch.
    """

    def __init__(self, experiment: Experiment | ClassifierExperiment, mesh: Mesh | None = None, *,
                 steps_per_call: int = 1, calls: int = 1, frozen: Any = None):
        for name, value in (("steps_per_call", steps_per_call), ("calls", calls)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
        mesh = parallel.data_mesh() if mesh is None else mesh
        self.calls, self.steps_per_call = calls, steps_per_call
        self.steps = steps_per_call * calls
        self.train_step = TrainStep(experiment, mesh, steps_per_call)
        self.frozen = None if frozen is None else jax.device_put(
            frozen, parallel.replicated_sharding(mesh))
        self.state = jax.jit(lambda: init_state(experiment),
                             out_shardings=parallel.replicated_sharding(mesh))()
        self.step = 0
        batches = [experiment.data.train_batch(k) for k in range(steps_per_call)]
        group = batches[0] if steps_per_call == 1 else jax.tree.map(
            lambda *leaves: np.stack(leaves), *batches)
        self.batch = parallel.shard_batch(group, mesh, 0 if steps_per_call == 1 else 1)
        start = time.perf_counter()
        self.compiled = {id(p): p.lower(self.state, self.batch, self.frozen).compile()
                         for p in self.train_step.programs}
        self.compile_seconds = time.perf_counter() - start
        sizes = [m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes for m in
                 (c.memory_analysis() for c in self.compiled.values()) if m is not None]
        self.memory_mb = max(sizes) / 2**20 if sizes else None
        counts = [gflops(self.compiled[id(self.train_step.program(step))])
                  for step in range(0, self.steps, steps_per_call)]
        self.gflop_per_step = None if None in counts else sum(counts) / self.steps

    def __call__(self) -> dict:
        for _ in range(self.calls):
            program = self.compiled[id(self.train_step.program(self.step))]
            self.state, metrics = program(self.state, self.batch, self.frozen)
            self.step += self.steps_per_call
        return metrics


def add_image_data_arguments(parser: "argparse.ArgumentParser", json_name: str) -> None:
    """The arguments every image benchmark shares: ``--mock-data`` (see :func:`image_data`) and
    ``--json``, the results file (default ``benchmarks/results/<json_name>``)."""
    parser.add_argument("--mock-data", action="store_true",
                        help="tfds mock images instead of the prepared CIFAR-10")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                       json_name))


def image_data(mock: bool, num_examples: int) -> contextlib.AbstractContextManager:
    """A context in which the image data sets are tfds mock images of ``num_examples`` examples
    (``mock``; timing does not depend on the pixel values), or the prepared data sets."""
    if not mock:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds

    return tfds.testing.mock_data(num_examples=num_examples)


def gflops(program: Any) -> float | None:
    """XLA's FLOP count of a lowered or compiled program (``jit(f).lower(...)`` or its
    ``.compile()``), in GFLOP; None where the backend gives no cost analysis."""
    analysis = program.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # one entry per device program in older JAX
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"]) / 1e9


def abstract_step_arguments(experiment: Experiment | ClassifierExperiment,
                            frozen: Any = None) -> tuple[Any, Any, Any]:
    """``(state, batch, frozen)`` of a train step of one step per dispatch as
    ``jax.ShapeDtypeStruct`` trees: the shapes of ``init_state(experiment)`` (traced, not
    computed), of the data source's first training batch and of ``frozen``, for lowering the
    step without allocating its state."""
    state = jax.eval_shape(lambda: init_state(experiment))
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype),
                         experiment.data.train_batch(0))
    frozen = None if frozen is None else jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), frozen)
    return state, batch, frozen


def device_peak_mb() -> float | None:
    """The first device's peak bytes in use so far, in MiB (None where the backend does not
    report it, as XLA:CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


def train_step_gflops(experiment: Experiment | ClassifierExperiment, mesh: Mesh | None = None, *,
                      steps: int = 1, frozen: Any = None) -> float | None:
    """XLA's FLOP count per optimisation step of the library's train step of ``experiment``
    (one step per dispatch), averaged over ``steps`` consecutive steps from step 0 (a multiple of
    ``qc_every`` gives the amortised count of lazy QC). The programs are only lowered, on the
    shapes of the state and of the data source's first batch: nothing is compiled or run (XLA
    counts the program before its optimisation passes), so the cost is that of tracing."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    train_step = TrainStep(experiment, mesh, 1)
    arguments = abstract_step_arguments(experiment, frozen)
    counts = {id(p): gflops(p.lower(*arguments)) for p in train_step.programs}
    per_step = [counts[id(train_step.program(step))] for step in range(steps)]
    return None if None in per_step else sum(per_step) / steps


def _run_once(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of ``fn``, its outputs waited for."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def _ratios(per_round: dict[str, list[float]], name: str,
            baseline: str) -> tuple[float, float, float]:
    """(median, min, max) of the per-round ratios of ``name`` to ``baseline``."""
    ratios = [a / b for a, b in zip(per_round[name], per_round[baseline])]
    return statistics.median(ratios), min(ratios), max(ratios)


def _check_finite(name: str, outputs: Any) -> None:
    for leaf in jax.tree_util.tree_leaves(outputs):
        if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.all(np.isfinite(leaf)):
            raise RuntimeError(f"step {name!r} produced a non-finite value during the benchmark.")


def compare(steps: Mapping[str, Callable[[], Any]], baseline: str, *, rounds: int = 10,
            repeats: int = 3, warmup: int = 2) -> dict:
    """Time ``steps`` (name -> zero-argument callable running one step) interleaved round by round.

    Returns a JSON-ready dict: the settings, the load average before and after, and per step
    ``median_ms`` (over all ``rounds * repeats`` runs), ``round_ms`` (per-round medians) and,
    against ``baseline``, ``ratio_median``, ``ratio_min``, ``ratio_max`` of the per-round ratios;
    the same for the process CPU time with the prefix ``cpu_``. A step's outputs are checked to be
    finite after the warm-up.
    """
    names = list(steps)
    if baseline not in steps:
        raise ValueError(f"baseline must be one of the steps {names}; got {baseline!r}.")
    for name, value in (("rounds", rounds), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    if not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be an integer >= 1 (it compiles the steps); got {warmup!r}.")
    load_before = os.getloadavg()
    for name in names:
        for _ in range(warmup):
            outputs = jax.block_until_ready(steps[name]())
        _check_finite(name, outputs)
    runs = {name: ([], []) for name in names}  # wall, cpu
    per_round = ({name: [] for name in names}, {name: [] for name in names})
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = zip(*(_run_once(steps[name]) for _ in range(repeats)))
            for clock, times in enumerate((wall, cpu)):
                runs[name][clock].extend(times)
                per_round[clock][name].append(statistics.median(times))
    rows = {}
    for name in names:
        row = {}
        for clock, prefix in enumerate(("", "cpu_")):
            median, low, high = _ratios(per_round[clock], name, baseline)
            row.update({f"{prefix}median_ms": 1e3 * statistics.median(runs[name][clock]),
                        f"{prefix}round_ms": [1e3 * t for t in per_round[clock][name]],
                        f"{prefix}ratio_median": median, f"{prefix}ratio_min": low,
                        f"{prefix}ratio_max": high})
        rows[name] = row
    return dict(baseline=baseline, rounds=rounds, repeats=repeats, warmup=warmup,
                load_average_before=load_before, load_average_after=os.getloadavg(), steps=rows)


def compare_runners(runners: Mapping[str, TrainStepRunner], baseline: str, **kwargs: Any) -> dict:
    """:func:`compare` of :class:`TrainStepRunner` objects (``kwargs``: its ``rounds``,
    ``repeats``, ``warmup``), each row completed with the runner's ``steps`` per timed call,
    ``ms_per_step`` (``median_ms / steps``), ``compile_s``, ``memory_mb``, ``gflop_per_step``
    and ``flop_ratio`` (its ``gflop_per_step`` over the baseline's; None without a FLOP count):
    a time ratio near the FLOP ratio says that the step runs at the speed its arithmetic allows.

    The ratios are per train step: where runners time different numbers of steps per call (a
    lazy schedule timed over its own cycle), each per-round ratio of call times is scaled by the
    baseline's steps over the runner's."""
    result = compare(runners, baseline, **kwargs)
    base_flops = runners[baseline].gflop_per_step
    for name, runner in runners.items():
        flops = runner.gflop_per_step
        per_step = runners[baseline].steps / runner.steps
        for prefix in ("", "cpu_"):
            for stat in ("median", "min", "max"):
                result["steps"][name][f"{prefix}ratio_{stat}"] *= per_step
        result["steps"][name].update(
            steps=runner.steps, ms_per_step=result["steps"][name]["median_ms"] / runner.steps,
            compile_s=runner.compile_seconds, memory_mb=runner.memory_mb, gflop_per_step=flops,
            flop_ratio=flops / base_flops if flops and base_flops else None)
    return result


#: JAX's monitoring events (``jax._src.dispatch``) of one XLA compilation and one trace to a jaxpr.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
#: What one pass of :func:`forward_step` computes: the score, its JVP with one probe, its VJP.
PASSES = ("forward", "jvp", "vjp")


class CompileEvents:
    """Counts JAX's compilations and traces (and the compilations' seconds) as they happen."""

    def __init__(self):
        self.compiles, self.traces, self.compile_seconds = 0, 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.compiles += 1
            self.compile_seconds += duration
        elif event == TRACE_EVENT:
            self.traces += 1

    def snapshot(self) -> tuple[int, int, float]:
        return self.compiles, self.traces, self.compile_seconds


class BatchPath:
    """One path (a sampler, a metric) as a zero-argument step for :func:`compare`: call i runs
    batch i of ``run_batch(i) -> (outputs, nfe)`` and records its wall time, NFE and the
    compilations and traces it caused."""

    def __init__(self, run_batch: Callable[[int], tuple[Any, int]], events: CompileEvents):
        self.run_batch, self.events, self.records = run_batch, events, []

    def __call__(self):
        before, start = self.events.snapshot(), time.perf_counter()
        outputs, nfe = self.run_batch(len(self.records))
        wall = time.perf_counter() - start
        compiles, traces, seconds = (a - b for a, b in zip(self.events.snapshot(), before))
        self.records.append(dict(wall_s=wall, nfe=nfe, compiles=compiles, traces=traces,
                                 compile_s=seconds))
        return outputs


def forward_step(experiment: Experiment, params, mesh: Mesh, batch: int, passes: int,
                 kind: str = "forward") -> Callable[[int], tuple[Any, int]]:
    """``run_batch(i)`` of ``passes`` score-model passes in one jitted loop, each on the previous
    one's output (x ← x + 10⁻³ ·, so none can be skipped), from prior draws at t = 0.5: the
    network's cost inside a compiled loop, as in the samplers, without dispatch. ``kind``
    (:data:`PASSES`): the score alone, with one JVP (the likelihood's unit) or with one VJP
    (DPS's unit: the gradient through the score model)."""
    if kind not in PASSES:
        raise ValueError(f"kind must be one of {PASSES}; got {kind!r}.")
    shape = (batch, *experiment.event_shape)
    x = parallel.shard_batch(np.asarray(experiment.sde.prior_sampling(jax.random.PRNGKey(1),
                                                                      shape)), mesh)
    t = parallel.shard_batch(np.full((batch,), 0.5, np.float32), mesh)
    v = parallel.shard_batch(np.ones(shape, np.float32), mesh)

    def loop(p, x, t, v):
        score = experiment.score_model(p)

        def body(_, y):
            if kind == "jvp":
                s, jv = jax.jvp(lambda z: score(z, t), (y,), (v,))
                return y + 1e-3 * (s + jv)
            if kind == "vjp":
                s, pullback = jax.vjp(lambda z: score(z, t), y)
                return y + 1e-3 * (s + pullback(v)[0])
            return y + 1e-3 * score(y, t)

        return jax.lax.fori_loop(0, passes, body, x)

    repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
    run = jax.jit(loop, in_shardings=(repl, shard, shard, shard), out_shardings=shard)

    def run_batch(i):
        return jax.device_get(run(params, x, t, v)), passes

    return run_batch


def overhead_share(result: dict, path: BatchPath, name: str, unit: str, passes: int,
                   warmup: int, clock: str = "") -> dict:
    """The overhead share 1 − NFE × (one pass of ``unit``) / time of each round of
    :func:`compare`'s ``result`` (``unit`` a :func:`forward_step` of ``passes`` passes; the first
    ``warmup`` records of ``path`` are the warm-up), both times from that round: median, min and
    max over rounds, as ``{clock}overhead_share``…; ``clock`` "" for the wall time, "cpu_" for
    the process CPU time."""
    repeats = result["repeats"]
    walls = result["steps"][name][f"{clock}round_ms"]
    units = [ms / passes for ms in result["steps"][unit][f"{clock}round_ms"]]
    timed = path.records[warmup:]
    nfes = [statistics.median(r["nfe"] for r in timed[i * repeats:(i + 1) * repeats])
            for i in range(len(walls))]
    shares = [1.0 - n * u / w for n, u, w in zip(nfes, units, walls)]
    return {f"{clock}overhead_share": statistics.median(shares),
            f"{clock}overhead_share_min": min(shares), f"{clock}overhead_share_max": max(shares),
            "overhead_unit": unit}


def format_table(result: dict, title: str, notes: Mapping[str, str] | None = None) -> str:
    """A plain-text table of :func:`compare`'s result: step, median wall ms, × baseline (median of
    the per-round ratios) and its range, then the same for the CPU time, and the FLOP ratio where
    :func:`compare_runners` gives one; ``notes`` adds a last column per step."""
    notes = notes or {}
    base = result["baseline"]
    lines = [
        title,
        f"({result['rounds']} interleaved rounds × {result['repeats']} runs; "
        f"1-min load average {result['load_average_before'][0]:.2f} before, "
        f"{result['load_average_after'][0]:.2f} after)",
        f"{'step':26s} {'wall ms':>10s} {'× ' + base:>9s} {'range':>11s}   "
        f"{'CPU ms':>10s} {'× ' + base:>9s} {'range':>11s}  {'FLOP ×':>6s}  note",
    ]
    for name, row in result["steps"].items():
        cells = []
        for prefix in ("", "cpu_"):
            span = f"{row[prefix + 'ratio_min']:.2f}–{row[prefix + 'ratio_max']:.2f}"
            cells.append(f"{row[prefix + 'median_ms']:10.1f} {row[prefix + 'ratio_median']:9.2f} "
                         f"{span:>11s}")
        flop_ratio = row.get("flop_ratio")
        flop_cell = f"{flop_ratio:6.2f}" if flop_ratio is not None else f"{'—':>6s}"
        lines.append(f"{name:26s} {cells[0]}   {cells[1]}  {flop_cell}  {notes.get(name, '')}")
    return "\n".join(lines)


def environment() -> dict:
    """The device, JAX version, platform and CPU count a result was measured with."""
    return dict(device=str(jax.devices()[0]), device_count=jax.device_count(),
                jax=jax.__version__, platform=platform.platform(), cpu_count=os.cpu_count())


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` plus :func:`environment` to ``path`` (directories created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": environment(), **payload}, f, indent=2)
