"""sgm_jax.xla_cpu: which configs run XLA:CPU's elementwise fusions through YNNPACK, main.py's flag
over the config, and that the setting reaches XLA (in a process of its own: XLA reads XLA_FLAGS
once, when its first backend starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sgm_jax.xla_cpu import FUSION_TYPES, OPTION, configured
from tests.config_files import load

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


@pytest.mark.parametrize("path, wanted", [
    ("configs/toy/checkerboard_qc.py", False), ("configs/ve/cifar10_u.py", True),
    ("configs/vp/cifar10_ddpmpp_continuous.py", True), ("configs/ve/digits_u.py", False),
    ("configs/dlsm/digits_dlsm.py", False)])
def test_each_config_says_whether_and_the_flag_overrides(path, wanted):
    config = load(path, {})
    assert configured(config) is wanted
    assert configured(config, override=True) is True
    assert configured(config, override=False) is False


def test_a_config_without_the_field_keeps_xla_defaults_and_a_bad_value_is_refused():
    config = load("configs/ve/cifar10_u.py", {})
    del config["xla_cpu_ynn_elementwise"]
    assert configured(config) is False
    config.xla_cpu_ynn_elementwise = 1
    with pytest.raises(ValueError, match="xla_cpu_ynn_elementwise must be True or False; got 1"):
        configured(config)
