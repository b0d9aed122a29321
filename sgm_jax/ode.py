"""Adaptive ODE solves with diffrax and the one rule this library uses to count their NFE.

Every ODE of the library (the probability-flow sampler, encoding, the likelihood) goes through
:func:`integrate_ode`: one ``diffrax.diffeqsolve`` with a ``PIDController(rtol, atol)`` over the
whole batch (one error norm, the RMS over every entry of the state, one step sequence: as scipy's
``solve_ivp`` in score_sde), t1 < t0 running backwards in time.

Counting the function evaluations (NFE). diffrax reports attempted steps (``num_steps`` =
accepted + rejected), not evaluations. For the solvers of ``ODE_SOLVERS``

    nfe = initial_evals + evals_per_step · num_steps,

where an FSAL Runge–Kutta method (Dopri5, Tsit5: 7 stages, Bosh3: 4) evaluates f(t0, y0) once at
the start and then ``stages − 1`` new stages per attempt, accepted or rejected, and Heun (no FSAL)
evaluates 2 per attempt. The first step is given explicitly (dt0 = (t1 − t0)/100, adapted at once
by the controller), so no evaluations go to step-size selection. The rule is exact except in one
case: when the *first* attempt is rejected, diffrax evaluates f(t0, y0) again before the next
attempt (once per rejected first attempt; later rejections reuse the stored first stage). Those
re-evaluations are not in the solver statistics, so the reported NFE is then short by their number
(1 in typical solves, where a first step of 1 % of the interval is rejected at most once). scipy's
RK45 ``nfev`` in score_sde is 6 · attempts + 2 (its step-size heuristic costs one more).
``tests/test_ode.py`` checks both statements against a vector field that counts its calls.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import diffrax as dfx
import jax

from sgm_jax._validation import check_choice, check_positive_int

Array = jax.Array
VectorField = Callable[[Array, Any], Any]


class ODESolver(NamedTuple):
    """A diffrax solver with its vector-field evaluations per attempted step and at the start."""

    make: Callable[[], dfx.AbstractSolver]
    evals_per_step: int
    initial_evals: int


ODE_SOLVERS: dict[str, ODESolver] = {
    "dopri5": ODESolver(dfx.Dopri5, 6, 1),  # 7 stages, FSAL; the RK45 of scipy / score_sde
    "tsit5": ODESolver(dfx.Tsit5, 6, 1),  # 7 stages, FSAL
    "bosh3": ODESolver(dfx.Bosh3, 3, 1),  # 4 stages, FSAL
    "heun": ODESolver(dfx.Heun, 2, 0),  # 2 stages, embedded Euler error estimate
}

#: The first step as a fraction of the interval (adapted by the controller from the first attempt).
INITIAL_STEP_FRACTION = 0.01


def integrate_ode(vector_field: VectorField, y0: Any, t0, t1, *, rtol: float = 1e-5,
                  atol: float = 1e-5, solver: str = "dopri5", max_steps: int = 4096
                  ) -> tuple[Any, Array]:
    """Solve dy/dt = ``vector_field(t, y)`` (scalar t, any pytree y) from t0 to t1.

    Args:
      vector_field: ``(t, y) -> dy/dt`` with the structure of ``y``.
      y0: the state at t0 (any pytree of arrays, e.g. ``(x, δ)`` for the likelihood).
      t0, t1: start and end times; t1 < t0 integrates backwards.
      rtol, atol: ``diffrax.PIDController`` tolerances (may be traced scalars).
      solver: a key of ``ODE_SOLVERS``.
      max_steps: cap on attempted steps; diffrax raises at run time when it is reached.
    Returns:
      ``(y(t1), nfe)``, nfe an int32 scalar by the rule of the module docstring.
    """
    check_choice("solver", solver, tuple(ODE_SOLVERS))
    check_positive_int("max_steps", max_steps)
    spec = ODE_SOLVERS[solver]
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: vector_field(t, y)), spec.make(), t0, t1,
        INITIAL_STEP_FRACTION * (t1 - t0), y0,
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        saveat=dfx.SaveAt(t1=True), max_steps=max_steps)
    y1 = jax.tree.map(lambda y: y[-1], sol.ys)
    return y1, spec.initial_evals + spec.evals_per_step * sol.stats["num_steps"]
