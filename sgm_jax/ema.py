"""The exponential moving average of the parameters that evaluation and sampling use.

ema ← d·ema + (1 − d)·params after every optimisation step, with the decay d of
:func:`ema_decay` (``optim.ema_rate`` and its warm-up ``optim.ema_warmup``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

#: The EMA decay schedules of ``optim.ema_warmup`` (:func:`ema_decay`).
EMA_WARMUPS = ("none", "num_updates")


def ema_decay(rate: float, warmup: str, step: Array | int) -> float | Array:
    """The decay d of the EMA update that takes the state from ``step`` to ``step + 1``,
    ema ← d·ema + (1 − d)·params:

    * ``"none"``: d = ``rate`` at every step (score_sde's JAX code; the default), returned as the
      Python float itself;
    * ``"num_updates"``: d = min(``rate``, (1 + n)/(10 + n)) with n = ``step`` + 1 the number of
      updates including this one (TensorFlow's ``ExponentialMovingAverage`` with
      ``num_updates``, as score_sde_pytorch's ``models/ema.py``), a float32 array. Until
      (1 + n)/(10 + n) reaches ``rate`` (n = 8,999 for 0.999) the average spans about the last
      n/9 updates, and the initial parameters weigh ∏ₖ₌₁ⁿ (1 + k)/(10 + k) = 10!·(n + 1)!/(n + 10)!
      (6e-5 after 10 updates, 7e-10 after 50), where a constant rate leaves them rateⁿ
      (0.999²⁰⁰⁰ ≈ 0.14).
    """
    if warmup == "none":
        return rate
    if warmup == "num_updates":
        n = jnp.asarray(step, jnp.float32) + 1.0
        return jnp.minimum(jnp.float32(rate), (1.0 + n) / (10.0 + n))
    raise ValueError(f"optim.ema_warmup must be one of {EMA_WARMUPS}; got {warmup!r}.")
