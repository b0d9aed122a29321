"""The FLOP accounting of ``benchmarks/timing.py``: per-step counts of the library's train step,
amortised over a lazy-QC cycle, and the hand-written QC reference of ``benchmarks/losses.py``
against the library's fused loss."""

import dataclasses

import jax
import pytest

from benchmarks.losses import reference_qc_loss
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
