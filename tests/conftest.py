"""Test set-up: eight forced host devices so multi-device code paths run on CPU, one
persistent compilation cache for the session, so that a program compiled once (a train step, an
evaluation's sampler) is not compiled again by a later test or by a test's subprocess, and the
longest files collected first (``LONG_FILES_FIRST``)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="sgm_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

#: Files whose module fixtures train and evaluate image models, or start training processes
#: (one to three minutes each on 2 cores), in the order they start. The suite runs whole files
#: per xdist worker (``--dist loadfile``) in collection order (``--no-loadscope-reorder``; by
#: default xdist would start the files with the most tests first, and these have few), so that
#: a long file does not start late and leave one worker running alone at the end.
LONG_FILES_FIRST = ("test_image_pipeline.py", "test_multiprocess.py", "test_dlsm_images.py",
                    "test_experiments.py", "test_dlsm_pipeline.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONG_FILES_FIRST.index(name) if name in LONG_FILES_FIRST else len(LONG_FILES_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept
