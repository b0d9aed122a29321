"""The accounting of ``benchmarks/timing.py``: per-step FLOP counts of the library's train step,
amortised over a lazy-QC cycle, per-step time ratios of runners timed over different numbers of
steps, and the hand-written QC reference of ``benchmarks/losses.py`` against the library's fused
loss."""

import dataclasses
import types

import jax
import pytest

from benchmarks.losses import reference_qc_loss
from benchmarks import timing
from benchmarks.timing import TrainStepRunner, gflops, train_step_gflops
from configs.toy.checkerboard_u import get_config
from sgm_jax import parallel
from sgm_jax.experiment import build_experiment

CYCLE = 4


def _experiment(**training):
    config = get_config()
    config.training.batch_size = 64
    config.data.num_points = 256
    config.training.update(training)
    return build_experiment(config)


@pytest.fixture(scope="module")
def mesh():
    return parallel.data_mesh(jax.devices()[:1])


def test_lazy_qc_count_is_one_qc_step_and_three_plain_steps_per_cycle(mesh):
    plain = train_step_gflops(_experiment(), mesh)
    full = train_step_gflops(_experiment(qc_weight=0.05), mesh)
    lazy = train_step_gflops(_experiment(qc_weight=0.05, qc_every=CYCLE), mesh, steps=CYCLE)
    assert full > 2 * plain  # the exact 2×2 Jacobian: two tangent passes and their reverse
    assert lazy == pytest.approx((full + (CYCLE - 1) * plain) / CYCLE, rel=1e-3)


def test_runner_counts_the_programs_of_one_call_per_step(mesh):
    """A lazy-QC runner dispatches the QC program once and the plain one CYCLE − 1 times."""
    runner = TrainStepRunner(_experiment(qc_weight=0.05, qc_every=CYCLE), mesh, calls=CYCLE)
    qc_program, plain_program = (runner.compiled[id(p)] for p in runner.train_step.programs)
    qc, plain = gflops(qc_program), gflops(plain_program)
    assert qc > 2 * plain
    assert runner.gflop_per_step == pytest.approx((qc + (CYCLE - 1) * plain) / CYCLE, rel=1e-9)


def test_hand_written_qc_reference_has_the_fused_library_loss_flops(mesh):
    """The reference is the library's Hutchinson QC with one probe, fused with DSM: the same
    arithmetic, so a FLOP gap would be a cost of the library's loss beyond its mathematics."""
    library = _experiment(qc_weight=0.05, qc_estimator="hutchinson")
    reference = dataclasses.replace(library, qc_loss_fn=reference_qc_loss(library, 0.05))
    counts = [train_step_gflops(e, mesh) for e in (library, reference)]
    assert counts[1] == pytest.approx(counts[0], rel=0.02)


def _timed_row(call_ms: float, ratio: float, spread: float) -> dict:
    """A row of ``timing.compare``: call time, and the median per-round ratio ± spread, in wall
    and CPU time alike."""
    return {f"{prefix}{field}": value for prefix in ("", "cpu_") for field, value in (
        ("median_ms", call_ms), ("ratio_median", ratio), ("ratio_min", ratio - spread),
        ("ratio_max", ratio + spread))}


def test_time_ratios_of_runners_with_different_cycles_are_per_step(monkeypatch):
    """A lazy schedule timed over its own cycle (5 steps per call) against a baseline timed over 4:
    call-time ratios 1.5 (1.25–1.75) are 1.2 (1.0–1.4) per step."""
    rows = {"base": _timed_row(1000.0, 1.0, 0.0), "lazy": _timed_row(1500.0, 1.5, 0.25)}
    monkeypatch.setattr(timing, "compare", lambda steps, baseline, **_: {"steps": rows})
    runners = {name: types.SimpleNamespace(steps=steps, compile_seconds=1.0, memory_mb=None,
                                           gflop_per_step=None)
               for name, steps in (("base", 4), ("lazy", 5))}
    result = timing.compare_runners(runners, "base")["steps"]
    for prefix in ("", "cpu_"):
        assert result["base"][f"{prefix}ratio_median"] == 1.0
        assert [result["lazy"][f"{prefix}ratio_{stat}"] for stat in ("median", "min", "max")] \
            == pytest.approx([1.2, 1.0, 1.4])
    assert result["lazy"]["ms_per_step"] == pytest.approx(300.0)
