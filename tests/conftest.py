"""Test set-up: eight forced host devices so multi-device code paths run on CPU, one
persistent compilation cache for the session, so that a program compiled once (a train step, an
evaluation's sampler) is not compiled again by a later test or by a test's subprocess, and, for
the default selection, XLA's backend optimisation off (``FAST_COMPILE``)."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

#: The default suite (``-m 'not slow'``) spends most of its time compiling small programs; without
#: XLA's backend (LLVM) optimisation passes the same operations compile in much less time, and
#: their results differ at most in rounding (tests/test_losses.py and tests/test_sde_loss.py: 200 s
#: of CPU time against 117 s). XLA:CPU's older loop emitters for fusions (instead of its MLIR
#: fusion emitters) compile faster again: the tiny CIFAR-10 QC training of
#: tests/test_image_pipeline.py takes 53 s of CPU time against 76 s. The slow tests, whose time is
#: computation, keep the defaults.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

_XLA_FLAGS_GIVEN = "XLA_FLAGS" in os.environ
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="sgm_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_configure(config):
    """Runs before the test modules import JAX (xdist workers inherit the controller's flags)."""
    if not _XLA_FLAGS_GIVEN and config.option.markexpr.strip() == "not slow":
        os.environ["XLA_FLAGS"] += " " + FAST_COMPILE


def run_with_default_compilation(code: str):
    """Run the Python ``code`` (with the repository and tests/ on its path) in a child process
    that compiles with XLA's defaults (what users run, without ``FAST_COMPILE``) and return the
    JSON value of the last line it prints. For exact ties between two programs: without backend
    optimisation XLA:CPU may round the same distance differently in two programs."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE, "")}
    prelude = f"import sys\nsys.path[:0] = {[os.path.dirname(here), here]!r}\n"
    done = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True,
                          text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])
