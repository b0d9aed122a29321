"""sgm_jax.xla_cpu: the setting reaches XLA, in a process of its own (XLA reads XLA_FLAGS once,
when its first backend starts), and leaves the other XLA flags as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sgm_jax.xla_cpu import FUSION_TYPES, OPTION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHILD = """
import json, os, re, sys
import jax, jax.numpy as jnp
from sgm_jax.xla_cpu import use_ynn_elementwise_fusions

applied = use_ynn_elementwise_fusions() if sys.argv[1] == "on" else None
program = jax.jit(lambda x: jnp.tanh(x) * 2.0 + 1.0).lower(jnp.ones((256, 256))).compile()
fusions = len(re.findall(r"%ynn_fusion[.\\d]* = ", program.as_text()))
print(json.dumps({"applied": applied, "ynn_fusions": fusions, "flags": os.environ["XLA_FLAGS"]}))
"""


def _child(setting: str, xla_flags: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": xla_flags}
    done = subprocess.run([sys.executable, "-c", _CHILD, setting], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_elementwise_fusion_runs_in_ynnpack_only_when_set_and_other_flags_stay():
    other = "--xla_force_host_platform_device_count=2"
    default, on = _child("off", other), _child("on", other)
    assert default["ynn_fusions"] == 0  # XLA's default kinds: dots, convolutions, reductions
    assert on["applied"] is True and on["ynn_fusions"] == 1
    assert on["flags"] == f"{other} --{OPTION}={','.join(FUSION_TYPES)}"
    # an XLA_FLAGS that names the option already wins
    named = f"--{OPTION}=LIBRARY_FUSION_TYPE_REDUCE"
    kept = _child("on", named)
    assert kept["applied"] is False and kept["flags"] == named and kept["ynn_fusions"] == 0
