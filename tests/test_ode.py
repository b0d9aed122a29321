"""The NFE rule of sgm_jax.ode against a vector field that counts its own calls."""

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import io_callback

from sgm_jax.ode import ODE_SOLVERS, integrate_ode


class CountedDecay:
    """dy/dt = −k y, recording the time of every evaluation at run time."""

    def __init__(self, rate):
        self.rate, self.times = rate, []

    def _record(self, t):
        self.times.append(float(t))
        return t

    def __call__(self, t, y):
        t = io_callback(self._record, jax.ShapeDtypeStruct((), jnp.float32), t)
        return -self.rate * y * (1.0 + 0.0 * t)


def _solve(field, solver, t0, t1, rtol=1e-5):
    y1, nfe = jax.jit(lambda y: integrate_ode(field, y, t0, t1, rtol=rtol, atol=1e-5,
                                              solver=solver))(jnp.ones(3))
    return y1, int(nfe)


@pytest.mark.parametrize("solver", sorted(ODE_SOLVERS))
def test_nfe_is_exact_when_the_first_step_is_accepted(solver):
    field = CountedDecay(1.0)
    y1, nfe = _solve(field, solver, 0.0, 1.0)
    assert nfe == len(field.times) > 0
    if ODE_SOLVERS[solver].initial_evals:  # FSAL: f(t0, y0) once, never again
        assert field.times.count(0.0) == 1
    assert abs(float(y1[0]) - float(jnp.exp(-1.0))) < 1e-3


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3"])
def test_each_rejected_first_attempt_re_evaluates_the_start(solver):
    """A stiff rate makes the first step of 1 % of a long interval fail; every such rejection
    costs one more f(t0, y0), the only evaluations the rule does not count."""
    field = CountedDecay(400.0)
    _, nfe = _solve(field, solver, 0.0, 10.0)
    rejected_first_attempts = field.times.count(0.0) - 1
    assert rejected_first_attempts >= 1
    assert len(field.times) == nfe + rejected_first_attempts


def test_backward_integration():
    field = CountedDecay(1.0)
    y1, nfe = _solve(field, "dopri5", 1.0, 0.0)
    assert nfe == len(field.times)
    assert abs(float(y1[0]) - float(jnp.exp(1.0))) < 1e-3
